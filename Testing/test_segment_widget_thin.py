"""The GuiDINO Segment panel and effect stay thin: their decisions, tested without the Slicer application.

Pure helpers (slice view -> slice index on an oblique volume, slice ranges, preview merge, progress),
the dependency decisions with injected checkers, the preview -> apply -> undo path through Slicer's
real segment editor logic, and static checks that the GUI files only call what the Logic defines.
"""

import ast
import math
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import slicer
import slicer.util
import vtk

from GuiDINOSegmentLib import DependencyLogic as deps
from guidino.geometry import Geometry
from guidino.inference import SegmentationResult
from guidino.review import merge_prediction, slice_mask
from GuiDINOSegmentLib import GuiDINOSegmentLogic
from GuiDINOSegmentLib import RefineRegistry as registry
from GuiDINOSegmentLib import VolumeNodes as nodes
from GuiDINOSegmentLib import WidgetHelpers as helpers
from GuiDINOSegmentLib.SegmentSettings import SegmentSettings
from GuiDINOSegmentLib.WorkerClient import JobState

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "GuiDINOSegment"
GUI_FILES = [MODULE / "GuiDINOSegment.py", MODULE / "SegmentEditorGuiDINOLib" / "SegmentEditorEffect.py"]


def _matrix(array):
    return slicer.util.vtkMatrixFromArray(np.asarray(array, dtype=float))


@pytest.fixture
def oblique(headless_slicer, oblique_volume_file):
    return headless_slicer.load_volume(oblique_volume_file)


def _voxelRas(volume, kji):
    return (nodes.ijkToRasNode(volume) @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3]


def _sliceNode(scene, ras, normal=(0, 0, 1), dimensions=(200, 160), fieldOfView=(300.0, 240.0)):
    """A slice view centred on ``ras`` looking along ``normal``."""
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    normal = np.asarray(normal, float) / np.linalg.norm(normal)
    helper = np.array([0.0, 1.0, 0.0]) if abs(normal[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, normal)
    x /= np.linalg.norm(x)
    sliceToRas = np.eye(4)
    sliceToRas[:3, 0], sliceToRas[:3, 1], sliceToRas[:3, 2], sliceToRas[:3, 3] = x, np.cross(normal, x), normal, ras
    node.SetDimensions(dimensions[0], dimensions[1], 1)
    node.SetFieldOfView(fieldOfView[0], fieldOfView[1], 1.0)
    node.GetSliceToRAS().DeepCopy(_matrix(sliceToRas))
    node.UpdateMatrices()
    return node


# -- slice view -> slice index -------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(40))
def test_one_axis_rule_for_directions_and_ijk_to_ras_matrices(seed):
    from guidino.axes import slice_axis

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    geometry = Geometry(tuple(rng.uniform(0.3, 3.0, 3)), tuple(rng.normal(size=3) * 50), tuple(q.flatten()))
    for axis in helpers.AXES:
        assert slice_axis(geometry.ijk_to_ras()[:3, :3], axis) == slice_axis(geometry.direction, axis)


@pytest.mark.parametrize("axis", helpers.AXES)
def test_slice_view_centre_gives_the_voxel_index_on_an_oblique_volume(headless_slicer, oblique, axis):
    kji = (4, 7, 3)
    numpyAxis = nodes.numpyAxisNode(oblique, axis)
    step = nodes.ijkToRasNode(oblique)[:3, 2 - numpyAxis]  # one voxel along the slicing axis, in RAS
    centre = _voxelRas(oblique, kji)
    for offset, expected in ((0.0, kji[numpyAxis]), (0.45, kji[numpyAxis]), (-0.45, kji[numpyAxis]),
                             (0.55, kji[numpyAxis] + 1), (-1.0, kji[numpyAxis] - 1)):
        view = _sliceNode(headless_slicer.scene, centre + offset * step)
        assert helpers.sliceIndexAtViewNode(oblique, view, axis) == expected, offset
    count = nodes.sliceCountNode(oblique, axis)
    assert count == oblique.GetImageData().GetDimensions()[::-1][numpyAxis]
    outside = _sliceNode(headless_slicer.scene, _voxelRas(oblique, kji) + (count + 2) * step)
    assert helpers.sliceIndexAtViewNode(oblique, outside, axis) is None


def test_slice_index_follows_a_linear_parent_transform(headless_slicer, oblique):
    kji = (2, 5, 6)
    local = _voxelRas(oblique, kji)
    transform = headless_slicer.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    a = math.radians(30)
    toWorld = np.array([[math.cos(a), -math.sin(a), 0, 20.0], [math.sin(a), math.cos(a), 0, -7.5],
                        [0, 0, 1, 12.0], [0, 0, 0, 1]])
    transform.SetMatrixTransformToParent(_matrix(toWorld))
    oblique.SetAndObserveTransformNodeID(transform.GetID())
    view = _sliceNode(headless_slicer.scene, (toWorld @ np.append(local, 1.0))[:3])
    for axis in helpers.AXES:
        expected = kji[nodes.numpyAxisNode(oblique, axis)]
        assert helpers.sliceIndexAtViewNode(oblique, view, axis) == expected, axis


def test_visible_range_of_views(headless_slicer, oblique):
    axis = "axial"
    count = nodes.sliceCountNode(oblique, axis)
    centre = _voxelRas(oblique, (3, 6, 5))
    parallel = _sliceNode(headless_slicer.scene, centre, normal=(0, 0, 1), fieldOfView=(3.0, 3.0))
    index = helpers.sliceIndexAtViewNode(oblique, parallel, axis)
    assert index == 3
    # A small view parallel to the (tilted) slices shows the slice at its centre, or its neighbours too.
    first, last = helpers.visibleSliceRangeNode(oblique, [parallel], axis)
    assert first <= index <= last and last - first <= 2
    # A coronal view showing the whole volume spans every axial slice.
    coronal = _sliceNode(headless_slicer.scene, centre, normal=(0, 1, 0), fieldOfView=(400.0, 400.0))
    assert helpers.visibleSliceRangeNode(oblique, [coronal], axis) == (0, count - 1)
    # A zoomed coronal view spans fewer.
    zoomed = _sliceNode(headless_slicer.scene, centre, normal=(0, 1, 0), fieldOfView=(4.0, 4.0))
    first, last = helpers.visibleSliceRangeNode(oblique, [zoomed], axis)
    assert 0 <= first <= index <= last < count and (first, last) != (0, count - 1)
    # Outside the volume: nothing.
    assert helpers.visibleSliceRangeNode(oblique, [_sliceNode(headless_slicer.scene, centre + [0, 0, 500],
                                                              fieldOfView=(3.0, 3.0))], axis) is None


def test_view_looking_along_an_axis(headless_slicer):
    scene = headless_slicer.scene
    red, green, yellow = (_sliceNode(scene, (0, 0, 0), normal=n) for n in ((0, 0, 1), (0, 1, 0), (1, 0, 0)))
    views = [red, green, yellow]
    assert helpers.viewLookingAlongNode(views, "axial") is red
    assert helpers.viewLookingAlongNode(views, "coronal") is green
    assert helpers.viewLookingAlongNode(views, "sagittal") is yellow
    assert helpers.viewLookingAlongNode([], "axial") is None
    tilted = _sliceNode(scene, (0, 0, 0), normal=(0.3, 0.2, -0.93))
    assert helpers.viewLookingAlongNode([green, tilted], "axial") is tilted


def test_slice_span_pure():
    rasToIjk = np.eye(4)
    assert helpers.sliceSpanFromRas(rasToIjk, [(0, 0, 1.4), (0, 0, 5.6)], 0, 10) == (1, 6)
    assert helpers.sliceSpanFromRas(rasToIjk, [(0, 0, -5), (0, 0, 50)], 0, 10) == (0, 9)
    assert helpers.sliceSpanFromRas(rasToIjk, [(0, 0, 20), (0, 0, 30)], 0, 10) is None
    assert helpers.sliceSpanFromRas(rasToIjk, [], 0, 10) is None
    assert helpers.sliceIndexFromRas(rasToIjk, (3.4, 0, 0), 2, 5) == 3
    assert helpers.sliceIndexFromRas(rasToIjk, (-0.6, 0, 0), 2, 5) is None


# -- slice ranges ----------------------------------------------------------------------------
def test_slice_range_from_the_panel_settings():
    assert helpers.sliceRangeFor("all", 3, 9, current=4) is None
    assert helpers.sliceRangeFor("current", 3, 9, current=4) == 4
    assert helpers.sliceRangeFor("range", 3, 9) == (3, 9)
    assert helpers.sliceRangeFor("range", 9, 3) == (3, 9)
    assert helpers.sliceRangeFor("range", 5, 5) == (5, 5)
    with pytest.raises(ValueError, match="outside the input volume"):
        helpers.sliceRangeFor("current", current=None)
    with pytest.raises(ValueError, match="start at 0"):
        helpers.sliceRangeFor("range", -1, 3)
    with pytest.raises(ValueError, match="Unknown slice mode"):
        helpers.sliceRangeFor("some")


def test_slice_range_from_the_effect_scope():
    assert helpers.sliceRangeForScope("all") is None
    assert helpers.sliceRangeForScope("current", current=7) == 7
    assert helpers.sliceRangeForScope("visible", visible=(2, 11)) == (2, 11)
    with pytest.raises(ValueError, match="No slice view"):
        helpers.sliceRangeForScope("visible", visible=None)
    with pytest.raises(ValueError):
        helpers.sliceRangeForScope("current", current=None)
    with pytest.raises(ValueError, match="Unknown scope"):
        helpers.sliceRangeForScope("everything")


def test_optional_text_settings():
    assert helpers.optionalText(Path()) is None  # an empty ctkPathLineEdit reads as Path(".")
    assert helpers.optionalText("  ") is None
    assert helpers.optionalText(None) is None
    assert helpers.optionalText(Path("/models/liver")) == "/models/liver"
    hubId = "facebook/dinov3-vits16-pretrain-lvd1689m"
    assert helpers.optionalText(f" {hubId} ") == hubId


# -- the write rule (engine) -----------------------------------------------------------------------
def test_write_rule_keeps_reviewed_and_unprocessed_slices():
    rng = np.random.default_rng(1)
    predicted = rng.integers(0, 2, (6, 5, 4)).astype(np.uint8)
    current = rng.integers(0, 2, (6, 5, 4)).astype(np.int16)  # segment arrays come in the volume's dtype
    processed = np.array([True, True, True, False, True, True])
    writable = slice_mask(current.shape, 0, np.flatnonzero(processed)) & ~slice_mask(current.shape, 0, [1, 4])
    merged = merge_prediction(current, predicted, writable)
    assert merged.dtype == np.uint8
    for k in range(6):
        expected = predicted[k] if processed[k] and k not in (1, 4) else current[k]
        np.testing.assert_array_equal(merged[k], expected, err_msg=f"slice {k}")


def test_write_rule_with_reviewed_slices_along_another_axis():
    predicted = np.ones((4, 5, 6), np.uint8) * 3  # multi-class labels count as the segment
    current = np.zeros((4, 5, 6), np.uint8)
    writable = slice_mask(current.shape, 0, range(4)) & ~slice_mask(current.shape, 2, [0, 5])
    merged = merge_prediction(current, predicted, writable)
    assert set(np.unique(merged)) == {0, 1}
    assert (merged[:, :, [0, 5]] == 0).all() and (merged[:, :, 1:5] == 1).all()
    with pytest.raises(ValueError, match="different grids"):
        merge_prediction(current[:, :, :5], predicted, writable)


def test_preview_apply_respects_masking_and_undo_restores(headless_slicer, oblique, tiny_model):
    """The effect's path: the Logic's preview labels -> Slicer's segment editor logic (Set mode) -> undo."""
    scene = headless_slicer.scene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(oblique)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
    original = np.zeros((7, 12, 10), np.uint8)
    original[1:6, 3:9, 2:7] = 1
    predictions = [original]  # what the fake model predicts: first the original segment, by a GuiDINO run

    def segmenter(model, image, axis, slices, **options):
        processed = np.isin(np.arange(7), slices)
        return SegmentationResult(predictions[-1] * slice_mask(original.shape, 0, slices),
                                  predictions[-1].astype(np.float32), None, image.geometry, False, 0, processed, 0.0)

    logic = GuiDINOSegmentLogic(segmenter=segmenter)
    logic.process(oblique, segmentation, segmentName="liver", model=tiny_model, showGuide=False)

    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene)
    editor.SetMRMLApplicationLogic(headless_slicer.app_logic)
    editorNode = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetSegmentEditorNode(editorNode)
    editor.SetSegmentationNode(segmentation)
    editor.SetSourceVolumeNode(oblique)
    editorNode.SetSelectedSegmentID(segmentId)
    assert editor.UpdateAlignedSourceVolume()

    predicted = np.zeros_like(original)
    predicted[:, 0:5, 0:5] = 1
    predictions.append(predicted)
    logic.markSliceReviewed(segmentation, segmentId, 2)
    job = logic.prepareSegmentation(oblique, segmentation, SegmentSettings(segmentId=segmentId, model=tiny_model,
                                                                             sliceRange=(0, 5), showGuide=False))
    assert job.slices.tolist() == [0, 1, 3, 4, 5]  # the reviewed slice is not computed (slice 6: out of scope)
    prediction = logic.computeSegmentation(job)
    merged = logic.previewLabels(job, prediction)[0]
    preview = nodes.resampleToReference(nodes.orientedImageFromArrayNode(merged, oblique, segmentation),
                                          editor.GetAlignedSourceVolume())

    # Intensity masking: only voxels in range may change (it needs the preview on the source grid).
    editorNode.SetSourceVolumeIntensityMask(True)
    editorNode.SetSourceVolumeIntensityMaskRange(0, 2000)
    assert editor.SaveStateForUndo()
    logic.applyThroughEditor(job, prediction, lambda: editor.ModifySegmentByLabelmap(
        segmentation, segmentId, preview, editor.ModificationModeSet, False, False))
    assert logic.reviewedSlices(segmentation, segmentId)["slices"] == [2]  # what Apply wrote is not an edit
    after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, oblique)
    voxels = slicer.util.arrayFromVolume(oblique)
    editable = (voxels >= 0) & (voxels <= 2000)
    np.testing.assert_array_equal(after[2], original[2])  # reviewed
    np.testing.assert_array_equal(after[6], original[6])  # not processed
    np.testing.assert_array_equal(after[editable], merged[editable])
    np.testing.assert_array_equal(after[~editable], original[~editable])
    assert (after != original).any()

    editor.Undo()
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, oblique),
                                  original)
    assert logic.reviewedSlices(segmentation, segmentId)["slices"] == [2]  # undone slices are not reviewed either


def test_oriented_image_follows_volume_and_segmentation_transforms(headless_slicer, oblique):
    scene = headless_slicer.scene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    voxels = (np.arange(7 * 12 * 10).reshape(7, 12, 10) % 2).astype(np.uint8)
    image = nodes.orientedImageFromArrayNode(voxels, oblique, segmentation)
    np.testing.assert_array_equal(nodes.arrayFromOrientedImage(image), voxels)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), nodes.ijkToRasNode(oblique), atol=1e-9)

    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift.SetMatrixTransformToParent(_matrix([[1, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    oblique.SetAndObserveTransformNodeID(shift.GetID())
    image.GetImageToWorldMatrix(matrix)
    moved = nodes.orientedImageFromArrayNode(voxels, oblique, segmentation)
    moved.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix)[:3, 3],
                               nodes.ijkToRasNode(oblique)[:3, 3] + [5, 0, 0], atol=1e-9)
    with pytest.raises(ValueError, match="does not fit"):
        nodes.orientedImageFromArrayNode(voxels[:3], oblique)


# -- background job --------------------------------------------------------------------------
def test_a_job_state_reads_as_the_progress_bar_shows_it():
    state = JobState(False, 3, 10, 6.0)
    assert helpers.progressReport(state.done, state.total, state.elapsed) == (30, "3 / 10 slices, about 14 s left")
    done = JobState(True, 10, 10, 20.0, result="labels")
    assert helpers.progressReport(done.done, done.total, done.elapsed)[0] == 100


def test_progress_text_and_slice_lists():
    assert helpers.progressReport(0, 0, 1.0) == (0, "Loading the model...")
    assert helpers.progressReport(0, 40, 1.0) == (0, "0 / 40 slices")
    assert helpers.progressReport(10, 40, 20.0) == (25, "10 / 40 slices, about 1 min 00 s left")
    assert helpers.progressReport(40, 40, 80.0) == (100, "40 / 40 slices")
    assert helpers.formatDuration(7322) == "2 h 02 min"
    assert helpers.formatSlices([9, 0, 1, 2, 3, 7, 10]) == "0-3, 7, 9-10"
    assert helpers.formatSlices([]) == "none"
    assert (helpers.slicesText(1), helpers.slicesText(0), helpers.slicesText(12)) == ("1 slice", "0 slices", "12 slices")


# -- dependencies ----------------------------------------------------------------------------
def _checker(present, versions=None):
    versions = versions or {}
    return SimpleNamespace(isImportable=lambda name: name in present, installedVersion=versions.get)


def test_missing_requirements_with_injected_checkers():
    everything = {name for name, _ in deps.REQUIREMENTS}
    check = _checker(everything, {"torch": "2.13.0+cpu", "monai": "1.5.1", "SimpleITK": None})
    assert deps.missingRequirements(isImportable=check.isImportable, installedVersion=check.installedVersion) == []
    check = _checker(everything - {"peft", "skimage"}, {"torch": "2.2.0", "transformers": "5.1.0"})
    missing = deps.missingRequirements(isImportable=check.isImportable, installedVersion=check.installedVersion)
    assert missing == ["torch>=2.4,<2.15", "peft>=0.17,<0.22", "scikit-image>=0.22,<0.27"]


def test_install_plan_picks_the_installers():
    missing = ["torch>=2.4,<2.15", "transformers>=5.0,<6", "monai>=1.4,<1.7"]
    plan = deps.makeInstallPlan(missing, hasPyTorchUtils=True, hasPackaging=True)
    assert (plan.torch, plan.torchInstaller) == ("torch>=2.4,<2.15", "PyTorchUtils")
    assert plan.packages == ("transformers>=5.0,<6", "monai>=1.4,<1.7") and plan.packageInstaller == "slicer.packaging"
    old = deps.makeInstallPlan(missing, hasPyTorchUtils=False, hasPackaging=False)
    assert (old.torchInstaller, old.packageInstaller) == ("pip_install", "pip_install")
    noTorch = deps.makeInstallPlan(["peft>=0.17,<0.22"], hasPyTorchUtils=True, hasPackaging=False)
    assert (noTorch.torch, noTorch.torchInstaller, noTorch.packageInstaller) == ("", "", "pip_install")
    assert "PyTorch extension" in plan.confirmationText() and "monai" in plan.confirmationText()
    bundled = deps.makeInstallPlan(["SimpleITK>=2.3,<3", "peft>=0.17,<0.22"], hasPyTorchUtils=True, hasPackaging=True)
    assert bundled.notInstallable == ("SimpleITK",) and bundled.packages == ("peft>=0.17,<0.22",)
    assert "SimpleITK" in bundled.notInstallableText()


def test_never_installs_while_testing_and_never_without_asking():
    plan = deps.makeInstallPlan(["peft>=0.17,<0.22"], hasPyTorchUtils=True, hasPackaging=True)
    assert deps.nextStep(plan, testing=False) == "ask"
    assert deps.nextStep(plan, testing=True) == "skip"
    assert deps.nextStep(deps.makeInstallPlan([], True, True), testing=True) == "ready"
    blocked = deps.makeInstallPlan(["SimpleITK>=2.3,<3"], True, True)
    assert deps.nextStep(blocked, testing=False) == "refuse"


def test_too_old_a_slicer_is_told_the_minimum_before_anything_is_installed():
    assert deps.unsupportedReason((5, 10), (3, 12, 4)) is None
    assert deps.unsupportedReason((5, 12, 0), (3, 10)) is None
    for slicerVersion, python in [((5, 8), (3, 9, 10)), ((5, 6), (3, 9)), ((5, 10), (3, 9))]:
        reason = deps.unsupportedReason(slicerVersion, python)
        assert "Slicer 5.10 or newer" in reason and "Python 3.10" in reason and "Nothing was installed" in reason
        assert f"this is Slicer {slicerVersion[0]}.{slicerVersion[1]} with Python {python[0]}.{python[1]}" in reason
    plan = deps.makeInstallPlan(["torch>=2.4,<2.15"], hasPyTorchUtils=True, hasPackaging=True)
    assert deps.nextStep(plan, testing=False, unsupported="too old") == "unsupported"
    assert deps.nextStep(deps.makeInstallPlan([], True, True), testing=False, unsupported="too old") == "unsupported"
    source = ast.get_source_segment(*_method(MODULE / "GuiDINOSegmentLib" / "DependencyLogic.py", "DependencyLogic",
                                             "ensureDependencies"))
    assert source.index("unsupportedReason(") < source.index("confirmOkCancelDisplay") < source.index("self.install(")
    assert 'return False' in source[source.index('step == "unsupported"'):source.index('step == "ready"')]


def test_pytorch_is_installed_without_a_second_question():
    source = ast.get_source_segment(*_method(MODULE / "GuiDINOSegmentLib" / "DependencyLogic.py", "DependencyLogic",
                                             "install"))
    assert "installTorch(askConfirmation=False" in source


def test_minimum_slicer_is_stated_where_users_read_it():
    minimum = "{}.{}".format(*deps.MINIMUM_SLICER)
    assert f"Slicer {minimum} or newer" in (ROOT / "README.md").read_text()
    assert f"Slicer {minimum} or newer" in (ROOT / "CMakeLists.txt").read_text()


def _method(path, className, name):
    text = path.read_text()
    cls = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == className)
    return text, next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_requirements_are_the_pyproject_ranges():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for _, requirement in deps.REQUIREMENTS:
        assert requirement in declared, requirement
    names = {re.split(r"[<>=!~]", r)[0] for r in declared} - {"numpy"}  # Slicer ships numpy
    assert names == {re.split(r"[<>=!~]", r)[0] for _, r in deps.REQUIREMENTS}


def test_dependency_check_never_runs_in_a_constructor():
    for path in GUI_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in ("__init__", "setup", "setupOptionsFrame"):
                text = ast.unparse(node)
                assert "ensureDependencies" not in text and "offerOnce" not in text, (path.name, node.name)


# -- optional Train module -------------------------------------------------------------------
def test_refine_button_needs_the_train_logic():
    def missing():
        raise ModuleNotFoundError("GuiDINOTrainLib")

    from GuiDINOTrainLib.TrainLogic import GuiDINOTrainLogic as Trainer

    class OnlyScripts:  # a Logic without the three phases a GUI follows
        def refineFromCorrections(self, *args, **kwargs):
            return SimpleNamespace(bundle=Path("/models/liver-v2"))

    try:
        registry.registerRefineLogic(None)
        assert registry.refineLogicClass() is None  # no Train module loaded
        registry.registerRefineLogic(missing)
        assert registry.refineLogicClass() is None  # registered, but its packages are not installed
        registry.registerRefineLogic(lambda: Trainer)
        assert registry.refineLogicClass() is Trainer
        registry.registerRefineLogic(lambda: object)
        assert registry.refineLogicClass() is None  # cannot refine
        registry.registerRefineLogic(lambda: OnlyScripts)
        assert registry.refineLogicClass() is None  # the effect needs prepareRefine and newRefineRun
    finally:
        registry.registerRefineLogic(None)
    assert helpers.REFINE_UNAVAILABLE_TOOLTIP == "Available with the GuiDINO Train module"


# -- static checks of the GUI files ----------------------------------------------------------
def _logicUses(path):
    """(called, other) names of ``self.logic.<name>`` in a file."""
    called, other = set(), set()
    tree = ast.parse(path.read_text())
    calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "logic"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            (called if id(node) in calls else other).add(node.attr)
    return called, other


@pytest.mark.parametrize("path", GUI_FILES, ids=lambda p: p.name)
def test_gui_calls_only_what_the_logic_defines(path):
    from GuiDINOSegmentLib import GuiDINOSegmentLogic

    called, other = _logicUses(path)
    assert called, "the GUI file should delegate to the Logic"
    undefined = sorted(name for name in called if not callable(getattr(GuiDINOSegmentLogic, name, None)))
    assert not undefined, f"{path.name} calls Logic methods that GuiDINOSegmentLogic does not define: {undefined}"
    instance = GuiDINOSegmentLogic()
    assert not sorted(name for name in other if not hasattr(instance, name))


def _ensureLogicCalls(path):
    """(function name, inside a ``with slicer.util.tryWithErrorDisplay``) of each ``self.ensureLogic()`` call."""
    calls = []

    def visit(node, function, shown):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function, shown = node.name, False
        if isinstance(node, ast.With) and any("tryWithErrorDisplay" in ast.unparse(item.context_expr)
                                              for item in node.items):
            shown = True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "ensureLogic"
                and ast.unparse(node.func.value) == "self"):
            calls.append((function, shown))
        for child in ast.iter_child_nodes(node):
            visit(child, function, shown)

    visit(ast.parse(path.read_text()), None, False)
    return calls


@pytest.mark.parametrize("path", GUI_FILES + [ROOT / "GuiDINOTrain" / "GuiDINOTrain.py"], ids=lambda p: p.name)
def test_a_failed_installation_reaches_the_user(path):
    """ensureLogic installs packages: each call is inside tryWithErrorDisplay (a slot's exception only reaches the
    console), or in the effect's ``preview``, which Slicer's auto-complete effect runs inside one (onPreview)."""
    calls = _ensureLogicCalls(path)
    assert calls
    unshown = [function for function, shown in calls if not shown and function != "preview"]
    assert not unshown, f"{path.name}: ensureLogic() called outside tryWithErrorDisplay in {unshown}"


def test_gui_never_writes_segments_directly():
    for path in GUI_FILES:
        text = path.read_text()
        for forbidden in ("updateSegmentBinaryLabelmapFromArray", "SetBinaryLabelmapToSegment",
                          "ImportLabelmapToSegmentationNode"):
            assert forbidden not in text, (path.name, forbidden)


def _parameterFields():
    tree = ast.parse((MODULE / "GuiDINOSegment.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GuiDINOSegmentParameterNode")
    return [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)]


def test_parameters_are_saved_and_connected_to_the_ui():
    fields = _parameterFields()
    assert fields == ["inputVolume", "outputSegmentation", "segmentName", "modelPath", "guideSource", "axis",
                      "sliceMode", "sliceFirst", "sliceLast", "device", "showGuide", "guideOpacity"]
    ui = ElementTree.parse(MODULE / "Resources" / "UI" / "GuiDINOSegment.ui")
    connected = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                connected[prop.find("string").text] = widget.get("class")
    assert sorted(connected) == sorted(set(fields) - {"modelPath"})  # the path field is wired by hand:
    module = (MODULE / "GuiDINOSegment.py").read_text()
    assert 'modelPath: str = ""' in module  # empty means "the default", never "."
    assert 'modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)' in module
    assert "self.ui.modelPathLineEdit.currentPath = p.modelPath" in module
    assert connected["inputVolume"] == connected["outputSegmentation"] == "qMRMLNodeComboBox"


def test_every_ui_name_the_panel_uses_exists():
    names = {w.get("name") for w in ElementTree.parse(MODULE / "Resources" / "UI" / "GuiDINOSegment.ui").iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "GuiDINOSegment.py").read_text()))
    assert used and used <= names, used - names


def test_effect_is_registered_from_its_source_file():
    module = (MODULE / "GuiDINOSegment.py").read_text()
    assert 'slicer.app.connect("startupCompleted()", registerEditorEffect)' in module
    assert "qSlicerSegmentEditorScriptedEffect" in module and '"SegmentEditorEffect.py"' in module
    effect = ast.parse(GUI_FILES[1].read_text())
    cls = next(n for n in effect.body if isinstance(n, ast.ClassDef) and n.name == "SegmentEditorEffect")
    assert [ast.unparse(b) for b in cls.bases] == ["AbstractScriptedSegmentEditorAutoCompleteEffect"]
    assert 'scriptedEffect.name = "GuiDINO"' in ast.get_source_segment(GUI_FILES[1].read_text(), cls)
    assert (MODULE / "SegmentEditorGuiDINOLib" / "SegmentEditorEffect.png").is_file()


def test_effect_needs_a_selected_segment_and_disconnects_its_signals():
    text, init = _method(GUI_FILES[1], "SegmentEditorEffect", "__init__")
    body = [ast.unparse(statement) for statement in init.body]
    base = next(i for i, line in enumerate(body) if "AutoCompleteEffect.__init__(self, scriptedEffect)" in line)
    # the auto-complete base class sets perSegment = False: ours must come after it
    assert "scriptedEffect.perSegment = True" in body[base + 1:]
    _, cleanup = _method(GUI_FILES[1], "SegmentEditorEffect", "cleanup")
    cleanupText = ast.unparse(cleanup)
    assert "widget.disconnect(signal, slot)" in cleanupText and "AutoCompleteEffect.cleanup(self)" in cleanupText
    connects = [ast.unparse(node) for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "connect"]
    assert connects == ["widget.connect(signal, slot)"], connects  # every connection is in the list cleanup undoes


def test_the_panel_builds_one_settings_object():
    parameters = SimpleNamespace(segmentName="", modelPath=Path("."), guideSource=" /weights/vits16 ", axis="coronal",
                                 sliceMode="range", sliceFirst=9, sliceLast=4, device="cpu", showGuide=False,
                                 guideOpacity=0.3, inputVolume=None, outputSegmentation=None)
    settings = helpers.panelSettings(parameters)
    assert settings == SegmentSettings(segmentName="GuiDINO", model=None, guideSource="/weights/vits16",
                                       axis="coronal", sliceRange=(4, 9), device="cpu", showGuide=False)
    parameters.sliceMode = "current"
    assert helpers.panelSettings(parameters, currentSlice=7).sliceRange == 7


def test_installs_pin_what_slicers_python_already_has():
    """Every distribution the running Python has is pinned, except what the plan installs: pip cannot replace
    Slicer's numpy, scipy or requests (5.10 ships 2.0.2, 1.13.1, 2.32.3) while resolving GuiDINO's packages."""
    plan = deps.makeInstallPlan(["transformers>=5.0,<6", "scikit-image>=0.22,<0.27"], False, False)
    installed = {"numpy": "2.0.2", "scipy": "1.13.1", "requests": "2.32.3", "transformers": "4.40.0",
                 "scikit_image": "0.21.0"}
    assert deps.slicerConstraints(plan, installed) == ["numpy==2.0.2", "requests==2.32.3", "scipy==1.13.1"]
    here = deps.slicerConstraints(plan)  # read from this Python, not a list in the code
    assert f"numpy=={np.__version__}" in here and not any(line.startswith("transformers==") for line in here)
    source = ast.get_source_segment(*_method(MODULE / "GuiDINOSegmentLib" / "DependencyLogic.py", "DependencyLogic",
                                             "install"))
    assert source.count('["-c", constraints') == 2 and "constraints=constraints" in source


SLICER_5_10 = ["numpy==2.0.2", "scipy==1.13.1", "requests==2.32.3"]  # SuperBuild/External_python-*.cmake of v5.10.0


def test_guidinos_packages_resolve_around_slicer_5_10s_own(tmp_path):
    """What GuiDINO installs into Slicer 5.10 (Python 3.12) resolves with Slicer's numpy, scipy and requests
    pinned: pip's own resolver, on PyPI's wheels for that Python (nothing is installed)."""
    import subprocess
    import sys

    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(SLICER_5_10) + "\n")
    packages = [r for _, r in deps.REQUIREMENTS if deps._split(r)[0] not in deps.BUNDLED_WITH_SLICER + ("torch",)]
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
                           "--python-version", "3.12", "--only-binary=:all:", "--target", str(tmp_path / "t"),
                           "-c", str(constraints), *packages, "torch>=2.4,<2.15"], capture_output=True, text=True,
                          timeout=600)
    if done.returncode and ("NewConnectionError" in done.stderr or "Could not fetch" in done.stderr
                            or "ConnectTimeout" in done.stderr):
        pytest.skip(f"the package index cannot be reached here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(done.stdout)["install"]}
    for pin in SLICER_5_10:
        name, version = pin.split("==")
        assert chosen.get(name, version) == version, (name, chosen.get(name))
