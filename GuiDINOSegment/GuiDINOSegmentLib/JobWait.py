"""Waiting for a worker job behind a modal progress dialog, without spinning Slicer's main thread.

The Segment Editor effect's Preview and Refine are synchronous (the editor must not change under them): the
effect waits in a nested event loop that a timer wakes every ``INTERVAL_MS`` to poll the job, so the main thread
sleeps between polls and Slicer keeps painting. Cancel asks the job to stop and keeps the dialog up, modal, until
it has: the user cannot edit or delete the nodes the result will be written to while the job winds down.

The Qt objects are injected (``qt.QTimer``, ``qt.QEventLoop``, the dialog), so that the decisions here are
tested with a fake clock.
"""

INTERVAL_MS = 50


class JobWait:
    """Wait for ``job`` (a WorkerClient job: ``poll()``, ``cancel()``) behind ``dialog``.

    Args:
        job: the job to wait for.
        describe: ``describe(done, total, elapsed)`` -> (percent, text) for the dialog.
        dialog: a progress dialog (``value``, ``labelText``, ``wasCanceled``, ``show()``, ``close()``).
        timer: a timer (``connect("timeout()", slot)``, ``start(ms)``, ``stop()``).
        loop: an event loop (``exec()`` runs until ``quit()``).
    """

    def __init__(self, job, describe, dialog, timer, loop):
        self.job, self.describe, self.dialog, self.timer, self.loop = job, describe, dialog, timer, loop
        self.state = None
        self.cancelled = False
        self.polls = 0
        timer.connect("timeout()", self.tick)

    def run(self):
        """Wait until the job ends (the event loop keeps Slicer responsive); returns its last JobState."""
        self.tick()
        if not self.state.finished:
            self.timer.start(INTERVAL_MS)
            self.loop.exec()
        self.timer.stop()
        self.dialog.close()
        return self.state

    def tick(self):
        """One poll: update the dialog, pass on a Cancel once, end the loop when the job has ended."""
        self.polls += 1
        self.state = self.job.poll()
        if self.state.finished:
            self.timer.stop()
            self.loop.quit()
            return
        if self.dialog.wasCanceled and not self.cancelled:
            self.cancelled = True
            self.job.cancel()
        if self.cancelled:
            self.dialog.labelText = "Cancelling: finishing the current step..."
            self.dialog.show()  # Qt hides a cancelled progress dialog: keep it up, modal, until the job has stopped
        else:
            self.dialog.value, self.dialog.labelText = self.describe(self.state.done, self.state.total,
                                                                     self.state.elapsed)


def nodesStillThere(*nodes):
    """Whether every node is still in a scene (a job's result must not be written into nodes that vanished)."""
    return all(node is not None and node.GetScene() is not None for node in nodes)
