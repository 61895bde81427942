"""GuiDINOSegmentLogic on a real headless MRML scene with an oblique volume."""

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
import vtk
from conftest import synthetic_volume
from slicer_harness import HeadlessSlicer

from GuiDINOSegmentLib import GuiDINOSegmentLogic
from guidino.bundle import BundleError, build_model, load_bundle, save_bundle
from guidino.geometry import Geometry
from GuiDINOSegmentLib.ReviewStore import BASELINE_HASH_ATTRIBUTE, REVIEW_TAG
from guidino.guides import GuideGenerator, GuideNotFoundError
from guidino.model import GuiDINOModel, ModelConfig
from guidino.review import slice_mask
from guidino.errors import InputError
from guidino.inference import segment_volume

SMALL = {"network": "unet", "input_size": 64, "widths": [8, 16, 32, 64, 128]}


class ThresholdSegmenter:
    """The real engine run, its labels replaced by ``voxels > threshold`` on the processed slices.

    An untrained model's answer is arbitrary; this one is known and follows the oblique grid.
    """

    def __init__(self, threshold=500):
        self.threshold = threshold

    def __call__(self, model, image, **options):
        result = segment_volume(model, image, **options)
        processed = slice_mask(image.voxels.shape, result.axis, np.flatnonzero(result.processed))
        result.labels = ((image.voxels > self.threshold) & processed).astype(np.uint8)
        return result


@pytest.fixture(scope="module")
def model(tiny_guide_dir):
    return GuiDINOModel(ModelConfig(**SMALL), GuideGenerator.load(str(tiny_guide_dir)))


@pytest.fixture
def scene(headless_slicer, tmp_path):
    image, _ = synthetic_volume()
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    mrml = headless_slicer.scene
    segmentation = mrml.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    return SimpleNamespace(app=headless_slicer, mrml=mrml, path=path, volume=headless_slicer.load_volume(path),
                           segmentation=segmentation,
                           views=[mrml.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)])


@pytest.fixture
def segmenter():
    return ThresholdSegmenter()


@pytest.fixture
def logic(segmenter):
    return GuiDINOSegmentLogic(segmenter=segmenter)


def ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def segment_array(scene, segment_id):
    return slicer.util.arrayFromSegmentBinaryLabelmap(scene.segmentation, segment_id, scene.volume)


def set_segment_array(scene, segment_id, array):
    slicer.util.updateSegmentBinaryLabelmapFromArray(array, scene.segmentation, segment_id, scene.volume)


def blob(scene, threshold=500):
    return (slicer.util.arrayFromVolume(scene.volume) > threshold).astype(np.uint8)


def test_package_exports_the_logic_lazily():
    from GuiDINOSegmentLib.SegmentLogic import GuiDINOSegmentLogic as by_module

    assert isinstance(GuiDINOSegmentLogic, type) and GuiDINOSegmentLogic is by_module
    code = ("import sys, GuiDINOSegmentLib, guidino; assert 'slicer' not in sys.modules, 'importing imported slicer'; "
            "assert 'torch' not in sys.modules, 'importing imported torch'")
    module = Path(__file__).resolve().parents[1] / "GuiDINOSegment"  # on sys.path in Slicer
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(module)})


def test_process_writes_the_segment_in_the_input_geometry(scene, logic, model, tmp_path):
    done = []
    result = logic.process(scene.volume, scene.segmentation, model=model,
                           progressCallback=lambda *progress: done.append(progress))
    segmentation = scene.segmentation.GetSegmentation()
    assert segmentation.GetSegment(result.segmentId).GetName() == "GuiDINO"
    assert (result.slicesProcessed, result.cancelled) == (12, False) and result.seconds > 0
    assert done[-1] == (12, 12)
    np.testing.assert_array_equal(segment_array(scene, result.segmentId), blob(scene))

    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()), matrix, extent)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), ijk_to_ras(scene.volume), atol=1e-9)

    # saved as .seg.nrrd, it reloads equal, on the input's oblique grid
    path = tmp_path / "result.seg.nrrd"
    scene.app.save_segmentation(scene.segmentation, path)
    reloaded = scene.app.load_segmentation(path)
    reloaded_id = reloaded.GetSegmentation().GetSegmentIdBySegmentName("GuiDINO")
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(reloaded, reloaded_id, scene.volume),
                                  blob(scene))
    assert Geometry.from_sitk(sitk.ReadImage(str(path))).is_close(
        Geometry.from_sitk(sitk.ReadImage(str(scene.path))), tol=1e-6)


def test_slice_range_and_compute_prediction(scene, logic, model):
    nodes = scene.mrml.GetNumberOfNodes()
    job = logic.prepareSegmentation(scene.volume, scene.segmentation, model=model, sliceRange=(3, 5))
    preview = logic.computeSegmentation(job)
    assert scene.mrml.GetNumberOfNodes() == nodes  # no scene change
    assert np.flatnonzero(preview.processed).tolist() == [3, 4, 5]

    result = logic.process(scene.volume, scene.segmentation, segmentName="tumour", model=model, sliceRange=4)
    written = segment_array(scene, result.segmentId)
    assert result.slicesProcessed == 1 and written[4].any()
    np.testing.assert_array_equal(written[4], blob(scene)[4])
    assert not np.delete(written, 4, axis=0).any()
    with pytest.raises(InputError, match="slice 12 does not exist: slice indices are 0..11"):
        logic.process(scene.volume, scene.segmentation, model=model, sliceRange=(10, 12))
    with pytest.raises(InputError, match="first <= last"):
        logic.prepareSegmentation(scene.volume, scene.segmentation, model=model, sliceRange=(5, 3))


def test_guide_volume_has_the_input_geometry_and_probability_display(scene, logic, model):
    result = logic.process(scene.volume, scene.segmentation, model=model)
    guide = result.guideVolumeNode
    assert guide.GetName() == "oblique GuiDINO guide" and guide.IsA("vtkMRMLScalarVolumeNode")
    np.testing.assert_array_equal(ijk_to_ras(guide), ijk_to_ras(scene.volume))
    values = slicer.util.arrayFromVolume(guide)
    assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
    np.testing.assert_array_equal(values, result.prediction.guide)

    display = guide.GetDisplayNode()
    color = display.GetColorNode()
    assert color.IsA("vtkMRMLProceduralColorNode") and color.GetName() == "GuiDINO guide"
    low, high = color.GetColorTransferFunction().GetColor(0.0), color.GetColorTransferFunction().GetColor(1.0)
    assert low[2] > low[0] and high[0] == 1 and high[2] == 0  # blue at 0, red at 1
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0, 1)
    assert display.GetApplyThreshold() and 0 < display.GetLowerThreshold() < 0.5  # 0 is not shown
    assert all(view.GetForegroundVolumeID() == guide.GetID() for view in scene.views)
    assert all(view.GetForegroundOpacity() == pytest.approx(0.4) for view in scene.views)

    logic.setGuideOpacity(0.7)
    assert all(view.GetForegroundOpacity() == pytest.approx(0.7) for view in scene.views)
    logic.showGuideVolume(guide, show=False)
    assert all(view.GetForegroundVolumeID() is None for view in scene.views)

    again = logic.process(scene.volume, scene.segmentation, model=model, sliceRange=2)  # updates, keeps the rest
    assert again.guideVolumeNode is guide and guide.GetDisplayNode().GetColorNode() is color
    np.testing.assert_allclose(slicer.util.arrayFromVolume(guide), result.prediction.guide, atol=1e-6)
    assert [n.GetName() for n in slicer.util.getNodesByClass("vtkMRMLProceduralColorNode")].count("GuiDINO guide") == 1
    assert all(view.GetForegroundOpacity() == pytest.approx(0.7) for view in scene.views)

    unguided = GuiDINOModel(ModelConfig(guided=False, **SMALL))
    assert logic.process(scene.volume, scene.segmentation, model=unguided).guideVolumeNode is None


def test_edited_and_marked_slices_are_reviewed(scene, logic, model):
    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId
    assert logic.reviewedSlices(scene.segmentation, segment_id) == {"axis": "axial", "slices": []}
    baseline = logic.baselineVolume(scene.segmentation, segment_id)
    assert baseline.GetHideFromEditors() and baseline.GetName() == "seg GuiDINO GuiDINO baseline"
    np.testing.assert_array_equal(ijk_to_ras(baseline), ijk_to_ras(scene.volume))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(baseline), blob(scene))  # the segment as last seen

    edited = segment_array(scene, segment_id)
    edited[2, 10:20, 10:20] = 1 - edited[2, 10:20, 10:20]
    set_segment_array(scene, segment_id, edited)
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [2]

    logic.markSliceReviewed(scene.segmentation, segment_id, 5)
    assert logic.reviewedSlices(scene.segmentation, segment_id) == {"axis": "axial", "slices": [2, 5]}
    state = logic.reviewState(scene.segmentation, segment_id)
    assert (state.marked, state.edited) == ({"axial": [5]}, {"axial": [2]})
    segment = scene.segmentation.GetSegmentation().GetSegment(segment_id)
    value = vtk.reference("")
    assert segment.GetTag(REVIEW_TAG, value) and str(value).startswith("1:")  # kept with the segment
    with pytest.raises(InputError, match="slice 12 does not exist: slice indices are 0..11 along the axial axis"):
        logic.markSliceReviewed(scene.segmentation, segment_id, 12)
    with pytest.raises(InputError, match="slice 999 does not exist"):
        logic.markSliceReviewed(scene.segmentation, segment_id, 999, axis="sagittal")

    logic.markSliceReviewed(scene.segmentation, segment_id, 3, axis="coronal")  # marks along several axes coexist
    assert logic.reviewedSlices(scene.segmentation, segment_id) == {"axis": "coronal", "slices": [3]}
    assert logic.reviewedSlices(scene.segmentation, segment_id, axis="axial")["slices"] == [2, 5]

    logic.markSliceReviewed(scene.segmentation, segment_id, 2, reviewed=False)  # the edit goes to the model
    logic.markSliceReviewed(scene.segmentation, segment_id, 5, reviewed=False)
    logic.markSliceReviewed(scene.segmentation, segment_id, 3, axis="coronal", reviewed=False)
    assert logic.reviewedSlices(scene.segmentation, segment_id, axis="axial")["slices"] == []
    np.testing.assert_array_equal(segment_array(scene, segment_id), edited)


def test_reviewed_slices_are_untouched_across_runs(scene, logic, segmenter, model):
    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId
    user = segment_array(scene, segment_id)
    user[3, 5:25, 5:25] = 1  # an edited slice
    set_segment_array(scene, segment_id, user)
    logic.markSliceReviewed(scene.segmentation, segment_id, 8)  # a slice accepted as predicted

    segmenter.threshold = -10**6  # the next runs predict every voxel
    result = logic.process(scene.volume, scene.segmentation, model=model)
    assert result.slicesProcessed == 10  # reviewed slices are not even computed along their own axis
    after = segment_array(scene, segment_id)
    np.testing.assert_array_equal(after[[3, 8]], user[[3, 8]])
    assert np.delete(after, [3, 8], axis=0).all()
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [3, 8]

    # along another axis every slice crosses the reviewed ones: their voxels are protected by a mask
    result = logic.process(scene.volume, scene.segmentation, model=model, axis="coronal", sliceRange=(10, 30))
    assert result.slicesProcessed == 21
    after = segment_array(scene, segment_id)
    np.testing.assert_array_equal(after[[3, 8]], user[[3, 8]])
    assert logic.reviewedSlices(scene.segmentation, segment_id, axis="axial") == {"axis": "axial", "slices": [3, 8]}


def test_cancel_midway_keeps_processed_slices_and_a_consistent_scene(scene, logic, model):
    segment_id = scene.segmentation.GetSegmentation().AddEmptySegment("", "GuiDINO")
    user = np.zeros_like(blob(scene))
    user[10:, 20:30, 20:30] = 1  # drawn before any prediction
    set_segment_array(scene, segment_id, user)
    cancel = threading.Event()

    result = logic.process(scene.volume, scene.segmentation, model=model, cancelEvent=cancel,
                           progressCallback=lambda done, total: cancel.set())
    assert result.cancelled and result.segmentId == segment_id
    done = result.slicesProcessed
    assert 0 < done < 12  # one batch of slices, then the cancel
    written = segment_array(scene, segment_id)
    np.testing.assert_array_equal(written[:done], blob(scene)[:done])
    np.testing.assert_array_equal(written[done:], user[done:])
    stored = slicer.util.arrayFromVolume(logic.baselineVolume(scene.segmentation, segment_id))
    np.testing.assert_array_equal(stored, written)  # the segment as GuiDINO left it
    assert not slicer.util.arrayFromVolume(result.guideVolumeNode)[done:].any()
    assert scene.mrml.GetFirstNodeByName("__temp__") is None
    # drawn before GuiDINO ever ran on the segment: every slice holding content is the user's
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [10, 11]

    result = logic.process(scene.volume, scene.segmentation, model=model)  # the rest can be done afterwards
    assert not result.cancelled
    expected = blob(scene)
    expected[10:] = user[10:]
    np.testing.assert_array_equal(segment_array(scene, segment_id), expected)
    assert len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) == 1
    assert len([n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                if n.GetName().endswith("GuiDINO guide")]) == 1


def test_bad_inputs_raise_clear_errors(scene, logic, model, tiny_guide, tmp_path):
    def process(volume=scene.volume, segmentation=scene.segmentation, **options):
        return logic.process(volume, segmentation, **{"model": model, **options})

    with pytest.raises(InputError, match="no input volume"):
        process(volume=None)
    with pytest.raises(InputError, match="no output segmentation"):
        process(segmentation=scene.volume)

    vector = scene.mrml.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(vector, np.random.default_rng(0).random((4, 6, 5, 3)).astype(np.float32))
    with pytest.raises(InputError, match="rgb: a vector volume with 3 components"):
        process(volume=vector)

    scene.mrml.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    sequence = scene.mrml.AddNewNodeByClass("vtkMRMLSequenceNode", "time series")
    sequence.SetDataNodeAtValue(scene.volume, "0")
    browser = scene.mrml.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    frame = scene.mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "frame")
    slicer.util.updateVolumeFromArray(frame, slicer.util.arrayFromVolume(scene.volume))
    browser.AddProxyNode(frame, sequence, False)
    with pytest.raises(InputError, match="frame: a 4D image"):
        process(volume=frame)

    flat = scene.mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "flat")
    slicer.util.updateVolumeFromArray(flat, np.full((4, 6, 5), 7, np.int16))
    with pytest.raises(InputError, match="nothing to segment"):
        process(volume=flat)
    nan = scene.mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "nan")
    slicer.util.updateVolumeFromArray(nan, np.where(np.eye(5)[None, :4], np.nan, 1.0).astype(np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        process(volume=nan)

    other = scene.mrml.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    other.SetReferenceImageGeometryParameterFromVolumeNode(flat)
    with pytest.raises(InputError, match="other is bound to another geometry than oblique"):
        process(segmentation=other)
    transform = scene.mrml.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    scene.segmentation.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="different transforms"):
        process()
    scene.segmentation.SetAndObserveTransformNodeID(None)

    with pytest.raises(BundleError, match="not found"):
        process(model=str(tmp_path / "no-such-bundle"))
    logic.defaultModelPath = None
    with pytest.raises(BundleError, match="no model bundle chosen"):
        process(model=None)
    bundle = save_bundle(build_model(ModelConfig(**SMALL), guide=tiny_guide), tmp_path / "guided")
    logic.guideSource = str(tmp_path / "no-such-guide")
    with pytest.raises(GuideNotFoundError, match="no-such-guide"):
        process(model=str(bundle))
    assert isinstance(InputError("x"), ValueError) and isinstance(BundleError("x"), ValueError)
    assert scene.segmentation.GetSegmentation().GetNumberOfSegments() == 0  # nothing was written


def test_models_are_cached_until_the_bundle_changes(tmp_path, monkeypatch):
    bundle = save_bundle(build_model(ModelConfig(guided=False, **SMALL)), tmp_path / "bundle")
    loads = []
    logic = GuiDINOSegmentLogic(bundleLoader=lambda *args, **kwargs: loads.append(args) or load_bundle(*args, **kwargs))
    first = logic.loadModel(str(bundle))
    assert logic.loadModel(bundle / "." / "") is first and len(loads) == 1
    logic.defaultModelPath = str(bundle)
    assert logic.loadModel() is first
    stat = (bundle / "config.json").stat()
    os.utime(bundle / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert logic.loadModel() is not first and len(loads) == 2

    monkeypatch.setenv("GUIDINO_MODEL", str(bundle))
    assert GuiDINOSegmentLogic().defaultModelPath == str(bundle)
    monkeypatch.delenv("GUIDINO_MODEL")
    with pytest.raises(BundleError, match="no model bundle chosen: .*GUIDINO_MODEL"):
        GuiDINOSegmentLogic().loadModel()


def test_reviewed_state_and_prediction_survive_a_scene_save_and_reload(scene, logic, model, tmp_path):
    result = logic.process(scene.volume, scene.segmentation, model=model)
    edited = segment_array(scene, result.segmentId)
    edited[4] = 0
    set_segment_array(scene, result.segmentId, edited)
    logic.markSliceReviewed(scene.segmentation, result.segmentId, 9)
    baseline = logic.baselineVolume(scene.segmentation, result.segmentId)
    for node, name in [(scene.volume, "oblique.nrrd"), (scene.segmentation, "seg.seg.nrrd"),
                       (baseline, "baseline.nrrd"), (result.guideVolumeNode, "guide.nrrd")]:
        if node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(str(tmp_path / name))
        assert node.GetStorageNode().WriteData(node)
    scene.mrml.SetRootDirectory(str(tmp_path))
    scene.mrml.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.mrml.Commit()

    reloaded = HeadlessSlicer()
    try:
        reloaded.scene.SetURL(str(tmp_path / "scene.mrml"))
        assert reloaded.scene.Import()
        segmentation = reloaded.scene.GetFirstNode("seg", "vtkMRMLSegmentationNode")
        assert logic.reviewedSlices(segmentation, result.segmentId) == {"axis": "axial", "slices": [4, 9]}
        stored = logic.baselineVolume(segmentation, result.segmentId)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(stored), slicer.util.arrayFromVolume(baseline))
        assert stored.GetAttribute(BASELINE_HASH_ATTRIBUTE) == baseline.GetAttribute(BASELINE_HASH_ATTRIBUTE)
        volume = reloaded.scene.GetFirstNode("oblique", "vtkMRMLScalarVolumeNode")
        guide = logic.guideVolume(volume)
        assert guide.GetDisplayNode().GetColorNode().GetName() == "GuiDINO guide"
        np.testing.assert_array_equal(ijk_to_ras(guide), ijk_to_ras(volume))
    finally:
        reloaded.close()



def test_prediction_written_by_another_writer_is_recorded_not_reviewed(scene, logic, model):
    """The Segment Editor effect writes through the editor; what it wrote is GuiDINO's, not the user's."""
    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId  # baseline: > 500
    logic.markSliceReviewed(scene.segmentation, segment_id, 4)
    other = GuiDINOSegmentLogic(segmenter=ThresholdSegmenter(threshold=700))
    job = other.prepareSegmentation(scene.volume, scene.segmentation, model=model, segmentId=segment_id)
    assert 4 not in job.slices  # reviewed slices are dropped before anything is computed
    prediction = other.computeSegmentation(job)
    current = segment_array(scene, segment_id)
    mine = current[4].copy()
    written = np.where(slice_mask(current.shape, 0, [4]), current, prediction.labels)
    assert not np.array_equal(written, current)
    other.applyThroughEditor(job, prediction, lambda: set_segment_array(scene, segment_id, written))  # an Apply
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [4]
    np.testing.assert_array_equal(segment_array(scene, segment_id)[4], mine)

    edited = segment_array(scene, segment_id)  # a user edit after the apply still counts as a correction
    edited[7, :5, :5] = 1 - edited[7, :5, :5]
    set_segment_array(scene, segment_id, edited)
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [4, 7]

    with pytest.raises(InputError, match="no output segmentation"):
        logic.prepareSegmentation(scene.volume, None, model=model)
    guide = logic.updateGuideVolume(scene.volume, prediction)
    np.testing.assert_array_equal(ijk_to_ras(guide), ijk_to_ras(scene.volume))


# -- one job per run ---------------------------------------------------------------------------------
def test_a_run_validates_the_volume_once(scene, logic, model, monkeypatch):
    import GuiDINOSegmentLib.VolumeNodes as module

    calls = []
    check = module.check_voxels
    monkeypatch.setattr(module, "check_voxels", lambda *args: calls.append(args[1]) or check(*args))
    logic.process(scene.volume, scene.segmentation, model=model)
    assert calls == ["oblique"]


def test_a_prepared_job_holds_a_copy_and_skips_reviewed_slices(scene, logic, model):
    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId
    logic.markSliceReviewed(scene.segmentation, segment_id, 6)
    job = logic.prepareSegmentation(scene.volume, scene.segmentation, model=model, sliceRange=(4, 8))
    assert job.segmentId == segment_id and job.slices.tolist() == [4, 5, 7, 8] and job.requested == 5
    before = job.image.voxels.copy()
    slicer.util.arrayFromVolume(scene.volume)[:] = 0  # the user changes the scene while the job computes
    slicer.util.arrayFromVolumeModified(scene.volume)
    np.testing.assert_array_equal(job.image.voxels, before)
    prediction = logic.computeSegmentation(job)
    assert np.flatnonzero(prediction.processed).tolist() == [4, 5, 7, 8]


def test_the_preview_and_the_panel_write_by_one_rule(scene, logic, model):
    segment_id = logic.process(scene.volume, scene.segmentation, model=model, sliceRange=(0, 3)).segmentId
    logic.markSliceReviewed(scene.segmentation, segment_id, 2)
    edited = segment_array(scene, segment_id)
    edited[2] = 1 - edited[2]  # the user's reviewed slice differs from any prediction
    set_segment_array(scene, segment_id, edited)
    other = GuiDINOSegmentLogic(segmenter=ThresholdSegmenter(threshold=700))
    job = other.prepareSegmentation(scene.volume, scene.segmentation, model=model, segmentId=segment_id)
    prediction = other.computeSegmentation(job)
    preview = other.previewLabels(job, prediction)[0]
    other.applySegmentation(job, prediction)
    np.testing.assert_array_equal(segment_array(scene, segment_id), preview)
    np.testing.assert_array_equal(preview[2], edited[2])  # reviewed: the user's
    assert (preview != edited).any()


def test_missing_models_and_bad_ranges_are_refused_before_any_work(scene, tmp_path):
    logic = GuiDINOSegmentLogic(segmenter=lambda *args, **kwargs: pytest.fail("computed"))
    with pytest.raises(BundleError, match="no model bundle chosen"):
        logic.prepareSegmentation(scene.volume, scene.segmentation)
    with pytest.raises(BundleError, match="not found"):
        logic.prepareSegmentation(scene.volume, scene.segmentation, model=str(tmp_path / "missing"))
    with pytest.raises(InputError, match="unknown axis"):
        logic.prepareSegmentation(scene.volume, scene.segmentation, axis="oblique")
    with pytest.raises(InputError, match="no segment 'nope'"):
        logic.prepareSegmentation(scene.volume, scene.segmentation, segmentId="nope")


def test_removing_a_volume_or_segmentation_removes_guidinos_hidden_nodes(scene, logic, model):
    result = logic.process(scene.volume, scene.segmentation, model=model)
    guide, baseline = result.guideVolumeNode, logic.baselineVolume(scene.segmentation, result.segmentId)
    assert scene.mrml.IsNodePresent(guide) and scene.mrml.IsNodePresent(baseline)
    scene.mrml.RemoveNode(scene.segmentation)
    assert not scene.mrml.IsNodePresent(baseline) and scene.mrml.IsNodePresent(guide)
    scene.mrml.RemoveNode(scene.volume)
    assert not scene.mrml.IsNodePresent(guide)
    assert not slicer.util.getNodesByClass("vtkMRMLLabelMapVolumeNode")


def test_a_new_scene_at_a_deleted_scenes_address_is_watched(monkeypatch):
    """Scenes are told apart by identity, not by address alone (a new scene may reuse a deleted one's memory)."""
    from GuiDINOSegmentLib import ReviewStore as segmentLogic

    watcher = segmentLogic.SegmentWatcher()
    monkeypatch.setattr(segmentLogic, "_address", lambda vtkObject: 1)  # every object at one address
    removed = []
    for _ in range(2):
        mrml = slicer.vtkMRMLScene()
        watcher.watchScene(mrml)
        volume = mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "input")
        guide = mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "guide")
        guide.SetNodeReferenceID(segmentLogic.GUIDE_INPUT_ROLE, volume.GetID())
        mrml.RemoveNode(volume)
        removed.append(not mrml.IsNodePresent(guide))
        del mrml
    assert removed == [True, True]


def region_prediction_beside_a_correction(scene, logic, model, far):
    """The user corrects slice 5 of a segment; a region model's prediction touches the correction on slices 4 and 6
    and holds a piece ``far`` (a slice-9 index box) that nothing connects to it. Returns (segment id, the user's
    segment, the prepared job, that prediction)."""
    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId
    user = segment_array(scene, segment_id).copy()
    user[5] = 0
    user[5, 10:20, 10:20] = 1
    set_segment_array(scene, segment_id, user)  # the user's correction of slice 5 (now an edited slice)
    job = logic.prepareSegmentation(scene.volume, scene.segmentation, model=model, segmentId=segment_id)
    prediction = logic.computeSegmentation(job)
    labels = np.zeros_like(prediction.labels)
    labels[4, 11:19, 11:19] = labels[6, 12:18, 12:18] = 1  # touches the correction
    labels[far] = 1
    prediction.labels, prediction.probability = labels, labels.astype(np.float32)
    prediction.region = {"axis": "axial", "array_axis": prediction.axis}  # as segment_volume reports a region model
    return segment_id, user, job, prediction


def test_a_model_refined_from_corrections_writes_only_what_connects_to_them(scene, logic, model):
    """A region model (refined from a few corrected slices) knows nothing beyond them: a predicted piece that no
    corrected slice connects to is not written, and the slices it would have touched do not become the user's."""
    segment_id, user, job, prediction = region_prediction_beside_a_correction(
        scene, logic, model, np.s_[9, 30:34, 25:29])
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [5]
    assert logic.previewLabels(job, prediction)[0][9].sum() == 0
    assert logic.applySegmentation(job, prediction).slicesProcessed == np.count_nonzero(prediction.processed)
    written = segment_array(scene, segment_id)
    assert written[4].sum() == 64 and written[6].sum() == 36 and written[9].sum() == 0
    np.testing.assert_array_equal(written[5], user[5])
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [5]
    prediction.region = None  # a model trained on whole slices: every piece is written
    logic.applySegmentation(logic.prepareSegmentation(scene.volume, scene.segmentation, model=model,
                                                      segmentId=segment_id), prediction)
    assert segment_array(scene, segment_id)[9].sum() == 16
    prediction.processed[:] = True  # a region model runs on the user's slices too (its weight): not re-segmented
    result = logic.applySegmentation(logic.prepareSegmentation(scene.volume, scene.segmentation, model=model,
                                                               segmentId=segment_id), prediction)
    assert result.slicesProcessed == len(prediction.processed) - 1


def test_the_suggested_slice_is_judged_on_what_the_write_left(scene, logic, model):
    """Go to suggested slice (the Train panel, the effect's Preview) sends the user where what the segment shows
    rests on the least evidence: not to a slice whose only piece of prediction the write dropped (it shows
    nothing there, rightly), however large that piece."""
    segment_id, _, job, prediction = region_prediction_beside_a_correction(
        scene, logic, model, np.s_[9, 24:36, 20:32])  # the far piece larger: 144 voxels four slices away
    preview, report = logic.previewLabels(job, prediction)
    assert preview[9].sum() == 0 and report["suggested"] is not None and preview[report["suggested"]].any()
    result = logic.applySegmentation(job, prediction)
    assert result.fusion["suggested"] == report["suggested"] != 9
    assert segment_array(scene, segment_id)[result.fusion["suggested"]].any()


def test_strokes_on_a_reloaded_seg_nrrd_are_each_given_to_the_slice_they_were_drawn_on(scene, logic, model, tmp_path):
    """A .seg.nrrd loaded after GuiDINO ran (a new segmentation node: its baseline labelmap is not with it) is
    watched from the moment it is added, so each stroke is found on its own. All together, a one-row stroke on a
    coronal slice and a rectangle on an axial slice crossing it could only be told apart by the per-slice
    fingerprint, which gave both to axial slices and left the rest of the coronal slice to the next run."""
    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId
    path = tmp_path / "saved.seg.nrrd"
    scene.app.save_segmentation(scene.segmentation, path)
    scene.mrml.RemoveNode(scene.segmentation)  # its baseline goes with it: only the state in the file is left
    reloaded = scene.app.load_segmentation(path)
    scene.segmentation = reloaded
    drawn = segment_array(scene, segment_id).copy()
    axial, coronal = 3, 9
    drawn[axial, coronal, 2:13] = 1 - drawn[axial, coronal, 2:13]  # one row, drawn on coronal slice 9
    set_segment_array(scene, segment_id, drawn)
    drawn[6, coronal - 2:coronal + 3, 3:9] = 1 - drawn[6, coronal - 2:coronal + 3, 3:9]  # on axial slice 6
    set_segment_array(scene, segment_id, drawn)

    logic.segmenter.threshold = -np.inf  # the next run predicts the structure everywhere
    logic.process(scene.volume, reloaded, model=model)
    after = segment_array(scene, segment_id)
    np.testing.assert_array_equal(after[:, coronal, :], drawn[:, coronal, :])
    np.testing.assert_array_equal(after[axial], drawn[axial])
    np.testing.assert_array_equal(after[6], drawn[6])
    assert not np.array_equal(after, drawn)  # the run did write elsewhere
    assert logic.reviewedSlices(reloaded, segment_id, axis="coronal")["slices"] == [coronal]


def test_a_stroke_is_recorded_without_a_node_added_to_or_removed_from_the_scene(scene, logic, model):
    """The stroke observer reads the segment's own labelmap (no temporary export node) and rewrites only the
    changed box of the baseline; it reads what the export reads, also beside another segment sharing the
    labelmap and on the oblique grid."""
    from GuiDINOSegmentLib.VolumeNodes import segmentMask

    segment_id = logic.process(scene.volume, scene.segmentation, model=model).segmentId
    other = scene.segmentation.GetSegmentation().AddEmptySegment("other", "other")
    shared = np.zeros_like(segment_array(scene, segment_id))
    shared[2, 3:6, 4:9] = 1
    set_segment_array(scene, other, shared)
    counts = {"added": 0, "removed": 0}
    scene.mrml.AddObserver(scene.mrml.NodeAddedEvent, lambda *a: counts.__setitem__("added", counts["added"] + 1))
    scene.mrml.AddObserver(scene.mrml.NodeRemovedEvent, lambda *a: counts.__setitem__("removed", counts["removed"] + 1))
    segment = scene.segmentation.GetSegmentation().GetSegment(segment_id)
    labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    values = slicer.util.arrayFromSegmentInternalBinaryLabelmap(scene.segmentation, segment_id)
    values[4] = np.where(values[4] == segment.GetLabelValue(), 0, values[4])  # an erase stroke on slice 4
    labelmap.Modified()
    scene.segmentation.GetSegmentation().InvokeEvent(slicer.vtkSegmentation.SegmentModified, segment_id)
    assert counts == {"added": 0, "removed": 0}
    assert logic.reviewedSlices(scene.segmentation, segment_id)["slices"] == [4]
    for segmentId in (segment_id, other):
        np.testing.assert_array_equal(segmentMask(scene.segmentation, segmentId, scene.volume),
                                      slicer.util.arrayFromSegmentBinaryLabelmap(scene.segmentation, segmentId,
                                                                                 scene.volume) > 0)


def test_go_to_suggested_slice_centres_the_views_on_that_slice_of_an_oblique_volume(scene, logic):
    """``jumpToSlice`` puts every slice view through the centre of slice k of the volume's array (oblique
    geometry, a parent transform too): the point a user sees when pressing Go to suggested slice."""
    views = [scene.mrml.AddNewNodeByClass("vtkMRMLSliceNode") for _ in range(2)]
    for view, orientation in zip(views, ("Axial", "Sagittal")):
        view.SetOrientation(orientation)
    volume = scene.volume
    shape = slicer.util.arrayFromVolume(volume).shape
    for axis, index in ((0, 2), (0, shape[0] - 1), (2, 3)):
        point = logic.jumpToSlice(volume, axis, index)
        ijk = [(n - 1) / 2 for n in shape[::-1]]
        ijk[2 - axis] = index
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        expected = matrix.MultiplyPoint([*ijk, 1.0])[:3]
        np.testing.assert_allclose(point, expected, atol=1e-6)
        for view in views:  # the slice plane passes through the point
            sliceToRAS = slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS())
            normal, origin = sliceToRAS[:3, 2], sliceToRAS[:3, 3]
            assert abs(float(np.dot(np.asarray(point) - origin, normal))) < 1e-6
    transform = scene.mrml.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(shift)
    local = logic.jumpToSlice(volume, 0, 2)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    moved = logic.jumpToSlice(volume, 0, 2)  # in world coordinates: 25 mm further along R
    np.testing.assert_allclose(np.asarray(moved) - np.asarray(local), [25.0, 0.0, 0.0], atol=1e-6)
