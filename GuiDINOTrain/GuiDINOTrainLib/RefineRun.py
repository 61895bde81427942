"""One refinement, or one roll back, followed from Slicer's main thread: the Train panel's and the Segment Editor
effect's (one implementation).

Train (the GuiDINO worker process), then save and activate (main thread), then re-segment (worker) and write
(main). It reads and writes MRML only through the nodes and the Logic it is given, and imports neither ``slicer``
nor qt; a ``JobPoller`` (panel) or ``JobWait`` (effect) polls it.
"""

import traceback
from dataclasses import dataclass
from typing import Optional

from GuiDINOSegmentLib import WidgetHelpers as helpers
from GuiDINOSegmentLib.SegmentSettings import SegmentSettings
from GuiDINOTrainLib.TrainPanel import (abandonedSummary, refineSummary, resegmentAfterTraining, segmentedSummary,
                                        trainingProgress)


@dataclass
class RunState:
    finished: bool
    percent: int
    text: str
    message: str = ""  # the status line once finished
    error: Optional[BaseException] = None
    errorDetails: str = ""


class RefineRun:
    """Train (the GuiDINO worker process), then save and activate (main), then re-segment (worker) and write (main).

    The GUI polls ``poll()`` on the main thread (a ``JobPoller`` or the effect's ``JobWait``); all MRML reads and
    writes happen in ``train``/``resegment``/``poll``, on the main thread. The work itself runs in the worker
    process (the Logic's ``startRefine`` and the Segment Logic's ``startSegmentation``).

    Args:
        logic: the GuiDINOTrainLogic (``startRefine``, ``finishRefine``, ``corrections``, ``segmentLogic``).
        inputVolume, segmentation, segmentId: where the corrections are and where the result goes.
        timeBudget: the training's time budget in seconds (the progress bar's scale), or None.
        resegment: re-segment and write once the new version is saved (the Train panel); False stops there
            (the effect previews the new version instead, and its Apply writes it).
    """

    def __init__(self, logic, inputVolume, segmentation, segmentId, timeBudget=None, resegment=True):
        self.logic = logic
        self.inputVolume, self.segmentation, self.segmentId = inputVolume, segmentation, segmentId
        self.timeBudget, self.resegmentAfter = timeBudget, resegment
        self.stage = "idle"  # training | segmenting | done
        self.job = None
        self.refined = None  # the RefineFromCorrectionsResult once saved
        self.fusion = None  # the re-segmentation's fusionReport: where its slices came from, the slice suggested next
        self.messages = []
        self._prepared = None
        self._segmentation = None  # the re-segmentation's SegmentationJob
        self._abandoned = False
        self.cancelRequested = False

    @property
    def bundle(self):
        """The version this run saved and activated (a path string), or None."""
        return None if self.refined is None or self.refined.bundle is None else str(self.refined.bundle)

    def train(self, prepared):
        """Start training ``prepared`` (from the Logic's ``prepareRefine``) in the worker process."""
        self._prepared, self.stage = prepared, "training"
        self.job = self.logic.startRefine(prepared)
        return self

    def resegment(self, bundle, message=""):
        """Prepare (main thread) and start re-segmenting the unreviewed slices with ``bundle`` (worker process),
        along the axis of the corrections trained on (a roll back, which trained nothing: the segment's latest)."""
        axis = (self._prepared.corrections["axis"] if self._prepared is not None else
                self.logic.corrections(self.segmentation, self.segmentId, volume=self.inputVolume)["axis"])
        job = self.logic.segmentLogic.prepareSegmentation(
            self.inputVolume, self.segmentation, SegmentSettings(segmentId=self.segmentId, model=str(bundle),
                                                                 axis=axis))
        if message:
            self.messages.append(message)
        self._segmentation = job
        self.stage, self.job = "segmenting", self.logic.segmentLogic.startSegmentation(job)
        return self

    def cancel(self):
        self.cancelRequested = True
        if self.job is not None:
            self.job.cancel()

    def abandon(self):
        """The scene is closing: stop, and write nothing when the job ends."""
        self._abandoned = True
        self.cancel()

    def poll(self):
        state = self.job.poll()
        if not state.finished:
            if self.stage == "training":
                return RunState(False, *trainingProgress(self.job.latest, self.timeBudget))
            percent, text = helpers.progressReport(state.done, state.total, state.elapsed)
            return RunState(False, percent, "Re-segmenting: " + text)
        try:
            return self._finished(state)
        except Exception as error:  # shown by the GUI
            self.stage = "done"
            return RunState(True, 100, "", " ".join(self.messages), error, traceback.format_exc())

    def _finished(self, state):
        if state.error is not None:
            self.stage = "done"
            return RunState(True, 100, "", " ".join(self.messages), state.error, state.errorDetails)
        if self._abandoned:
            return self._done(abandonedSummary(getattr(state.result, "bundle", None) if self.stage == "training"
                                               else None))
        if self.inputVolume.GetScene() is None or self.segmentation.GetScene() is None:  # removed meanwhile
            return self._done("Nothing written: the input volume or the segmentation was removed meanwhile.")
        if self.stage == "training":
            self.refined = self.logic.finishRefine(self._prepared, state.result)
            self.messages.append(refineSummary(self.refined))
            again, note = resegmentAfterTraining(self.refined, state.cancelRequested)
            if not again or not self.resegmentAfter:
                return self._done(note)
            self.resegment(self.refined.bundle)
            return RunState(False, 0, "Re-segmenting the unreviewed slices...")
        if self.segmentation.GetSegmentation().GetSegment(self.segmentId) is None:
            return self._done("Nothing written: the segment was removed meanwhile.")
        written = self.logic.segmentLogic.applySegmentation(self._segmentation, state.result)
        self.fusion = written.fusion
        return self._done(segmentedSummary(written))

    def _done(self, message):
        self.stage = "done"
        if message:
            self.messages.append(message)
        return RunState(True, 100, "", " ".join(self.messages))

