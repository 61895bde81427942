"""The GuiDINO Train panel stays thin: its decisions and its background run, tested without the Slicer application.

The decisions live in ``GuiDINOTrainLib/TrainPanel.py``, the run in ``GuiDINOTrainLib/RefineRun.py`` (no qt, no
slicer import), and are tested directly: the pure helpers (check boxes -> parts, time budget, lists, progress,
status) and ``RefineRun`` (train on a worker thread, save / activate / write on the main thread,
cancel, scene close, removed nodes, errors) on a real headless MRML scene and a real tiny model.
``GuiDINOTrain.py`` imports ``qt`` and Slicer's scripted-module bases, which only the application
has; it is imported with small stand-ins for those names for the static checks: the module and
its run call only what the Logic defines, and the .ui matches the parameters.
"""

import ast
import importlib.util
import inspect
import re
import threading
import time
import traceback
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
from conftest import synthetic_volume

from GuiDINOSegmentLib.WorkerClient import JobState
from GuiDINOSegmentLib.JobPoller import statedProgress
from GuiDINOSegmentLib.JobWait import JobWait
from GuiDINOTrainLib import TrainPanel as panel
from GuiDINOTrainLib.RefineRun import RefineRun

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILE = ROOT / "GuiDINOTrain" / "GuiDINOTrain.py"
PANEL_FILE = ROOT / "GuiDINOTrain" / "GuiDINOTrainLib" / "TrainPanel.py"
RUN_FILE = ROOT / "GuiDINOTrain" / "GuiDINOTrainLib" / "RefineRun.py"
UI_FILE = ROOT / "GuiDINOTrain" / "Resources" / "UI" / "GuiDINOTrain.ui"
LIGHT = {"network": "unet", "input_size": 64, "widths": [8, 16, 32, 64, 128]}


# -- import the module file without the Slicer application -----------------------------------------
def _stub(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


class _Base:
    def __init__(self, *args, **kwargs):
        pass


@pytest.fixture(scope="module")
def train():
    stubs = {
        "qt": _stub("qt", QTimer=_Base),
        "slicer.i18n": _stub("slicer.i18n", tr=lambda text: text),
        "slicer.parameterNodeWrapper": _stub("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls,
                                             WithinRange=lambda *args: ("WithinRange", args)),
        "slicer.ScriptedLoadableModule": _stub("slicer.ScriptedLoadableModule", ScriptedLoadableModule=_Base,
                                               ScriptedLoadableModuleLogic=_Base, ScriptedLoadableModuleTest=_Base,
                                               ScriptedLoadableModuleWidget=_Base),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, module in stubs.items():
            patch.setitem(__import__("sys").modules, name, module)
        spec = importlib.util.spec_from_file_location("GuiDINOTrain_under_test", MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


# -- pure helpers --------------------------------------------------------------------------------
def test_parts_string_from_the_check_boxes():
    assert panel.trainParts(True, True, False) == "tokenbook+network"
    assert panel.trainParts(True, True, True) == "tokenbook+network+lora"
    assert panel.trainParts(False, False, True) == "lora"
    assert panel.trainParts(False, True, False) == "network"
    with pytest.raises(ValueError, match="Choose what to train"):
        panel.trainParts(False, False, False)


def test_parts_string_is_what_the_engine_parses():
    from guidino.training.settings import RefineSettings

    for flags in [(1, 1, 0), (1, 1, 1), (0, 0, 1), (1, 0, 1)]:
        expected = tuple(n for n, on in zip(("tokenbook", "network", "lora"), flags) if on)
        assert RefineSettings(train=panel.trainParts(*flags)).parts() == expected


def test_time_budget_zero_means_no_limit():
    assert panel.timeBudgetSeconds(0) is None
    assert panel.timeBudgetSeconds(None) is None
    assert panel.timeBudgetSeconds(90) == 90.0


def test_refine_problem_names_the_missing_input():
    assert "input volume" in panel.refineProblem(False, True, True, (True,))
    assert "segmentation" in panel.refineProblem(True, False, True, (True,))
    assert "segment" in panel.refineProblem(True, True, False, (True,))
    assert "what to train" in panel.refineProblem(True, True, True, (False, False, False))
    assert panel.refineProblem(True, True, True, (False, True, False)) == ""


def test_segment_choice_keeps_the_current_then_prefers_guidino():
    assert panel.pickSegmentId("b", ["a", "b"], "a") == "b"
    assert panel.pickSegmentId("gone", ["a", "g"], "g") == "g"
    assert panel.pickSegmentId("", ["a", "b"], None) == "a"
    assert panel.pickSegmentId("x", [], "x") == ""


def test_created_time_formatting():
    import datetime

    assert panel.formatCreated("2026-08-21T10:55:07+00:00", tz=datetime.timezone.utc) == "2026-08-21 10:55"
    two = datetime.timezone(datetime.timedelta(hours=2))
    assert panel.formatCreated("2026-08-21T10:55:07+00:00", tz=two) == "2026-08-21 12:55"
    assert panel.formatCreated(None) == "?"
    assert panel.formatCreated("yesterday") == "yesterday"


def _versions(folder):
    return [
        {"path": folder / "start", "created": "2026-08-21T10:00:00+00:00", "parent": None, "slices": []},
        {"path": folder / "liver-v001", "created": "2026-08-21T10:05:00+00:00", "parent": str(folder / "start"),
         "slices": [3, 4, 5, 9]},
        {"path": folder / "liver-v002", "created": "2026-08-21T10:09:00+00:00",
         "parent": str(folder / "liver-v001"), "slices": [3, 4, 5, 9, 12]},
    ]


def test_versions_list_newest_first_with_the_active_one_marked(tmp_path, monkeypatch):
    import datetime

    versions = _versions(tmp_path)
    monkeypatch.chdir(tmp_path)
    rows = panel.versionRows(versions, activeModel="liver-v001", tz=datetime.timezone.utc)  # relative path
    assert [Path(r.path).name for r in rows] == ["liver-v002", "liver-v001", "start"]
    assert [r.active for r in rows] == [False, True, False]
    assert rows[1].text == "liver-v001  (active)  2026-08-21 10:05  slices 3-5, 9"
    assert rows[2].text == "start  2026-08-21 10:00"
    assert "refined from liver-v001" in rows[0].toolTip and "not refined" in rows[2].toolTip
    assert panel.versionRows([], None) == []
    assert not any(r.active for r in panel.versionRows(versions, None))


def test_corrections_list_marks_what_the_active_model_was_trained_on(tmp_path):
    versions = _versions(tmp_path)
    trained = panel.activeVersionSlices(versions, tmp_path / "liver-v001")
    assert trained == [3, 4, 5, 9]
    assert panel.activeVersionSlices(versions, tmp_path / "elsewhere") is None
    corrections = {"axis": "axial", "slices": [9, 3, 14]}
    assert panel.correctionRows(corrections, trained) == [
        "Slice 3: in the active model", "Slice 9: in the active model", "Slice 14: new, not trained on yet"]
    assert panel.correctionRows(corrections, None)[0] == "Slice 3: new, not trained on yet"
    assert panel.correctionsSummary(corrections, trained) == "3 corrected axial slices (3, 9, 14), 1 new since the active model."
    assert "No corrections yet" in panel.correctionsSummary({"axis": "axial", "slices": []})
    assert panel.activeModelText(str(tmp_path / "liver-v002")) == "Active model: liver-v002"
    assert "none yet" in panel.activeModelText(None)


def test_progress_bar_shows_step_and_loss():
    assert panel.trainingProgress(None) == (0, "Preparing the training...")
    info = {"step": 30, "total": 150, "epoch": 10.0, "loss": 0.2134, "val_dice": None, "seconds": 12.2}
    assert panel.trainingProgress(info) == (20, "Training: step 30 / 150, loss 0.213, 12 s")
    assert panel.trainingProgress(info, timeBudget=20)[0] == 61  # the time budget runs out first
    assert panel.trainingProgress({"step": 5, "total": 0, "seconds": 99}, timeBudget=10)[0] == 100


def _result(**kw):
    values = {"bundle": Path("/m/liver-v003"), "slices": [3, 6, 8], "steps": 150, "seconds": 42.4,
              "stopped": "finished", "voxelsChanged": 0, "interpolated": []}
    return SimpleNamespace(**{**values, **kw})


def test_status_after_refine():
    assert panel.refineSummary(_result()) == (
        "Saved liver-v003 and made it the active model: 150 steps in 42 s on 3 corrected slices.")
    assert panel.refineSummary(_result(interpolated=[4, 5, 7])) == (
        "Saved liver-v003 and made it the active model: 150 steps in 42 s on 3 corrected slices and 3 beside them "
        "labelled by interpolation.")
    assert "time budget ran out" in panel.refineSummary(_result(stopped="time budget"))
    assert "discarded" in panel.refineSummary(_result(bundle=None))
    assert panel.resegmentAfterTraining(_result(), cancelRequested=False) == (True, "")
    again, note = panel.resegmentAfterTraining(_result(stopped="cancelled"), cancelRequested=True)
    assert not again and "not re-segmented" in note
    assert panel.resegmentAfterTraining(_result(bundle=None), cancelRequested=True) == (False, "")
    done = SimpleNamespace(slicesProcessed=9, seconds=3.2, cancelled=False, fusion=None)
    assert panel.segmentedSummary(done) == "9 slices re-segmented in 3 s; reviewed slices kept."
    assert "Cancelled" in panel.segmentedSummary(SimpleNamespace(slicesProcessed=2, seconds=1, cancelled=True,
                                                                 fusion=None))
    fusion = {"slices_by_source": {"user": 3, "model and interpolation": 8, "model": 2, "none": 12},
              "axis": "axial", "arrayAxis": 0, "suggested": 7}
    assert panel.segmentedSummary(SimpleNamespace(slicesProcessed=10, seconds=2, cancelled=False, fusion=fusion)) == (
        "10 slices re-segmented in 2 s; reviewed slices kept. Slices: 3 yours; 8 from the model and the shape between "
        "your slices; 2 from the model alone. Suggested next: axial slice 7.")


# -- RefineRun with a recording Logic (real threads, real scene) -----------------------------------
def _pollUntilDone(run, timeout=120):
    states, deadline = [], time.monotonic() + timeout
    while True:
        state = run.poll()
        states.append(state)
        if state.finished:
            return states
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.01)


class FakeWorkerJob:
    """A job of the worker process as the Logic hands it out (poll / cancel / latest), run on a thread here."""

    def __init__(self, compute):
        self.cancelEvent, self.latest = threading.Event(), None
        self.done = self.total = 0
        self.state = None
        self.thread = threading.Thread(target=self._run, args=(compute,), daemon=True)
        self.thread.start()

    def _run(self, compute):
        try:
            result, error = compute(self, self.cancelEvent), None
        except Exception as failure:
            result, error = None, failure
        details = "".join(traceback.format_exception(error)) if error else ""
        self.state = JobState(True, self.done, self.total, 0.0, result, error, details,
                                      self.cancelEvent.is_set())

    def poll(self):
        return self.state or JobState(False, self.done, self.total, 0.0, cancelRequested=self.cancelEvent.is_set())

    def cancel(self):
        self.cancelEvent.set()


class RecordingLogic:
    """The Logic's split as the panel uses it; records which calls happen on the main thread."""

    def __init__(self, stopped="finished", fail=None, block=None, saved=None):
        self.calls, self.stopped, self.fail, self.block, self.saved = [], stopped, fail, block, saved
        self.segmentLogic = self

    def _record(self, name):
        self.calls.append((name, threading.current_thread() is threading.main_thread()))

    def startRefine(self, prepared):
        self._record("startRefine")

        def compute(job, cancel):  # what the worker process does
            for step in (10, 20):
                job.latest = {"step": step, "total": 20, "epoch": 1, "loss": 0.5 / step, "val_dice": None,
                              "seconds": 0.1}
            if self.block is not None:
                self.block.wait(10)
            if self.fail:
                raise self.fail
            return SimpleNamespace(model="m", stopped="cancelled" if cancel.is_set() else self.stopped,
                                   bundle=self.saved)  # the worker saves the version as it ends

        return FakeWorkerJob(compute)

    def finishRefine(self, prepared, outcome):
        self._record("finishRefine")
        return _result(stopped=outcome.stopped, bundle=Path("/m/volume-v001"))

    def corrections(self, segmentation, segmentId, volume=None):
        self._record("corrections")
        return {"axis": "axial", "slices": [2]}

    def prepareSegmentation(self, inputVolume, segmentation, settings=None):
        self._record("prepareSegmentation")
        assert inputVolume.GetScene() is not None  # prepared from the scene, on the main thread
        return SimpleNamespace(settings=settings)

    def startSegmentation(self, job):
        self._record("startSegmentation")

        def compute(handle, cancel):
            handle.done = handle.total = 3
            return SimpleNamespace(model=job.settings.model, axis=job.settings.axis)

        return FakeWorkerJob(compute)

    def applySegmentation(self, job, prediction):
        self._record("applySegmentation")
        self.applied = (prediction.model, job.settings.segmentId, prediction.axis)
        return SimpleNamespace(slicesProcessed=3, seconds=0.5, cancelled=False, fusion=None)


PREPARED = SimpleNamespace(corrections={"axis": "coronal", "slices": [2]})  # what prepareRefine gave to train


@pytest.fixture
def scene_nodes(headless_slicer):
    volume = slicer.util.addVolumeFromArray(np.zeros((4, 8, 8), np.int16), name="volume")
    segmentation = headless_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentId = segmentation.GetSegmentation().AddEmptySegment("target", "target")
    return volume, segmentation, segmentId


def test_training_runs_in_a_worker_and_writes_on_the_main_thread(scene_nodes):
    logic = RecordingLogic()
    run = RefineRun(logic, *scene_nodes).train(PREPARED)
    states = _pollUntilDone(run)
    assert [(name, main) for name, main in logic.calls] == [
        ("startRefine", True), ("finishRefine", True), ("prepareSegmentation", True),
        ("startSegmentation", True), ("applySegmentation", True)]  # the work itself runs in the worker
    assert logic.applied == ("/m/volume-v001", "target", "coronal")  # along the axis trained on, not read again
    final = states[-1]
    assert final.error is None and run.stage == "done"
    assert final.message.startswith("Saved volume-v001 and made it the active model")
    assert final.message.endswith("3 slices re-segmented in 0 s; reviewed slices kept.")


def test_progress_text_while_training(scene_nodes):
    block = threading.Event()
    run = RefineRun(RecordingLogic(block=block), *scene_nodes, timeBudget=None).train(PREPARED)
    deadline = time.monotonic() + 10
    while run.job.latest is None or run.job.latest["step"] < 20:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    state = run.poll()
    assert not state.finished and state.percent == 100 and state.text.startswith("Training: step 20 / 20, loss 0.025")
    block.set()
    _pollUntilDone(run)


def test_cancel_keeps_the_version_and_skips_resegmentation(scene_nodes):
    block = threading.Event()
    logic = RecordingLogic(block=block)
    run = RefineRun(logic, *scene_nodes).train(PREPARED)
    assert not run.cancelRequested
    run.cancel()
    assert run.cancelRequested  # the button reads 'Cancelling...' until the worker stops
    block.set()
    final = _pollUntilDone(run)[-1]
    assert [name for name, _ in logic.calls] == ["startRefine", "finishRefine"]
    assert "cancelled, the weights so far were kept" in final.message and "not re-segmented" in final.message


def test_scene_close_writes_nothing(scene_nodes):
    block = threading.Event()
    logic = RecordingLogic(block=block)
    run = RefineRun(logic, *scene_nodes).train(PREPARED)
    run.abandon()
    block.set()
    final = _pollUntilDone(run)[-1]
    assert [name for name, _ in logic.calls] == ["startRefine"] and "scene was closed" in final.message
    assert "nothing was saved" in final.message


def test_scene_close_after_the_worker_saved_says_where_the_version_is(scene_nodes):
    block = threading.Event()
    logic = RecordingLogic(block=block, saved=Path("/m/volume-v004"))
    run = RefineRun(logic, *scene_nodes).train(PREPARED)
    run.abandon()
    block.set()
    final = _pollUntilDone(run)[-1]
    assert [name for name, _ in logic.calls] == ["startRefine"]  # not made active, nothing written
    assert "volume-v004 was saved in the models folder" in final.message and "not made active" in final.message
    assert "nothing was saved" not in final.message


def test_removed_segmentation_writes_nothing(scene_nodes, headless_slicer):
    block = threading.Event()
    logic = RecordingLogic(block=block)
    run = RefineRun(logic, *scene_nodes).train(PREPARED)
    headless_slicer.scene.RemoveNode(scene_nodes[1])
    block.set()
    final = _pollUntilDone(run)[-1]
    assert [name for name, _ in logic.calls] == ["startRefine"] and "removed" in final.message


def test_worker_error_reaches_the_gui(scene_nodes):
    run = RefineRun(RecordingLogic(fail=RuntimeError("CUDA out of memory")), *scene_nodes).train(PREPARED)
    final = _pollUntilDone(run)[-1]
    assert isinstance(final.error, RuntimeError) and "Traceback" in final.errorDetails


def test_main_thread_error_reaches_the_gui(scene_nodes):
    logic = RecordingLogic()
    logic.finishRefine = lambda prepared, outcome: (_ for _ in ()).throw(OSError("disk full"))
    final = _pollUntilDone(RefineRun(logic, *scene_nodes).train(PREPARED))[-1]
    assert isinstance(final.error, OSError) and "disk full" in final.errorDetails


def test_without_resegmenting_the_run_ends_once_the_version_is_active(scene_nodes):
    """The Segment Editor effect's Refine: the same run, stopped before the write (its preview and Apply write)."""
    logic = RecordingLogic()
    run = RefineRun(logic, *scene_nodes, resegment=False).train(PREPARED)
    final = _pollUntilDone(run)[-1]
    assert [name for name, _ in logic.calls] == ["startRefine", "finishRefine"]  # nothing re-segmented or written
    assert final.error is None and run.bundle == str(Path("/m/volume-v001"))
    assert final.message.startswith("Saved volume-v001 and made it the active model")


class RealTimeLoop:
    """A QEventLoop that sleeps ``ms`` of real time per timer interval (the worker job runs on a real thread)."""

    def __init__(self, timer, limit=60.0):
        self.timer, self.limit, self.running = timer, limit, False

    def exec(self):
        self.running, deadline = True, time.monotonic() + self.limit
        while self.running:
            assert self.timer.active and time.monotonic() < deadline
            time.sleep(self.timer.interval / 1000)
            self.timer.slot()

    def quit(self):
        self.running = False


class Timer:
    def __init__(self):
        self.slot, self.interval, self.active = None, None, False

    def connect(self, signal, slot):
        self.slot = slot

    def start(self, ms):
        self.interval, self.active = ms, True

    def stop(self):
        self.active = False


class CancellingDialog:
    def __init__(self, cancel):
        self.cancel, self.value, self.labelText = cancel, 0, ""

    @property
    def wasCanceled(self):
        return self.cancel

    def show(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("cancel", [False, True])
def test_the_effects_wait_follows_the_shared_run(scene_nodes, cancel):
    """The effect waits for a RefineRun as the panel polls it (JobWait on the run): same stages, same Cancel."""
    logic = RecordingLogic(block=threading.Event())
    threading.Timer(0.3, logic.block.set).start()
    run = RefineRun(logic, *scene_nodes, resegment=False).train(PREPARED)
    timer = Timer()
    state = JobWait(run, statedProgress, CancellingDialog(cancel), timer, RealTimeLoop(timer)).run()
    assert state.finished and state.error is None and run.cancelRequested == cancel
    assert [name for name, _ in logic.calls] == ["startRefine", "finishRefine"]
    assert ("cancelled, the weights so far were kept" in state.message) == cancel


def test_the_train_logic_makes_runs_on_itself(scene_nodes):
    from GuiDINOSegmentLib import GuiDINOSegmentLogic
    from GuiDINOTrainLib import GuiDINOTrainLogic

    logic = GuiDINOTrainLogic(GuiDINOSegmentLogic())
    run = logic.newRefineRun(*scene_nodes, timeBudget=20, resegment=False)
    assert isinstance(run, RefineRun) and run.logic is logic and (run.timeBudget, run.resegmentAfter) == (20, False)
    assert run.inputVolume is scene_nodes[0] and run.stage == "idle" and run.bundle is None


# -- RefineRun on the real engine ----------------------------------------------------------------
def test_refine_then_roll_back_on_the_real_engine(headless_slicer, tmp_path, tiny_guide_dir):
    from GuiDINOSegmentLib import GuiDINOSegmentLogic
    from guidino.bundle import build_model, save_bundle
    from guidino.model import ModelConfig
    from guidino.training.settings import RefineSettings

    image, truth = synthetic_volume(shape=(8, 48, 40))
    sitk.WriteImage(image, str(tmp_path / "volume.nrrd"))
    volume = headless_slicer.load_volume(tmp_path / "volume.nrrd")
    segmentation = headless_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    first = save_bundle(build_model(ModelConfig(**LIGHT), str(tiny_guide_dir)), tmp_path / "models" / "start")
    segmentLogic = GuiDINOSegmentLogic()
    segmentLogic.defaultModelPath = str(first)
    from GuiDINOTrainLib import GuiDINOTrainLogic

    logic = GuiDINOTrainLogic(segmentLogic, modelsFolder=tmp_path / "models")
    segmentId = segmentLogic.process(volume, segmentation, segmentName="target", device="cpu").segmentId
    original = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume).copy()
    corrected = original.copy()
    corrected[[2, 5]] = sitk.GetArrayFromImage(truth)[[2, 5]]
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, segmentation, segmentId, volume)
    assert logic.corrections(segmentation, segmentId)["slices"] == [2, 5]

    settings = RefineSettings(train=panel.trainParts(True, True, False), steps=4, time_budget=None, device="cpu")
    prepared = logic.prepareRefine(volume, segmentation, segmentId, resegment=False, settings=settings)
    run = RefineRun(logic, volume, segmentation, segmentId).train(prepared)
    training = run.job
    states = _pollUntilDone(run, timeout=600)
    final = states[-1]
    assert final.error is None, final.errorDetails
    # What each poll shows depends on when it ran (one poll may read every step the worker sent): the progress
    # the worker sent, as the panel words it, is checked on the training job itself.
    assert all(s.text.startswith(("Preparing the training", "Training: step", "Re-segmenting"))
               for s in states[:-1])
    assert panel.trainingProgress(training.latest)[1].startswith("Training: step 4 / 4, loss ")
    assert any(s.text.startswith("Re-segmenting") for s in states[:-1])
    assert run.refined.bundle.name == "volume-v001" and run.refined.steps == 4
    assert segmentLogic.activeModel(segmentation) == str(run.refined.bundle)
    after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
    np.testing.assert_array_equal(after[[2, 5]], corrected[[2, 5]])  # reviewed slices untouched
    assert logic.corrections(segmentation, segmentId)["slices"] == [2, 5]  # still the corrections
    rows = panel.versionRows(logic.versions(), segmentLogic.activeModel(segmentation))
    assert [(Path(r.path).name, r.active) for r in rows] == [("volume-v001", True), ("start", False)]

    # Roll back to the starting model: the unreviewed slices get its prediction again, exactly.
    logic.rollback(volume, segmentation, segmentId, first, resegment=False)
    rollback = RefineRun(logic, volume, segmentation, segmentId).resegment(first, "Rolled back.")
    final = _pollUntilDone(rollback, timeout=600)[-1]
    assert final.error is None, final.errorDetails
    assert final.message.startswith("Rolled back.") and "re-segmented" in final.message
    assert segmentLogic.activeModel(segmentation) == str(first)
    restored = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
    unreviewed = [k for k in range(8) if k not in (2, 5)]
    np.testing.assert_array_equal(restored[unreviewed], original[unreviewed])
    np.testing.assert_array_equal(restored[[2, 5]], corrected[[2, 5]])


# -- static checks of the module file and its .ui --------------------------------------------------
def _logicCalls(*paths):
    """{(owner, name): [call nodes]} for ``self.logic.<name>(`` (owner 'train') and
    ``self.logic.segmentLogic.<name>(`` (owner 'segment'); plus other ``self.logic.<name>`` attributes."""
    calls, other = {}, set()
    tree = ast.Module(body=[ast.parse(path.read_text()) for path in paths], type_ignores=[])
    called = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}

    def isSelfLogic(node):
        return (isinstance(node, ast.Attribute) and node.attr == "logic" and isinstance(node.value, ast.Name)
                and node.value.id == "self")

    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if isSelfLogic(node.value):
            if id(node) in called:
                calls.setdefault(("train", node.attr), []).append(called[id(node)])
            else:
                other.add(node.attr)
        elif isinstance(node.value, ast.Attribute) and node.value.attr == "segmentLogic" and isSelfLogic(
                node.value.value) and id(node) in called:
            calls.setdefault(("segment", node.attr), []).append(called[id(node)])
    return calls, other


def _logicClass(owner):
    if owner == "train":
        from GuiDINOTrainLib import GuiDINOTrainLogic

        return GuiDINOTrainLogic
    from GuiDINOSegmentLib import GuiDINOSegmentLogic

    return GuiDINOSegmentLogic


CALLS, OTHER = _logicCalls(MODULE_FILE, PANEL_FILE, RUN_FILE)  # the widget and the run it starts


def test_the_module_delegates_to_the_logic():
    names = {name for _, name in CALLS}
    assert {"prepareRefine", "newRefineRun", "startRefine", "finishRefine", "rollback", "versions",
            "corrections"} <= names
    assert {"prepareSegmentation", "startSegmentation", "applySegmentation", "activeModel"} <= names


@pytest.mark.parametrize("owner,name", sorted(CALLS), ids=lambda v: v if isinstance(v, str) else None)
def test_every_logic_call_names_a_logic_method_with_that_signature(owner, name):
    method = getattr(_logicClass(owner), name, None)
    assert callable(method), f"{_logicClass(owner).__name__} has no method {name}"
    signature = inspect.signature(method)
    for call in CALLS[(owner, name)]:
        assert not any(isinstance(a, ast.Starred) for a in call.args), ast.unparse(call)
        signature.bind(None, *call.args, **{k.arg: None for k in call.keywords})  # TypeError if it does not fit


def test_logic_attributes_the_module_reads_exist():
    from GuiDINOTrainLib import GuiDINOTrainLogic

    logic = GuiDINOTrainLogic()
    assert OTHER and all(hasattr(logic, name) for name in OTHER), OTHER


def test_dependency_check_never_runs_in_a_constructor():
    for node in ast.walk(ast.parse(MODULE_FILE.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name in ("__init__", "setup"):
            text = ast.unparse(node)
            assert "ensureDependencies" not in text and "ensureLogic" not in text, node.name


def test_the_module_never_writes_segments_directly():
    text = MODULE_FILE.read_text() + PANEL_FILE.read_text() + RUN_FILE.read_text()
    for forbidden in ("updateSegmentBinaryLabelmapFromArray", "SetBinaryLabelmapToSegment",
                      "ImportLabelmapToSegmentationNode"):
        assert forbidden not in text, forbidden


def test_module_file_has_the_scripted_module_classes():
    tree = ast.parse(MODULE_FILE.read_text())
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes["GuiDINOTrain"] == ["ScriptedLoadableModule"]
    assert classes["GuiDINOTrainWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["GuiDINOTrainTest"] == ["ScriptedLoadableModuleTest"]


def _parameterFields(train):
    return dict(train.GuiDINOTrainParameterNode.__annotations__)


def _ui():
    return ElementTree.parse(UI_FILE)


def test_parameters_are_saved_and_connected_to_the_ui(train):
    fields = _parameterFields(train)
    assert list(fields) == ["inputVolume", "segmentation", "segmentId", "trainTokenBook", "trainNetwork", "trainLoRA",
                            "timeBudget"]
    connected = {}
    for widget in _ui().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                connected[prop.find("string").text] = widget.get("class")
    assert sorted(connected) == sorted(set(fields) - {"segmentId"})  # the segment selector has no connector
    assert connected["inputVolume"] == connected["segmentation"] == "qMRMLNodeComboBox"
    assert connected["timeBudget"] == "QSpinBox"  # parameterNodeWrapper's int connector takes QSpinBox
    assert {connected[n] for n in ("trainTokenBook", "trainNetwork", "trainLoRA")} == {"QCheckBox"}
    defaults = train.GuiDINOTrainParameterNode
    from guidino.training.settings import REFINE_TIME_BUDGET

    assert (defaults.trainTokenBook, defaults.trainNetwork, defaults.trainLoRA, defaults.timeBudget) == (
        True, True, False, REFINE_TIME_BUDGET)


def test_every_ui_name_the_module_uses_exists():
    names = {w.get("name") for w in _ui().iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    assert used and used <= names, used - names


def test_mrml_widgets_get_the_scene_and_the_spin_box_reads_zero_as_no_limit(train):
    ui = _ui()
    mrml = {w.get("name") for w in ui.iter("widget") if w.get("class", "").startswith("qMRML")} - {"GuiDINOTrain"}
    wired = {c.find("receiver").text for c in ui.iter("connection") if c.find("signal").text.startswith("mrmlScene")}
    assert mrml == wired == {"inputVolumeSelector", "segmentationSelector", "segmentSelector"}
    spin = next(w for w in ui.iter("widget") if w.get("name") == "timeBudgetSpinBox")
    props = {p.get("name"): p for p in spin.findall("property")}
    assert props["minimum"].find("number").text == "0" and props["specialValueText"].find("string").text == "no limit"
    # the parameter's range is the spin box's: parameterNodeWrapper would otherwise reset its maximum
    assert _parameterFields(train)["timeBudget"].__metadata__ == (("WithinRange", (0, int(props["maximum"].find("number").text))),)
    selector = next(w for w in ui.iter("widget") if w.get("name") == "segmentSelector")
    visible = next(p for p in selector.findall("property") if p.get("name") == "segmentationNodeSelectorVisible")
    assert visible.find("bool").text == "false"
