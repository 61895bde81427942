"""The GuiDINO worker process, as a real subprocess on real MRML: what Slicer runs its models in."""

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
from conftest import synthetic_volume
from test_cli import guidino

from GuiDINOSegmentLib import GuiDINOSegmentLogic
from GuiDINOSegmentLib import WorkerClient as workerClientModule
from GuiDINOSegmentLib.SegmentSettings import SegmentSettings
from GuiDINOSegmentLib.WorkerClient import WorkerError, WorkerProcess, startSharedWorker
from guidino.geometry import Geometry
from guidino.jobs import SegmentRequest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_guide_dir):
    from guidino.bundle import build_model, save_bundle
    from guidino.model import ModelConfig

    import torch

    torch.manual_seed(0)
    model = build_model(ModelConfig(network="unet", input_size=64, widths=[8, 16, 32]), str(tiny_guide_dir))
    return save_bundle(model, tmp_path_factory.mktemp("models") / "bundle")


@pytest.fixture
def worker(monkeypatch):
    process = WorkerProcess()
    monkeypatch.setattr(workerClientModule, "_shared", process)  # the Logics' shared worker, for this test
    yield process
    process.close()


@pytest.fixture
def scene(headless_slicer, tmp_path):
    image, _ = synthetic_volume(shape=(24, 48, 40))
    path = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(path))
    segmentation = headless_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    return path, headless_slicer.load_volume(path), segmentation


def _prepare(logic, scene, bundle, **settings):
    _, volume, segmentation = scene
    return logic.prepareSegmentation(volume, segmentation,
                                     SegmentSettings(**{"model": str(bundle), "device": "cpu", "batchSize": 2, **settings}))


def test_a_segment_through_the_worker_equals_guidino_segment(scene, bundle, worker, tmp_path):
    path, volume, segmentation = scene
    logic = GuiDINOSegmentLogic()
    job = _prepare(logic, scene, bundle)
    handle = logic.startSegmentation(job)
    seen = []
    state = handle.poll()
    while not state.finished:
        seen.append((state.done, state.total))
        time.sleep(0.01)
        state = handle.poll()
    assert state.error is None, state.errorDetails
    done = [d for d, _ in seen if d]
    assert done == sorted(done) and state.done == state.total == 24  # progress arrives in order
    result = logic.applySegmentation(job, state.result)

    cli = guidino("segment", "--model", bundle, "--input", path, "--output", tmp_path / "cli.nrrd", "--device", "cpu",
                  "--batch-size", 2)
    assert cli.returncode == 0, cli.stderr
    expected = sitk.ReadImage(str(tmp_path / "cli.nrrd"))
    got = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, result.segmentId, volume)
    np.testing.assert_array_equal(got, sitk.GetArrayFromImage(expected))
    assert Geometry.from_sitk(expected).is_close(Geometry.from_sitk(sitk.ReadImage(str(path))), tol=1e-6)
    assert state.result.geometry.is_close(Geometry.from_sitk(expected), tol=1e-6)


def test_the_worker_advances_while_the_main_thread_is_busy(scene, bundle, worker):
    logic = GuiDINOSegmentLogic()
    warm = logic.startSegmentation(_prepare(logic, scene, bundle, sliceRange=0)).wait(300)  # started and loaded
    assert warm.error is None, warm.errorDetails
    handle = logic.startSegmentation(_prepare(logic, scene, bundle, batchSize=1))
    spin = time.monotonic() + 10
    while time.monotonic() < spin:  # Python busy on the main thread: no sleep, no poll, no I/O
        pass
    state = handle.poll()  # one read of what arrived meanwhile: the worker advanced without the main thread
    assert state.error is None and state.done >= 12, state  # (on 2 cores the spinning thread takes one)
    state = handle.wait(300)
    assert state.finished and state.error is None and state.done == 24


def test_cancel_keeps_the_finished_slices_and_leaves_no_process(scene, bundle, worker):
    logic = GuiDINOSegmentLogic()
    job = _prepare(logic, scene, bundle, batchSize=1)
    handle = logic.startSegmentation(job)
    state = handle.poll()
    while not state.done:
        time.sleep(0.005)
        state = handle.poll()
    handle.cancel()
    state = handle.wait(60)
    assert state.error is None and state.result.cancelled
    processed = int(state.result.processed.sum())
    assert 0 < processed < 24
    result = logic.applySegmentation(job, state.result)
    assert result.cancelled and result.slicesProcessed == processed
    pid = worker.process.pid
    worker.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_killed_worker_gives_a_clear_error_and_the_next_job_succeeds(scene, bundle, worker):
    logic = GuiDINOSegmentLogic()
    handle = logic.startSegmentation(_prepare(logic, scene, bundle, batchSize=1))
    deadline = time.monotonic() + 300
    while not worker.ready and time.monotonic() < deadline:
        worker.pump()
        time.sleep(0.01)
    os.kill(worker.process.pid, signal.SIGKILL)
    state = handle.wait(60)
    assert state.finished and isinstance(state.error, WorkerError)
    assert "worker process was killed (signal 9)" in str(state.error) and "a new worker starts" in str(state.error)
    again = logic.startSegmentation(_prepare(logic, scene, bundle)).wait(300)
    assert again.error is None and again.done == 24 and worker.starts == 2


def _pump_until(worker, condition, seconds=300):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        worker.pump()
        time.sleep(0.02)
    return condition()


def test_opening_a_module_starts_the_worker_which_warms_up_when_idle_not_before_a_job(scene, bundle, worker):
    assert startSharedWorker() and worker.alive and worker.starts == 1  # a module opening
    assert startSharedWorker() and worker.starts == 1  # it runs: not started twice
    logic = GuiDINOSegmentLogic()
    first = worker.submit(_request(logic, scene, bundle), {"image": _image(scene)}).wait(300)
    assert first.error is None and not worker.warm  # a job sent with the start did not wait for the warm-up
    assert _pump_until(worker, lambda: worker.warm)  # idle: it imports what a refine round needs
    again = worker.submit(_request(logic, scene, bundle), {"image": _image(scene)}).wait(300)
    assert again.error is None and again.result["model_loads"] == 1 and worker.starts == 1


def test_a_broken_monai_install_leaves_the_worker_serving(scene, bundle, tmp_path):
    broken = tmp_path / "site" / "monai"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('monai is broken in this install')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(broken.parent), os.environ.get("PYTHONPATH")) if p))
    worker = WorkerProcess(env=env)
    try:
        worker.start()
        _pump_until(worker, lambda: worker.warm or not worker.alive)
        assert worker.warm and worker.alive  # the warm-up failed and said so; the worker goes on
        request = _request(GuiDINOSegmentLogic(), scene, bundle)
        state = worker.submit(request, {"image": _image(scene)}).wait(300)
        assert state.error is None and worker.alive and worker.starts == 1
    finally:
        worker.close()


def test_two_jobs_on_one_bundle_load_it_once(scene, bundle, worker):
    logic = GuiDINOSegmentLogic()
    first = worker.submit(_request(logic, scene, bundle), {"image": _image(scene)}).wait(300)
    second = worker.submit(_request(logic, scene, bundle), {"image": _image(scene)}).wait(300)
    assert first.error is None and second.error is None
    assert first.result["model_loads"] == second.result["model_loads"] == 1


def test_an_engine_error_reaches_the_gui_as_one_line(scene, bundle, worker):
    logic = GuiDINOSegmentLogic()
    request = dataclasses.replace(_request(logic, scene, bundle), slices=[99])
    state = worker.submit(request, {"image": _image(scene)}).wait(300)
    assert isinstance(state.error, WorkerError) and str(state.error).startswith("slice 99 does not exist")
    assert worker.alive  # the worker goes on


def _image(scene):
    return slicer.util.arrayFromVolume(scene[1])


def _request(logic, scene, bundle):
    geometry = logic.prepareSegmentation(scene[1], scene[2], model=str(bundle)).image.geometry
    return SegmentRequest(str(bundle), None, "axial", geometry, False, list(range(24)), 4, "cpu", "auto")


# -- what a real Slicer does that a plain subprocess does not ------------------------------------------------
def _launcher(tmp_path):
    """A stand-in for CTK's launcher (``PythonSlicer``): it starts the real interpreter as its child and waits."""
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                        f"sys.exit(subprocess.call([{sys.executable!r}] + sys.argv[1:]))\n")
    launcher.chmod(0o755)
    return launcher


def _gone(pid, seconds=10):
    """Whether process ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/status").read_text()
            if "\nState:\tZ" in state:
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("when", ["after it said ready", "before it said ready"])
def test_ending_the_worker_ends_the_interpreter_behind_slicers_launcher(tmp_path, when):
    worker = WorkerProcess(python=str(_launcher(tmp_path)))
    worker.start()
    launcher = worker.process.pid
    if when == "after it said ready":
        assert _pump_until(worker, lambda: worker.ready)
        interpreter = worker.pid
        assert interpreter != launcher  # the model would live in the launcher's child
    else:
        deadline = time.monotonic() + 30
        children = []
        while not children and time.monotonic() < deadline:  # the launcher has started the interpreter
            children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
            time.sleep(0.01)
        interpreter = int(children[0])
    worker.kill()
    assert _gone(launcher) and _gone(interpreter), "a worker process outlived Cancel/kill"
    worker.close()


def test_cancelling_a_queued_job_leaves_the_running_one_alone(scene, bundle, worker, monkeypatch):
    """Two panels share the worker: the second one's job, cancelled while it waits behind the first, is not timed
    (it stops when it starts); the first one's job completes and the worker is not ended."""
    monkeypatch.setattr(workerClientModule, "STOP_TIMEOUT", 0.2)
    logic = GuiDINOSegmentLogic()
    running = logic.startSegmentation(_prepare(logic, scene, bundle, batchSize=1))
    queued = logic.startSegmentation(_prepare(logic, scene, bundle))
    queued.cancel()
    deadline = time.monotonic() + 300
    first, second = running.poll(), queued.poll()
    while not (first.finished and second.finished) and time.monotonic() < deadline:  # both panels' timers
        time.sleep(0.02)
        first, second = running.poll(), queued.poll()
    assert first.error is None and first.done == 24, first.errorDetails
    assert second.error is None and second.result.cancelled and not second.result.processed.any()
    assert worker.starts == 1 and worker.alive


def test_a_folder_named_like_a_package_in_slicers_current_folder_shadows_nothing(scene, bundle, tmp_path,
                                                                                  monkeypatch):
    for name in ("torch", "guidino"):
        (tmp_path / "cwd" / name).mkdir(parents=True)
        (tmp_path / "cwd" / name / "__init__.py").write_text(f"raise ImportError('a stray {name}/ folder')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    worker = WorkerProcess()
    try:
        state = worker.submit(_request(GuiDINOSegmentLogic(), scene, bundle), {"image": _image(scene)}).wait(300)
        assert state.error is None, state.errorDetails
    finally:
        worker.close()


def test_what_native_code_prints_on_the_standard_output_never_reaches_the_protocol(scene, bundle, tmp_path):
    """A library writing to file descriptor 1 (here: at import, during the idle warm-up) goes to the log: a forged
    event and lines that are not protocol objects never reach the GUI."""
    noisy = tmp_path / "site" / "monai"
    noisy.mkdir(parents=True)
    (noisy / "__init__.py").write_text(
        "import os\nos.write(1, b'native noise\\n[1, 2]\\n\"text\"\\n{\"id\": 1, \"event\": \"error\", "
        "\"message\": \"forged\"}\\n')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(noisy.parent), os.environ.get("PYTHONPATH")) if p))
    worker = WorkerProcess(env=env)
    try:
        worker.start()
        assert _pump_until(worker, lambda: worker.warm or not worker.alive) and worker.alive
        state = worker.submit(_request(GuiDINOSegmentLogic(), scene, bundle), {"image": _image(scene)}).wait(300)
        assert state.error is None and state.done == 24, state.error
        worker._log.seek(0)
        assert "native noise" in worker._log.read()
    finally:
        worker.close()


def test_the_client_skips_lines_that_are_not_protocol_messages(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                    "sys.stdout.write('[1, 2]\\nnot json\\n\"text\"\\n{\"event\": \"ready\", \"pid\": 7}\\n')\n"
                    "sys.stdout.flush()\ntime.sleep(30)\n")
    fake.chmod(0o755)
    worker = WorkerProcess(python=str(fake))
    try:
        worker.start()
        assert _pump_until(worker, lambda: worker.ready, seconds=30) and worker.pid == 7
    finally:
        worker.kill()


def test_slicer_quitting_ends_the_worker_and_its_running_job(scene, bundle, worker):
    import ast

    module = ast.unparse(ast.parse((Path(workerClientModule.__file__).parents[1] / "GuiDINOSegment.py").read_text()))
    assert 'slicer.app.connect("aboutToQuit()", closeSharedWorker)' in module.replace("'", '"')
    logic = GuiDINOSegmentLogic()
    handle = logic.startSegmentation(_prepare(logic, scene, bundle, batchSize=1))
    assert _pump_until(worker, lambda: handle.startedAt is not None)
    launcher = worker.process.pid
    started = time.monotonic()
    workerClientModule.closeSharedWorker()  # what Slicer's aboutToQuit calls
    assert time.monotonic() - started < 4 and _gone(launcher)
    assert handle.poll().finished and workerClientModule._shared is None


def test_a_cancel_or_a_quit_never_starts_a_worker(tmp_path):
    """Delivering a cancel or a quit to a worker that is not running is a no-op: no process is started for it."""
    worker = WorkerProcess(python=sys.executable)
    job = workerClientModule.WorkerJob(worker, "a-job", tmp_path)  # the job of a worker that has died or never ran
    job.cancel()
    worker.close()
    assert job.cancelRequested and worker.starts == 0 and worker.process is None
