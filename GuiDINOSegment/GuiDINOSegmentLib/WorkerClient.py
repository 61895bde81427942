"""Slicer's side of the GuiDINO worker process (``guidino.worker``): start it, send it jobs, read its events.

Slicer's Python threads barely run (PythonQt holds the GIL while the GUI is idle), so the model runs in
another process, started when a GuiDINO module opens or on first use, with Slicer's own Python
(``PythonSlicer``; ``sys.executable`` headless). Nothing here blocks: the GUI polls jobs from a timer
(``WorkerJob.poll`` reads whatever events have arrived). Cancel asks the worker to stop between slice batches
(the slices done are kept); a running job that does not stop within a few seconds has the worker ended, and
the jobs queued behind it go to a new one (a job still queued when cancelled is not timed: it stops as soon as
it starts). A worker that dies (out of memory, a crash, ``kill -9``) fails its job with a clear message, and the
next job starts a new one.

``PythonSlicer`` is CTK's launcher: it starts the real interpreter as its child. The worker runs in a process
group (a session) of its own, and ending it ends the whole group, the interpreter that holds the model
included. It starts in the engine's folder, so that no ``torch/`` or ``guidino/`` folder in Slicer's current
folder shadows the real packages (paths sent to it are absolute). No torch here.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np



@dataclass
class JobState:
    """What a worker job's ``poll()`` reads: finished or not, slices (or steps) done of total, seconds since it
    started, and once finished its result or error (``WidgetHelpers.progressReport`` turns it into a progress
    bar's percent and text)."""

    finished: bool
    done: int
    total: int
    elapsed: float
    result: Any = None
    error: Optional[BaseException] = None
    errorDetails: str = ""
    cancelRequested: bool = False

ENGINE_FOLDER = Path(__file__).resolve().parents[1]  # holds the guidino package (GuiDINOSegment/)
STOP_TIMEOUT = 5.0  # seconds a cancelled job may take to stop before the worker is ended


class WorkerError(RuntimeError):
    """The worker failed a job (its message names the problem) or ended."""


def absoluteSource(source):
    """A guide or bundle source as the worker must get it: a local path made absolute (the worker runs in another
    folder), a hub id as it is; None stays None."""
    if source is None:
        return None
    local = Path(str(source)).expanduser()
    return str(local.resolve()) if local.exists() else str(source)


def workerPython():
    """Slicer's ``PythonSlicer`` inside the application (on PATH there), else this Python."""
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:
            found = shutil.which("PythonSlicer")
            if found:
                return found
    except ImportError:
        pass
    return sys.executable


class WorkerProcess:
    """One GuiDINO worker process, started on the first job; ``python`` and ``env`` for tests."""

    def __init__(self, python=None, env=None):
        self.python, self.env = python, env
        self.process = None
        self.pid = None  # the interpreter that runs the jobs (the launcher's child inside Slicer), once ready
        self.jobs = {}
        self._buffer = b""
        self._next = 0
        self._log = None
        self.ready = False
        self.warm = False  # it has imported what a refine round needs (it does when first idle)
        self.starts = 0

    # -- the process ---------------------------------------------------------------------------
    @property
    def alive(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        """Start the process now (it never waits for it) unless it runs: a GUI does when a module opens."""
        if not self.alive:
            self._start()

    def _start(self):
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE_FOLDER), env.get("PYTHONPATH")) if p)
        self._log = tempfile.TemporaryFile(mode="w+", prefix="guidino-worker-")
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        self.process = subprocess.Popen([self.python or workerPython(), "-u", "-m", "guidino.worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
                                        cwd=str(ENGINE_FOLDER), creationflags=flags,
                                        start_new_session=os.name == "posix")
        os.set_blocking(self.process.stdout.fileno(), False)  # pump() never waits for the worker
        self._buffer, self.ready, self.warm, self.pid = b"", False, False, None
        self.starts += 1

    def _send(self, message, start=True):
        """Write one request; ``start``: start a worker that is not running (a cancel or quit never needs to)."""
        if start:
            self.start()
        elif not self.alive:
            return
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker died: the next pump reports it to the job

    def pump(self):
        """Read the events that have arrived (never waits) and hand them to their jobs."""
        if self.process is None:
            return
        while True:
            try:
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except (OSError, ValueError):  # the pipe is closed
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):  # not a protocol message (something printed on the pipe)
                logging.warning("GuiDINO worker: ignored a line that is not a protocol message: %.200r", line)
                continue
            if event.get("event") == "ready":
                self.ready, self.pid = True, event.get("pid")
            elif event.get("event") == "warm":
                self.warm = True
            elif event.get("id") in self.jobs:
                self.jobs[event["id"]]._event(event)
        if not self.alive:
            reason = self._exitReason()
            for job in list(self.jobs.values()):
                job._died(reason)

    def _exitReason(self):
        code = self.process.poll()
        text = ""
        if self._log is not None:
            self._log.seek(0)
            lines = [line for line in self._log.read().splitlines() if line.strip()]
            text = lines[-1].strip() if lines else ""
        how = f"was killed (signal {-code})" if code is not None and code < 0 else f"ended (exit code {code})"
        return (f"GuiDINO's worker process {how} before it finished: out of memory, a crash, or it was stopped"
                + (f" ({text})" if text else "") + ". Run again: a new worker starts.")

    def submit(self, request, arrays, convert=None):
        """Start a job: ``request`` a ``guidino.jobs`` request (SegmentRequest, RefineRequest), ``arrays``
        {name: numpy array} go to the worker as .npy files. Returns a WorkerJob whose result is
        ``convert(job, answer)`` (default: the worker's answer dict) once it is done."""
        self._next += 1
        folder = Path(tempfile.mkdtemp(prefix=f"guidino-{request.kind}-"))
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
        job = WorkerJob(self, self._next, folder, convert)
        job.message = {"id": job.id, "kind": request.kind, "folder": str(folder), "request": request.to_message()}
        self.jobs[job.id] = job
        self._send(job.message)
        return job

    def kill(self):
        """End the worker and everything it started (the launcher's interpreter too)."""
        if self.process is None:
            return
        if os.name == "posix":
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the launcher and the interpreter
            except (ProcessLookupError, PermissionError):
                pass
        elif self.process.poll() is None:  # Windows: the process tree
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def restartWithout(self, job):
        """End a worker that runs ``job`` and will not stop; the jobs queued behind it go to a new worker."""
        self.kill()
        self.pump()  # what arrived before the end (a job that did finish keeps its result)
        waiting = [other for other in self.jobs.values() if other is not job and other.startedAt is None]
        self.process = None
        for other in waiting:
            self._send(other.message)

    def close(self, timeout=5.0):
        """Ask the worker to quit (ending it if it does not), and forget its jobs."""
        if self.process is not None:
            self._send({"quit": True}, start=False)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        for job in list(self.jobs.values()):
            job._died("GuiDINO's worker was closed")
        self.process = None


class WorkerJob:
    """One job of the worker: ``poll()`` (a JobState; reads what arrived, never waits), ``cancel()``, ``wait()``."""

    def __init__(self, worker, id, folder, convert=None, clock=time.monotonic):
        self.worker, self.id, self.folder, self._convert, self._clock = worker, id, folder, convert, clock
        self.started = clock()
        self.startedAt = None  # when the worker began to run it (it may wait behind another job until then)
        self.message = None
        self.done = self.total = 0
        self.latest = None  # the latest training progress entry (refine jobs)
        self.result = self.error = None
        self.errorDetails = ""
        self.finished = False
        self.cancelRequested = False
        self._cancelledAt = None

    def _event(self, event):
        kind = event.get("event")
        if kind == "started":
            self.startedAt = self._clock()
        elif kind == "progress":
            if "entry" in event:
                self.latest = event["entry"]
                self.done, self.total = int(event["entry"].get("step", 0)), int(event["entry"].get("total", 0))
            else:
                self.done, self.total = int(event["done"]), int(event["total"])
        elif kind == "done":
            try:
                result = event["result"] if self._convert is None else self._convert(self, event["result"])
            except Exception as error:  # results that cannot be read (a full temporary disk)
                self._finish(error=WorkerError(f"GuiDINO could not read the worker's result: {error}"))
            else:
                self._finish(result=result)
        elif kind == "error":
            self._finish(error=WorkerError(event.get("message", "the worker failed")), details=event.get("details", ""))

    def _died(self, reason):
        if not self.finished:
            self._finish(error=WorkerError(reason))

    def _finish(self, result=None, error=None, details=""):
        self.result, self.error, self.errorDetails, self.finished = result, error, details, True
        self.worker.jobs.pop(self.id, None)
        shutil.rmtree(self.folder, ignore_errors=True)  # the result is read by now

    def cancel(self):
        if not self.finished and not self.cancelRequested:
            self.cancelRequested, self._cancelledAt = True, self._clock()
            self.worker._send({"cancel": self.id}, start=False)

    def poll(self):
        self.worker.pump()
        if not self.finished and self.cancelRequested and self.startedAt is not None \
                and self._clock() - max(self._cancelledAt, self.startedAt) > STOP_TIMEOUT:
            self.worker.restartWithout(self)  # it does not stop: end it; the jobs queued behind it go on
            self._finish(error=WorkerError(f"GuiDINO's worker did not stop within {STOP_TIMEOUT:g} s of Cancel; "
                                           "it was ended, and nothing was written"))
        return JobState(self.finished, self.done, self.total, self._clock() - self.started, self.result,
                        self.error, self.errorDetails, self.cancelRequested)

    def wait(self, timeout=None, interval=0.02):
        """Poll until the job ends (tests and scripts; the GUI polls from a timer instead)."""
        deadline = None if timeout is None else self._clock() + timeout
        state = self.poll()
        while not state.finished and (deadline is None or self._clock() < deadline):
            time.sleep(interval)
            state = self.poll()
        return state

    def array(self, name):
        """A result array the worker wrote (None if it wrote none); for ``convert``."""
        path = self.folder / f"{name}.npy"
        return np.load(path) if path.is_file() else None


def waitForJob(job, onProgress=None, cancelEvent=None, interval=0.02):
    """Wait for a worker job in a script (a GUI polls from a timer instead): its result, or its error raised.

    ``onProgress(job, state)`` after each change of progress; ``cancelEvent`` (threading.Event) cancels the job,
    which then ends with what it did (the slices done, or no new version).
    """
    state, seen = job.poll(), None
    while not state.finished:
        if cancelEvent is not None and cancelEvent.is_set():
            job.cancel()
        if onProgress is not None and (state.done, state.total) != seen:
            seen = (state.done, state.total)
            onProgress(job, state)
        time.sleep(interval)
        state = job.poll()
    if state.error is not None:
        raise state.error
    return state.result


_shared = None


def sharedWorker():
    """The GuiDINO worker process of this Slicer session (started by ``startSharedWorker`` or its first job,
    restarted if it died)."""
    global _shared
    if _shared is None:
        _shared = WorkerProcess()
    return _shared


def startSharedWorker():
    """Start the shared worker now if GuiDINO's packages are installed (a module opening), so that it has imported
    torch and MONAI before the first job. Returns whether it runs; never waits."""
    from .DependencyLogic import DependencyLogic

    worker = sharedWorker()
    if not worker.alive and DependencyLogic().missing():  # checked only when a worker would start
        return False
    worker.start()
    return True


def closeSharedWorker():
    """End the session's worker when Slicer quits (a running job would otherwise go on after it): asked to quit,
    then ended with its process group."""
    global _shared
    if _shared is not None:
        _shared.close(timeout=2.0)
        _shared = None
