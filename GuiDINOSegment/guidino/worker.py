"""The GuiDINO worker process: segments and refines for a GUI (3D Slicer), in its own Python.

Inside Slicer, Python threads barely run (PythonQt keeps the GIL on the main thread), so the model
runs here, in another process (``python -m guidino.worker``; Slicer starts it with ``PythonSlicer``).
It imports torch once, keeps the loaded model between jobs, and applies the CPU allocator setting,
so it segments as fast as ``guidino segment``. When first idle it imports MONAI (seconds), so that no refine
round waits for it.

Protocol, one JSON object per line (the requests and answers are typed in ``guidino.jobs``). Requests on
stdin: ``{"id", "kind": "segment"|"refine", "folder", "request"}``, ``{"cancel": id}``, ``{"quit": true}``. Events on stdout: ``{"event": "ready"}`` once,
``{"event": "warm", "seconds"}`` once it has imported MONAI, and per job ``{"id", "event": "progress", ...}``,
(``{"id", "event": "started"}`` first, when it leaves the queue), then ``{"id", "event": "done", "result"}``
or ``{"id", "event": "error", "message", "details"}``. Arrays
travel as ``.npy`` files in the job's folder (``image.npy``, ``labels.npy`` in; ``labels.npy``,
``probability.npy``, ``guide.npy``, ``processed.npy`` out). Everything else the libraries print goes to stderr.
"""

import json
import os
import sys
import threading
import traceback
from pathlib import Path

PROTOCOL = 1
# Seconds without a request before the worker imports MONAI (6 s on a 2-core CPU that a refine round would
# otherwise pay), once: a job sent with the start, or a Run again after a result is written (about 1.5 s for a
# 512x512 CT), arrives within this and waits for no warm-up; a job that arrives during it waits once.
IDLE_BEFORE_WARM_UP = 5.0


class _Jobs:
    """Requests arrive on a reader thread; jobs run one at a time on the main thread of this process."""

    def __init__(self, out):
        self.out, self.lock = out, threading.Lock()
        self.queue, self.ready = [], threading.Condition()
        self.cancels = {}  # job id -> threading.Event

    def send(self, **event):
        with self.lock:
            self.out.write(json.dumps(event) + "\n")
            self.out.flush()

    def read(self, stream):
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self.ready:
                if "cancel" in message:
                    self.cancels.setdefault(message["cancel"], threading.Event()).set()
                else:
                    if "id" in message:
                        self.cancels.setdefault(message["id"], threading.Event())
                    self.queue.append(message)
                self.ready.notify()
        with self.ready:  # stdin closed: the GUI is gone
            self.queue.append({"quit": True})
            self.ready.notify()

    def next(self, timeout=None):
        """The next request; None when ``timeout`` seconds pass without one."""
        with self.ready:
            if not self.ready.wait_for(lambda: self.queue, timeout):
                return None
            return self.queue.pop(0)


class _Models:
    """One loaded model at a time, kept while the bundle (and the guide asked for) is unchanged."""

    def __init__(self):
        self.key, self.model, self.loads = None, None, 0

    def get(self, bundle, guide):
        from .bundle import load_bundle

        config = Path(bundle) / "config.json"
        key = (str(Path(bundle).resolve()), config.stat().st_mtime_ns if config.is_file() else None, guide)
        if key != self.key:
            self.key, self.model = None, None  # release the old model first
            self.model, self.key = load_bundle(bundle, guide=guide), key
            self.loads += 1
        return self.model


def _segment(message, folder, models, progress, cancel):
    import numpy as np

    from .imageio import ImageData
    from .inference import segment_volume
    from .jobs import SEGMENT_ARRAYS_OUT, SegmentRequest, segmentation_answer

    request = SegmentRequest.from_message(message)
    image = ImageData(np.load(folder / "image.npy"), request.geometry, request.is_2d)
    model = models.get(request.bundle, request.guide)
    result = segment_volume(model, image, axis=request.axis, slices=request.slices, batch_size=request.batch_size,
                            device=request.device, guide_stride=request.guide_stride, cancel=cancel,
                            progress=lambda done, total: progress(done=done, total=total))
    for name in SEGMENT_ARRAYS_OUT:
        if getattr(result, name) is not None:
            np.save(folder / f"{name}.npy", getattr(result, name))
    return {**segmentation_answer(result), "model_loads": models.loads}


def _refine(message, folder, models, progress, cancel):
    import numpy as np

    from .imageio import ImageData
    from .jobs import RefineRequest, refine_answer
    from .training.refine import refine_model, save_version
    from .training.settings import RefineSettings

    request = RefineRequest.from_message(message)
    image = ImageData(np.load(folder / "image.npy"), request.geometry, False)
    labels = np.load(folder / "labels.npy")
    start = models.get(request.parent, request.guide) if request.parent else None
    result = refine_model(image, labels, request.slices, model=start, guide=request.guide, axis=request.axis,
                          settings=RefineSettings(**request.settings), cancel=cancel,
                          progress=lambda entry: progress(entry=entry))
    bundle = None
    if result.model is not None:
        bundle = save_version(result, request.models_folder, request.stem, parent=request.parent,
                              volume=request.volume, axis=request.axis)
    return refine_answer(result, bundle)


KINDS = {"segment": _segment, "refine": _refine}


def serve(stdin=None, stdout=None):
    """Answer requests until told to quit or stdin closes.

    The protocol goes out on a duplicate of the standard output's descriptor, and descriptor 1 itself is pointed
    at the standard error: what native code prints (a library's C++ ``printf``) cannot corrupt the protocol.
    """
    if stdout is None:
        sys.stdout.flush()
        out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
    else:
        out = stdout
    sys.stdout = sys.stderr  # what Python code prints must not mix with the protocol
    from .runtime import preload_monai, tune_cpu_allocator

    tune_cpu_allocator()
    import torch  # noqa: F401  (imported once, before the first job)

    jobs, models = _Jobs(out), _Models()
    threading.Thread(target=jobs.read, args=(stdin or sys.stdin,), daemon=True).start()
    jobs.send(event="ready", protocol=PROTOCOL, pid=os.getpid())
    warm = False
    while True:
        message = jobs.next(timeout=None if warm else IDLE_BEFORE_WARM_UP)
        if message is None:  # idle: load what a refine round needs, off the user's round
            try:
                seconds = round(preload_monai(), 3)
            except Exception:  # a broken install: the job that needs MONAI reports it, the worker goes on
                seconds = None
            jobs.send(event="warm", seconds=seconds)
            warm = True
            continue
        if message.get("quit"):
            return 0
        job = message.get("id")
        jobs.send(id=job, event="started")
        try:
            run = KINDS[message["kind"]]
            result = run(message["request"], Path(message["folder"]), models,
                         lambda **event: jobs.send(id=job, event="progress", **event), jobs.cancels[job])
            jobs.send(id=job, event="done", result=result)
        except Exception as error:  # reported to the GUI, which shows it; the worker goes on
            text = str(error).strip().splitlines()
            jobs.send(id=job, event="error", message=text[0] if text else type(error).__name__,
                      kind=type(error).__name__, details=traceback.format_exc())
        finally:
            jobs.cancels.pop(job, None)


if __name__ == "__main__":
    sys.exit(serve())
