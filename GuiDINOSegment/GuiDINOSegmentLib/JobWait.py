"""Waiting for a worker job behind a modal progress dialog, without spinning Slicer's main thread.

The Segment Editor effect's Preview and Refine are synchronous (the editor must not change under them): the
effect waits in a nested event loop while a ``JobPoller`` polls the job every ``INTERVAL_MS``, so the main thread
sleeps between polls and Slicer keeps painting. Cancel asks the job to stop and keeps the dialog up, modal, until
it has: the user cannot edit or delete the nodes the result will be written to while the job winds down.

The Qt objects are injected (``qt.QTimer``, ``qt.QEventLoop``, the dialog), so that the decisions here are
tested with a fake clock.
"""

from GuiDINOSegmentLib.JobPoller import JobPoller

INTERVAL_MS = 50  # a modal wait: the dialog follows the job closely


class JobWait:
    """Wait for ``job`` behind ``dialog``.

    Args:
        job: the job to wait for (``poll()``, ``cancel()``: a WorkerClient job or a Train ``RefineRun``).
        describe: ``describe(state)`` -> (percent, text) for the dialog.
        dialog: a progress dialog (``value``, ``labelText``, ``wasCanceled``, ``show()``, ``close()``).
        timer: a timer (``connect("timeout()", slot)``, ``start(ms)``, ``stop()``).
        loop: an event loop (``exec()`` runs until ``quit()``).
    """

    def __init__(self, job, describe, dialog, timer, loop):
        self.dialog, self.loop = dialog, loop
        self.cancelled = False
        self.poller = JobPoller(job, describe, self.show, lambda state: loop.quit(), timer, INTERVAL_MS)

    @property
    def polls(self):
        return self.poller.polls

    def run(self):
        """Wait until the job ends (the event loop keeps Slicer responsive); returns its last state."""
        self.poller.start()
        if not self.poller.stopped:
            self.loop.exec()
        self.poller.stop()
        self.dialog.close()
        return self.poller.state

    def show(self, percent, text):
        """The dialog after a poll of a running job; a Cancel is passed on once."""
        if self.dialog.wasCanceled and not self.cancelled:
            self.cancelled = True
            self.poller.cancel()
        if self.cancelled:
            self.dialog.labelText = "Cancelling: finishing the current step..."
            self.dialog.show()  # Qt hides a cancelled progress dialog: keep it up, modal, until the job has stopped
        else:
            self.dialog.value, self.dialog.labelText = percent, text


def nodesStillThere(*nodes):
    """Whether every node is still in a scene (a job's result must not be written into nodes that vanished)."""
    return all(node is not None and node.GetScene() is not None for node in nodes)
