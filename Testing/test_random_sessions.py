"""Randomized Slicer sessions on a real headless MRML scene: nothing the user drew is ever changed by a run.

Each seeded session mixes what a user does (paint and erase along any axis, mark and unmark slices,
undo through Slicer's segment editor, save the segmentation as .seg.nrrd and load it back, save and
reload the whole scene) with what GuiDINO does (segment along any axis and slice range, cancel
midway, refine from corrections, roll back). An oracle keeps the voxels that are the user's: every
voxel of a slice the user painted, erased or marked (along its own axis) once GuiDINO knows the
segment, and, before that, whatever the segment holds when GuiDINO first looks at it (its state
cannot be known). After every step the user's voxels must hold what the user left there.

``GUIDINO_SESSIONS`` sets how many sessions run (default 40, under a minute in CI) and
``GUIDINO_SESSIONS_SEED_START`` the first seed (default 0: CI's fixed seeds);
``GUIDINO_SESSIONS_REPORT=FILE`` writes the totals as JSON (benchmarks/random_sessions.py uses both).
"""

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
from conftest import synthetic_volume
from slicer_harness import HeadlessSlicer

from GuiDINOSegmentLib import GuiDINOSegmentLogic
from guidino.axes import AXES, numpy_axes
from guidino.errors import InputError
from guidino.geometry import Geometry
from guidino.inference import segment_volume
from guidino.review import slice_mask

SESSIONS = int(os.environ.get("GUIDINO_SESSIONS", "40"))
FIRST_SEED = int(os.environ.get("GUIDINO_SESSIONS_SEED_START", "0"))
# Sessions that once lost user voxels, always run. 100008: strokes on a reloaded .seg.nrrd were not seen one by
# one (the reloaded node was not observed), and a one-row coronal stroke was then given to an axial slice.
REGRESSION_SEEDS = (100008,)
STEPS = 16
SHAPE = (9, 20, 18)
LIGHT = {"network": "unet", "input_size": 32, "widths": [4, 8]}
TOTALS = {"sessions": 0, "steps": 0, "user_voxels_lost": 0, "violations": 0, "refused": 0, "by_action": {}}


class RandomSegmenter:
    """The real slice-by-slice engine (so slices, cancel and geometry are real), with labels thresholded at a
    random level each run, so that every run writes something different."""

    def __init__(self, rng):
        self.rng = rng

    def __call__(self, model, image, **options):
        result = segment_volume(model, image, **options)
        processed = slice_mask(image.voxels.shape, result.axis, np.flatnonzero(result.processed))
        threshold = self.rng.uniform(200, 900)
        result.labels = ((image.voxels > threshold) & processed).astype(np.uint8)
        return result


class Session:
    def __init__(self, seed, tmp_path, guide_dir):
        self.rng = np.random.default_rng(seed)
        self.tmp, self.guide_dir = tmp_path, guide_dir
        self.apps = [_start_slicer()]
        image, _ = synthetic_volume(shape=SHAPE, seed=seed)
        self.path = tmp_path / "volume.nrrd"
        sitk.WriteImage(image, str(self.path))
        self.volume = self.apps[-1].load_volume(self.path)
        self.geometry = Geometry.from_sitk(image)
        self.axes = numpy_axes(self.geometry.direction)
        self.segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
        self.segmentation.CreateDefaultDisplayNodes()
        # as Slicer's Segment Editor does once a source volume is chosen (slicer-core 5.13 crashes reading back a
        # one-voxel .seg.nrrd saved without it: seed 200601)
        self.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        self.segmentId = self.segmentation.GetSegmentation().AddEmptySegment("target", "target")
        self.logic = GuiDINOSegmentLogic(segmenter=RandomSegmenter(self.rng))
        self.logic.guideSource = str(guide_dir)
        self.model = self._start_model()
        self.owned = np.zeros(SHAPE, bool)  # the oracle: the user's voxels...
        self.expected = np.zeros(SHAPE, np.uint8)  # ...and the segment as the user last saw it
        self.snapshots = []  # (content, review tag, owned, expected, known) whenever Slicer's history may save one
        self.known = False  # whether GuiDINO has looked at the segment (then it keeps a review state)
        self.versions = []
        self.lost = 0
        self.violations = []
        self._editor()
        if self.rng.random() < 0.4:  # drawn before GuiDINO ever ran: every voxel of it is the user's
            drawn = np.zeros(SHAPE, np.uint8)
            k = int(self.rng.integers(0, SHAPE[0]))
            drawn[k, 3:12, 4:10] = 1
            self._write(drawn)

    @property
    def scene(self):
        return self.apps[-1].scene

    def _start_model(self):
        from guidino.bundle import build_model, save_bundle
        from guidino.model import ModelConfig

        bundle = self.tmp / "models" / "start"
        if not bundle.exists():
            save_bundle(build_model(ModelConfig(**LIGHT), str(self.guide_dir)), bundle)
        return str(bundle)

    def _editor(self):
        editor = slicer.vtkSlicerSegmentEditorLogic()
        editor.SetMRMLScene(self.scene)
        editor.SetMRMLApplicationLogic(self.apps[-1].app_logic)
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editor.SetSegmentEditorNode(node)
        editor.SetSegmentationNode(self.segmentation)
        editor.SetSourceVolumeNode(self.volume)
        node.SetSelectedSegmentID(self.segmentId)
        self.editor, self.editorNode, self.snapshots = editor, node, []

    def content(self):
        return slicer.util.arrayFromSegmentBinaryLabelmap(self.segmentation, self.segmentId, self.volume).astype(
            np.uint8)

    def _write(self, array):
        slicer.util.updateSegmentBinaryLabelmapFromArray(array, self.segmentation, self.segmentId, self.volume)

    def check(self, action):
        now = self.content()
        bad = self.owned & (now != self.expected)
        if bad.any():
            self.lost += int(bad.sum())
            self.violations.append((action, int(bad.sum())))
        self.expected = now  # the model's voxels are the model's to change (lost voxels are counted once)

    # -- what the user does ---------------------------------------------------------------------------
    def _slice(self):
        axis = AXES[int(self.rng.integers(0, 3))]
        index = int(self.rng.integers(0, SHAPE[self.axes[axis]]))
        return axis, index

    def paint(self):
        axis, index = self._slice()
        numpyAxis = self.axes[axis]
        before = self.content()
        after = before.copy()
        plane = np.moveaxis(after, numpyAxis, 0)[index]
        r0, c0 = (int(self.rng.integers(0, n - 2)) for n in plane.shape)
        r1, c1 = (int(self.rng.integers(a + 1, n + 1)) for a, n in ((r0, plane.shape[0]), (c0, plane.shape[1])))
        plane[r0:r1, c0:c1] = int(self.rng.integers(0, 2))  # paint or erase a rectangle
        if np.array_equal(after, before):
            return "paint (no change)"
        self._snapshot()
        assert self.editor.SaveStateForUndo()
        self._write(after)  # the segment editor writes, then Slicer tells observers
        if self.known:
            self.owned |= slice_mask(SHAPE, numpyAxis, [index])
        self.expected = after
        return "paint"

    def mark(self):
        self.guidino_looks()
        axis, index = self._slice()
        self.logic.markSliceReviewed(self.segmentation, self.segmentId, index, axis=axis, volume=self.volume)
        self.owned |= slice_mask(SHAPE, self.axes[axis], [index])
        self.expected = np.where(self.owned, self.content(), self.expected)
        return "mark"

    def _tag(self):
        import vtk

        from GuiDINOSegmentLib.ReviewStore import REVIEW_TAG

        value = vtk.reference("")
        self.segmentation.GetSegmentation().GetSegment(self.segmentId).GetTag(REVIEW_TAG, value)
        return str(value)

    def _snapshot(self):
        self.snapshots = self.snapshots[-20:] + [(self.content(), self._tag(), self.owned.copy(),
                                                  self.expected.copy(), self.known)]

    def undo_last(self):
        """Slicer's Undo restores a state its history saved (before a change, or the current one at an undo):
        the oracle goes back to what it held at that moment, found by content (and review tag)."""
        if not self.editor.CanUndo():
            return "undo (nothing)"
        self._snapshot()
        self.editor.Undo()
        content, tag = self.content(), self._tag()
        same = [s for s in reversed(self.snapshots) if np.array_equal(s[0], content)]
        # the same review tag, unless the saved tag was behind its content (edits nobody watched, e.g. after a
        # scene reload) and GuiDINO has just brought it up to date
        match = next((s for s in same if s[1] == tag), same[0])
        self.owned, self.expected, self.known = match[2].copy(), match[3].copy(), match[4]
        return "undo"

    def reload_segmentation(self):
        path = self.tmp / f"seg-{len(self.apps)}-{self.rng.integers(1 << 30)}.seg.nrrd"
        self.apps[-1].save_segmentation(self.segmentation, path)
        self.segmentation = self.apps[-1].load_segmentation(path)
        self.segmentId = self.segmentation.GetSegmentation().GetSegmentIdBySegmentName("target")
        self._editor()
        return "reload .seg.nrrd"

    def reload_scene(self):
        folder = self.tmp / f"scene-{len(self.apps)}"
        folder.mkdir()
        for node in (self.volume, self.segmentation, self.logic.baselineVolume(self.segmentation, self.segmentId),
                     self.logic.guideVolume(self.volume)):
            if node is None:
                continue
            if node.GetStorageNode() is None:
                node.AddDefaultStorageNode()
            node.GetStorageNode().SetFileName(str(folder / (node.GetID() + (".seg.nrrd" if node is self.segmentation
                                                                           else ".nrrd"))))
            assert node.GetStorageNode().WriteData(node)
        self.scene.SetRootDirectory(str(folder))
        self.scene.SetURL(str(folder / "scene.mrml"))
        assert self.scene.Commit()
        names = (self.volume.GetName(), self.segmentation.GetName())
        self.apps.append(_start_slicer())
        self.scene.SetURL(str(folder / "scene.mrml"))
        assert self.scene.Import()
        self.volume = self.scene.GetFirstNode(names[0], "vtkMRMLScalarVolumeNode")
        self.segmentation = self.scene.GetFirstNode(names[1], "vtkMRMLSegmentationNode")
        self.segmentId = self.segmentation.GetSegmentation().GetSegmentIdBySegmentName("target")
        self._editor()
        return "reload scene"

    # -- what GuiDINO does ----------------------------------------------------------------------------
    def guidino_looks(self):
        """GuiDINO is about to look at the segment: if it never did, whatever the segment holds is the user's."""
        if not self.known:
            self.expected = self.content()
            self.owned |= self.expected > 0
            self.known = True

    def segment(self, cancel=False):
        self.guidino_looks()
        axis = AXES[int(self.rng.integers(0, 3))]
        count = SHAPE[self.axes[axis]]
        sliceRange = None
        if self.rng.random() < 0.5:
            first = int(self.rng.integers(0, count))
            sliceRange = (first, int(self.rng.integers(first, count)))
        event = threading.Event()
        progress = (lambda done, total: event.set()) if cancel else None
        self.logic.process(self.volume, self.segmentation, segmentName="target", model=self.model, axis=axis,
                           sliceRange=sliceRange, device="cpu", progressCallback=progress, cancelEvent=event)
        return "cancel midway" if cancel else "segment"

    def _train(self):
        from GuiDINOTrainLib import GuiDINOTrainLogic

        return GuiDINOTrainLogic(self.logic, modelsFolder=self.tmp / "models")

    def refine(self):
        from guidino.training.settings import RefineSettings

        self.guidino_looks()
        settings = RefineSettings(steps=2, time_budget=None, device="cpu", new_model=dict(LIGHT))
        result = self._train().refineFromCorrections(self.volume, self.segmentation, self.segmentId,
                                                     model=self.model, settings=settings)
        self.versions.append(result.bundle)
        return "refine"

    def rollback(self):
        if not self.versions:
            return "rollback (nothing)"
        self.guidino_looks()
        bundle = self.versions[int(self.rng.integers(0, len(self.versions)))]
        self._train().rollback(self.volume, self.segmentation, self.segmentId, bundle)
        return "rollback"

    ACTIONS = (("paint", 5), ("mark", 2), ("segment", 4), ("cancel", 1), ("undo", 2), ("reload_segmentation", 1),
               ("reload_scene", 1), ("refine", 1), ("rollback", 1))

    def step(self):
        names, weights = zip(*self.ACTIONS)
        name = names[int(self.rng.choice(len(names), p=np.asarray(weights) / sum(weights)))]
        run = {"paint": self.paint, "mark": self.mark, "segment": self.segment,
               "cancel": lambda: self.segment(cancel=True), "undo": self.undo_last,
               "reload_segmentation": self.reload_segmentation, "reload_scene": self.reload_scene,
               "refine": self.refine, "rollback": self.rollback}[name]
        try:
            action = run()
        except InputError as error:  # a clear refusal (e.g. nothing to refine yet): nothing may change
            TOTALS["refused"] += 1
            action = f"{name} (refused: {str(error)[:40]})"
        self.check(action)
        assert Geometry.from_ijk_to_ras(_ijk_to_ras(self.volume)).is_close(self.geometry, tol=1e-6)
        TOTALS["by_action"][name] = TOTALS["by_action"].get(name, 0) + 1
        return action

    def close(self):
        for app in reversed(self.apps):
            app.close()


def _start_slicer():
    """A Slicer session: a new scene, which the GuiDINO Segment module watches from startup (``watchEdits``)."""
    from GuiDINOSegmentLib.ReviewStore import watchScene

    app = HeadlessSlicer()
    watchScene(app.scene)
    return app


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@pytest.mark.parametrize("seed", sorted(set(range(FIRST_SEED, FIRST_SEED + SESSIONS)) | set(REGRESSION_SEEDS)))
def test_a_random_session_never_changes_the_users_voxels(seed, tmp_path, tiny_guide_dir):
    session = Session(seed, tmp_path, tiny_guide_dir)
    actions = []
    try:
        for _ in range(STEPS):
            actions.append(session.step())
    finally:
        session.close()
        TOTALS["sessions"] += 1
        TOTALS["steps"] += len(actions)
        TOTALS["user_voxels_lost"] += session.lost
        TOTALS["violations"] += len(session.violations)
        report = os.environ.get("GUIDINO_SESSIONS_REPORT")
        if report:
            Path(report).write_text(json.dumps(TOTALS, indent=2))
    assert session.lost == 0, f"user voxels changed: {session.violations}; steps: {actions}"
