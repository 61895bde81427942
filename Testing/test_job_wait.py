"""The one poller of the GUI (GuiDINOSegmentLib.JobPoller: the panels' Run and Refine) and the Segment Editor
effect's wait built on it (JobWait), with a fake clock: Qt's timer and event loop cannot run here, so they are
replaced by ones that advance simulated time; the job is a real object whose progress follows that clock."""

import pytest

from GuiDINOSegmentLib import JobPoller as poller
from GuiDINOSegmentLib.JobWait import INTERVAL_MS, JobWait, nodesStillThere
from GuiDINOSegmentLib.WorkerClient import JobState


class Clock:
    def __init__(self):
        self.now = 0.0  # seconds


class FakeTimer:
    """A QTimer on the fake clock: fires every ``ms`` of simulated time while started."""

    def __init__(self, clock):
        self.clock, self.slot, self.interval, self.active, self.starts = clock, None, None, False, 0

    def connect(self, signal, slot):
        assert signal == "timeout()"
        self.slot = slot

    def start(self, ms):
        self.interval, self.active = ms, True
        self.starts += 1

    def stop(self):
        self.active = False


class FakeLoop:
    """A QEventLoop on the fake clock: sleeps until the timer's next timeout (no event is pending otherwise)."""

    def __init__(self, clock, timer, limit=3600.0):
        self.clock, self.timer, self.limit, self.running, self.wakeups = clock, timer, limit, False, 0

    def exec(self):
        self.running = True
        while self.running:
            assert self.timer.active, "the loop would sleep for ever: no timer running"
            self.clock.now += self.timer.interval / 1000.0
            self.wakeups += 1
            assert self.clock.now < self.limit
            self.timer.slot()

    def quit(self):
        self.running = False


class Dialog:
    def __init__(self, cancel_at=None, clock=None):
        self.value, self.labelText, self.shown, self.closed = 0, "", 0, False
        self.cancel_at, self.clock = cancel_at, clock

    @property
    def wasCanceled(self):
        return self.cancel_at is not None and self.clock.now >= self.cancel_at

    def show(self):
        self.shown += 1

    def close(self):
        self.closed = True


class Job:
    """A job of ``total`` slices, one every ``per_slice`` s; once cancelled it ends after ``stop_after`` s."""

    def __init__(self, clock, total=10, per_slice=0.5, stop_after=1.0):
        self.clock, self.total, self.per_slice, self.stop_after = clock, total, per_slice, stop_after
        self.cancelled_at, self.polls = None, 0

    def poll(self):
        self.polls += 1
        now = self.clock.now
        done = min(self.total, int(now / self.per_slice))
        if self.cancelled_at is not None and now >= self.cancelled_at + self.stop_after:
            return JobState(True, done, self.total, now, result=("partial", done), cancelRequested=True)
        if done == self.total:
            return JobState(True, done, self.total, now, result=("all", done))
        return JobState(False, done, self.total, now, cancelRequested=self.cancelled_at is not None)

    def cancel(self):
        if self.cancelled_at is None:
            self.cancelled_at = self.clock.now


def wait(job, dialog, clock):
    timer = FakeTimer(clock)
    loop = FakeLoop(clock, timer)
    waiter = JobWait(job, poller.workerJobProgress, dialog, timer, loop)
    return waiter, waiter.run(), loop, timer


def test_the_wait_polls_once_per_timer_interval_not_in_a_loop():
    clock = Clock()
    job, dialog = Job(clock), Dialog()
    waiter, state, loop, timer = wait(job, dialog, clock)
    assert state.finished and state.result == ("all", 10)
    assert clock.now == pytest.approx(5.0, abs=INTERVAL_MS / 1000)
    assert waiter.polls == job.polls == loop.wakeups + 1 <= 5.0 / (INTERVAL_MS / 1000) + 2  # one poll per wake-up
    assert timer.starts == 1 and not timer.active and dialog.closed
    assert dialog.value == 90 and dialog.labelText.startswith("9 / 10 slices")  # the last progress shown


def test_a_finished_job_needs_no_loop():
    clock = Clock()
    clock.now = 100.0  # the job has ended before the wait starts
    job, dialog = Job(clock), Dialog()
    waiter, state, loop, timer = wait(job, dialog, clock)
    assert state.result == ("all", 10) and loop.wakeups == 0 and timer.starts == 0 and dialog.closed


@pytest.mark.parametrize("cancel_at", [0.0, 1.26, 3.0])
def test_cancel_is_passed_on_once_and_the_dialog_stays_up_until_the_job_has_stopped(cancel_at):
    clock = Clock()
    job, dialog = Job(clock, stop_after=1.0), Dialog(cancel_at=cancel_at, clock=clock)
    waiter, state, loop, timer = wait(job, dialog, clock)
    assert job.cancelled_at == pytest.approx(cancel_at, abs=INTERVAL_MS / 1000)
    assert state.finished and state.cancelRequested and state.result[0] == "partial"
    assert clock.now >= job.cancelled_at + job.stop_after  # no return before the job ended
    ticks_after_cancel = int(round((clock.now - job.cancelled_at) / (INTERVAL_MS / 1000)))
    assert dialog.shown >= ticks_after_cancel - 1 > 0  # shown again on every poll while it winds down: modal
    assert dialog.labelText.startswith("Cancelling") and dialog.closed


def test_a_result_is_not_written_into_nodes_that_left_the_scene(headless_slicer):
    scene = headless_slicer.scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "volume")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    assert nodesStillThere(volume, segmentation)
    scene.RemoveNode(segmentation)
    assert not nodesStillThere(volume, segmentation) and not nodesStillThere(volume, None)


# -- the panels: the poller on a timer, no nested loop ---------------------------------------------
def run_panel(clock, job, cancel_at=None, stop_at=None):
    """What a panel does: start a poller, let Slicer's event loop (here: the clock) fire its timer."""
    timer, shown, finished = FakeTimer(clock), [], []
    follower = poller.JobPoller(job, poller.workerJobProgress, lambda *shown_: shown.append(shown_),
                                finished.append, timer)
    follower.start()
    while timer.active:
        clock.now += timer.interval / 1000.0
        if cancel_at is not None and clock.now >= cancel_at:
            follower.cancel()
        if stop_at is not None and clock.now >= stop_at:
            follower.stop()
            break
        timer.slot()
        assert clock.now < 3600
    return follower, timer, shown, finished


def test_the_panel_poller_shows_progress_and_hands_over_the_result_once():
    clock = Clock()
    job = Job(clock)
    follower, timer, shown, finished = run_panel(clock, job)
    assert timer.interval == poller.INTERVAL_MS and not timer.active
    assert len(finished) == 1 and finished[0].result == ("all", 10)
    assert shown[0] == (0, "0 / 10 slices") and shown[-1][0] == 90  # the last progress before it ended
    assert follower.polls == job.polls == len(shown) + 1
    follower.tick()  # a timeout already queued when it stopped
    assert len(finished) == 1 and job.polls == follower.polls


def test_the_panel_poller_passes_a_cancel_on_and_waits_for_what_was_kept():
    clock = Clock()
    job = Job(clock, stop_after=1.0)
    follower, timer, shown, finished = run_panel(clock, job, cancel_at=2.0)
    assert job.cancelled_at == pytest.approx(2.0, abs=poller.INTERVAL_MS / 1000)
    assert finished[0].result[0] == "partial" and clock.now >= job.cancelled_at + 1.0


def test_a_stopped_poller_hands_nothing_over():
    clock = Clock()
    job = Job(clock)
    follower, timer, shown, finished = run_panel(clock, job, stop_at=1.0)
    assert finished == [] and not timer.active and follower.stopped


def test_a_state_that_carries_its_progress_is_shown_as_it_says():
    from types import SimpleNamespace

    assert poller.statedProgress(SimpleNamespace(percent=40, text="Training: step 8 / 20")) == (
        40, "Training: step 8 / 20")
