"""Following a worker job from Slicer's main thread: a timer wakes the poller, which shows the job's progress and
hands over its result once it has ended.

The one poller of GuiDINO's GUI: the Segment panel's Run, the Train panel's Refine and roll back, and the Segment
Editor effect's wait (``JobWait``) all use it. The job runs in the GuiDINO worker process; between two polls the
main thread is free (Slicer paints, the user works). The timer is injected (``qt.QTimer()`` in Slicer), so that
the poller is tested with a fake clock.
"""

from GuiDINOSegmentLib.WidgetHelpers import progressReport

INTERVAL_MS = 200  # the panels: a progress bar needs no more


class JobPoller:
    """Poll ``job`` every ``intervalMs`` until it ends.

    Args:
        job: what to follow: ``poll()`` returns a state with ``finished``; ``cancel()`` asks it to stop (a
            WorkerClient job, or a Train ``RefineRun``).
        describe: ``describe(state)`` -> (percent, text) of a state that has not finished.
        show: ``show(percent, text)``, called after each poll while the job runs.
        finished: ``finished(state)``, called once, with the state of the ended job.
        timer: a timer (``connect("timeout()", slot)``, ``start(ms)``, ``stop()``), used by this poller only.
        intervalMs: milliseconds between polls.
    """

    def __init__(self, job, describe, show, finished, timer, intervalMs=INTERVAL_MS):
        self.job, self.describe, self.show, self.finished = job, describe, show, finished
        self.timer, self.intervalMs = timer, intervalMs
        self.state = None
        self.polls = 0
        self.stopped = False
        timer.connect("timeout()", self.tick)

    def start(self):
        """Poll once now, then on every timeout of the timer; returns self."""
        self.tick()
        if not self.stopped:
            self.timer.start(self.intervalMs)
        return self

    def tick(self):
        """One poll: show the progress, or, once the job has ended, stop the timer and call ``finished``."""
        if self.stopped:
            return
        self.polls += 1
        self.state = self.job.poll()
        if self.state.finished:
            self.stop()
            self.finished(self.state)
            return
        self.show(*self.describe(self.state))

    def cancel(self):
        """Ask the job to stop; polling goes on until it has (``finished`` gets what it kept)."""
        self.job.cancel()

    def stop(self):
        """Stop polling (the job goes on unless cancelled); ``finished`` is not called after this."""
        self.stopped = True
        self.timer.stop()


def workerJobProgress(state):
    """(percent, text) of a segmentation job's state (a WorkerClient ``JobState``): slices done, time left."""
    return progressReport(state.done, state.total, state.elapsed)


def statedProgress(state):
    """(percent, text) of a state that carries them: a Train ``RefineRun``'s ``RunState``."""
    return state.percent, state.text
