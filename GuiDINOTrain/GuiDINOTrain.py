"""GuiDINO Train: refine the GuiDINO model from the user's corrections.

The module file only wires the GUI. The work is in ``GuiDINOTrainLib`` (``GuiDINOTrainLogic``,
imported on first use because it imports torch). A refinement runs in three parts so that the
training never blocks the GUI: ``prepareRefine`` reads the scene (main thread), ``runRefine``
trains (worker thread, no MRML), ``finishRefine`` saves the new version and makes it active (main
thread); the unreviewed slices are then re-segmented with the Segment Logic's
``computePrediction`` (worker) and ``applyPrediction`` (main thread), as GuiDINO Segment does.
The panel's small decisions are the plain functions below (tested without Slicer).
"""

import datetime
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from GuiDINOSegmentLib.DependencyLogic import DependencyLogic
from SegmentEditorGuiDINOLib import WidgetHelpers as helpers

PREFERRED_SEGMENT_NAME = "GuiDINO"  # the segment GuiDINO Segment writes by default
STOP_REASONS = {"time budget": "the time budget ran out", "early stopping": "the held-out slice stopped improving",
                "cancelled": "cancelled, the best weights so far were kept"}


class GuiDINOTrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GuiDINO Train")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["GuiDINOSegment"]
        self.parent.contributors = ["GuiDINO developers"]
        self.parent.helpText = _(
            "Refine from corrections: fine-tune the TokenBook, the network and optionally LoRA adapters of the guide "
            "on the slices you corrected (edited, or marked reviewed in GuiDINO Segment), save the result as a new "
            "model version, then re-segment the slices you have not reviewed. Roll back to any earlier version."
        )
        self.parent.acknowledgementText = _("Method: Liang et al., GuiDINO (arXiv 2603.01115); DINOv3 (Meta AI).")


def __getattr__(name):
    """``GuiDINOTrain.GuiDINOTrainLogic``, imported when first asked for (it imports torch)."""
    if name == "GuiDINOTrainLogic":
        from GuiDINOTrainLib import GuiDINOTrainLogic

        return GuiDINOTrainLogic
    raise AttributeError(name)


# -- the panel's decisions (plain functions) -------------------------------------------------
def trainParts(tokenbook, network, lora):
    """The Logic's ``train`` string ('tokenbook+network+lora') from the three check boxes."""
    parts = [name for name, on in (("tokenbook", tokenbook), ("network", network), ("lora", lora)) if on]
    if not parts:
        raise ValueError(_("Choose what to train: TokenBook, Network or LoRA."))
    return "+".join(parts)


def timeBudgetSeconds(value):
    """The spin box's seconds as the Logic wants them: None (no limit) for 0."""
    value = float(value or 0)
    return value if value > 0 else None


def refineProblem(hasVolume, hasSegmentation, hasSegment, parts):
    """Why Refine cannot start ('' when it can): the button's tooltip."""
    if not hasVolume:
        return _("Select the input volume.")
    if not hasSegmentation:
        return _("Select the segmentation holding your corrections.")
    if not hasSegment:
        return _("Select the corrected segment.")
    if not any(parts):
        return _("Choose what to train: TokenBook, Network or LoRA.")
    return ""


def pickSegmentId(current, segmentIds, preferred=None):
    """The segment to show: the current one if it still exists, else ``preferred``, else the first ('' if none)."""
    segmentIds = list(segmentIds)
    for candidate in (current, preferred):
        if candidate and candidate in segmentIds:
            return candidate
    return segmentIds[0] if segmentIds else ""


def samePath(a, b):
    if not a or not b:
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def formatCreated(text, tz=None):
    """'2026-08-21 12:55' (local time, or ``tz``) from a bundle's ISO 'created' time; '?' when unknown."""
    if not text:
        return "?"
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if when.tzinfo is not None:
        when = when.astimezone(tz)
    return when.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class VersionRow:
    text: str
    path: str
    active: bool
    toolTip: str


def versionRows(versions, activeModel=None, tz=None):
    """The versions list from the Logic's ``versions()`` (oldest first): newest first, the active one marked."""
    rows = []
    for version in reversed(list(versions)):
        path = Path(version["path"])
        active = samePath(path, activeModel)
        slices = version.get("slices") or []
        parent = version.get("parent")
        text = f"{path.name}{'  (active)' if active else ''}  {formatCreated(version.get('created'), tz)}"
        if slices:
            text += f"  slices {helpers.formatSlices(slices)}"
        origin = f"refined from {Path(parent).name}" if parent else "not refined from another version"
        rows.append(VersionRow(text, str(path), active, f"{path}\n{origin}"))
    return rows


def activeVersionSlices(versions, activeModel):
    """The corrected slices the active version was trained on; None when it is not in the versions list."""
    for version in versions:
        if samePath(version["path"], activeModel):
            return sorted(int(s) for s in version.get("slices") or [])
    return None


def correctionRows(corrections, trainedSlices=None):
    """One line per corrected slice: its number and whether the active model was trained on it."""
    trained = set(trainedSlices or ())
    return [f"Slice {index}: " + (_("in the active model") if index in trained else _("new, not trained on yet"))
            for index in sorted(int(s) for s in corrections["slices"])]


def correctionsSummary(corrections, trainedSlices=None):
    slices = sorted(int(s) for s in corrections["slices"])
    if not slices:
        return _("No corrections yet: edit the segment on a few slices with the Segment Editor, or mark slices "
                 "that are right as reviewed in GuiDINO Segment.")
    new = len(set(slices) - set(trainedSlices or ()))
    return _("{count} corrected {axis} slices ({slices}), {new} new since the active model.").format(
        count=len(slices), axis=corrections["axis"], slices=helpers.formatSlices(slices), new=new)


def activeModelText(activeModel):
    return _("Active model: {name}").format(name=Path(activeModel).name) if activeModel else _(
        "Active model: none yet (the default model, or a new one from the guide)")


def trainingProgress(info, timeBudget=None):
    """(percent, text) of the progress bar from the latest training progress entry (None before the first)."""
    if not info:
        return 0, _("Preparing the training...")
    step, total, seconds = int(info.get("step", 0)), int(info.get("total", 0)), float(info.get("seconds") or 0.0)
    fraction = step / total if total else 0.0
    if timeBudget:
        fraction = max(fraction, seconds / timeBudget)
    text = f"Training: step {step} / {total}"
    if info.get("loss") is not None:
        text += f", loss {info['loss']:.3f}"
    if info.get("val_dice") is not None:
        text += f", held-out Dice {info['val_dice']:.2f}"
    return int(100 * min(fraction, 1.0)), f"{text}, {helpers.formatDuration(seconds)}"


def refineSummary(result):
    """The status line after a refinement (a RefineFromCorrectionsResult)."""
    if result.bundle is None:
        return _("Cancelled: this round was discarded; the active model is unchanged.")
    text = _("Saved {name} and made it the active model: {steps} steps in {time} on {count} corrected slices").format(
        name=Path(result.bundle).name, steps=result.steps, time=helpers.formatDuration(result.seconds),
        count=len(result.slices))
    if result.valDice is not None:
        text += f" (held-out Dice {result.valDice:.2f})"
    if result.stopped in STOP_REASONS:
        text += "; " + _("stopped: {reason}").format(reason=STOP_REASONS[result.stopped])
    return text + "."


def resegmentAfterTraining(result, cancelRequested):
    """(re-segment now?, note): after a cancel the new version is kept but nothing is re-segmented."""
    if result.bundle is None:
        return False, ""
    if cancelRequested or result.stopped == "cancelled":
        return False, _("The slices were not re-segmented: press Refine again, or Run in GuiDINO Segment.")
    return True, ""


def segmentedSummary(processResult):
    text = _("{count} slices re-segmented in {time}; reviewed slices kept.").format(
        count=processResult.slicesProcessed, time=helpers.formatDuration(processResult.seconds))
    return text + (" " + _("Cancelled: the slices done were kept.") if processResult.cancelled else "")


# -- one refinement or roll back, off the GUI thread -------------------------------------------
@dataclass
class RunState:
    finished: bool
    percent: int
    text: str
    message: str = ""  # the status line once finished
    error: Optional[BaseException] = None
    errorDetails: str = ""


class RefineRun:
    """Train (worker), then save and activate (main), then re-segment (worker) and write (main).

    The GUI calls ``poll()`` from a timer on the main thread; all MRML reads and writes happen in
    ``train``/``resegment``/``poll``, never in the worker. ``startJob(compute)`` returns a started
    job with ``poll()``/``cancel()`` (``WidgetHelpers.PredictionJob`` by default).
    """

    def __init__(self, logic, inputVolume, segmentation, segmentId, timeBudget=None, startJob=None, detach=None):
        self.logic = logic
        self.inputVolume, self.segmentation, self.segmentId = inputVolume, segmentation, segmentId
        self.timeBudget = timeBudget
        self._startJob = startJob or (lambda compute: helpers.PredictionJob(compute).start())
        self._detach = detach or helpers.detachedVolumeCopyNode
        self.stage = "idle"  # training | segmenting | done
        self.job = None
        self.refined = None  # the RefineFromCorrectionsResult once saved
        self.messages = []
        self._prepared = None
        self._latest = None  # the latest training progress entry (replaced whole by the worker)
        self._axis = None
        self._abandoned = False
        self.cancelRequested = False

    def train(self, prepared):
        """Start training ``prepared`` (from the Logic's ``prepareRefine``) on a worker thread."""
        self._prepared, self.stage = prepared, "training"

        def compute(progressCallback, cancelEvent):  # worker thread: no MRML
            def report(info):
                self._latest = dict(info)
                progressCallback(info.get("step", 0), info.get("total", 0))

            return self.logic.runRefine(prepared, progressCallback=report, cancelEvent=cancelEvent)

        self.job = self._startJob(compute)
        return self

    def resegment(self, bundle, message=""):
        """Start re-segmenting the unreviewed slices with ``bundle`` on a worker thread."""
        self._axis = self.logic.corrections(self.segmentation, self.segmentId)["axis"]
        volume, model, axis = self._detach(self.inputVolume), str(bundle), self._axis
        if message:
            self.messages.append(message)

        def compute(progressCallback, cancelEvent):  # worker thread: reads the detached copy only
            return self.logic.segmentLogic.computePrediction(volume, model=model, axis=axis,
                                                             progressCallback=progressCallback,
                                                             cancelEvent=cancelEvent)

        self.stage, self.job = "segmenting", self._startJob(compute)
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
                return RunState(False, *trainingProgress(self._latest, self.timeBudget))
            return RunState(False, state.percent, _("Re-segmenting: ") + state.text)
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
            return self._done(_("Cancelled: the scene was closed; nothing was saved or written."))
        if self.inputVolume.GetScene() is None or self.segmentation.GetScene() is None:  # removed meanwhile
            return self._done(_("Nothing written: the input volume or the segmentation was removed meanwhile."))
        if self.stage == "training":
            self.refined = self.logic.finishRefine(self._prepared, state.result)
            self.messages.append(refineSummary(self.refined))
            again, note = resegmentAfterTraining(self.refined, state.cancelRequested)
            if not again:
                return self._done(note)
            self.resegment(self.refined.bundle)
            return RunState(False, 0, _("Re-segmenting the unreviewed slices..."))
        segment = self.segmentation.GetSegmentation().GetSegment(self.segmentId)
        if segment is None:
            return self._done(_("Nothing written: the segment was removed meanwhile."))
        applied = self.logic.segmentLogic.applyPrediction(self.inputVolume, self.segmentation, state.result,
                                                          segmentName=segment.GetName(), axis=self._axis,
                                                          showGuide=True)
        return self._done(segmentedSummary(applied))

    def _done(self, message):
        self.stage = "done"
        if message:
            self.messages.append(message)
        return RunState(True, 100, "", " ".join(self.messages))


# -- parameters and widget ---------------------------------------------------------------------
@parameterNodeWrapper
class GuiDINOTrainParameterNode:
    """The panel's settings, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""  # kept in step with the segment selector (no GUI connector exists for it)
    trainTokenBook: bool = True
    trainNetwork: bool = True
    trainLoRA: bool = False
    timeBudget: Annotated[int, Minimum(0)] = 20  # seconds, as refine.REFINE_TIME_BUDGET (not imported: torch); 0: no limit


def getParameterNode():
    """The scene's (singleton) GuiDINOTrain parameter node."""
    parameters = ScriptedLoadableModuleLogic()
    parameters.moduleName = "GuiDINOTrain"
    return GuiDINOTrainParameterNode(parameters.getParameterNode())


class GuiDINOTrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None  # GuiDINOTrainLogic, created when first needed (it imports torch)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # the RefineRun in progress
        self._observed = None  # the segmentation whose edits refresh the corrections list
        self._versionRows = []
        self._updating = False  # updateGui is writing the parameter node
        self._refreshing = False  # refreshLists is reading the segmentation

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GuiDINOTrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onRunTimer)
        self._refreshTimer = qt.QTimer()  # edits come in bursts (painting): refresh once they pause
        self._refreshTimer.setSingleShot(True)
        self._refreshTimer.setInterval(700)
        self._refreshTimer.connect("timeout()", self.refreshLists)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentSelected)
        self.ui.refreshButton.connect("clicked(bool)", lambda checked: self.refreshLists(install=True))
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.rollbackButton.connect("clicked(bool)", self.onRollbackButton)
        self.ui.versionsList.connect("currentRowChanged(int)", self.updateGui)
        self.initializeParameterNode()

    def cleanup(self):
        if self._run is not None:
            self._run.abandon()
        for timer in (getattr(self, "_timer", None), getattr(self, "_refreshTimer", None)):
            if timer is not None:
                timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._refreshTimer.start()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self.observeSegmentation(None)

    def onSceneStartClose(self, caller, event):
        if self._run is not None:
            self._run.abandon()
        self.observeSegmentation(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not p.segmentation:
            p.segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self.updateGui()

    def updateGui(self, *unused):
        if self._updating:
            return
        self._updating = True
        try:
            p = self._parameterNode
            segmentation = p.segmentation if p else None
            self.syncSegmentSelector(segmentation)
            if segmentation is not self._observed:
                self.observeSegmentation(segmentation)
                self._refreshTimer.start()
            running = self._run is not None
            cancelling = running and self._run.cancelRequested
            problem = refineProblem(bool(p and p.inputVolume), bool(segmentation), bool(p and p.segmentId),
                                    (p.trainTokenBook, p.trainNetwork, p.trainLoRA) if p else ())
            self.ui.refineButton.text = (_("Cancelling...") if cancelling else _("Cancel") if running
                                         else _("Refine from corrections"))
            self.ui.refineButton.enabled = not cancelling and (running or not problem)
            self.ui.refineButton.toolTip = (
                _("Stop: a training keeps the best model so far, a re-segmentation the slices done") if running
                else problem
                or _("Train on the corrected slices, save a new version and re-segment the unreviewed slices"))
            self.ui.settingsWidget.enabled = not running
            self.ui.progressBar.visible = running
            self.ui.rollbackButton.enabled = bool(not running and p and p.inputVolume and segmentation
                                                  and p.segmentId and self.selectedVersion())
        finally:
            self._updating = False

    def syncSegmentSelector(self, segmentation):
        """Show the parameter node's segment; store the selector's choice when the segment is gone."""
        selector, p = self.ui.segmentSelector, self._parameterNode
        if selector.currentNode() is not segmentation:
            selector.setCurrentNode(segmentation)
        if p is None or segmentation is None:
            return
        ids = list(segmentation.GetSegmentation().GetSegmentIDs())
        preferred = segmentation.GetSegmentation().GetSegmentIdBySegmentName(PREFERRED_SEGMENT_NAME)
        segmentId = pickSegmentId(p.segmentId, ids, preferred)
        if selector.currentSegmentID() != segmentId:
            selector.setCurrentSegmentID(segmentId)
        if p.segmentId != segmentId:
            p.segmentId = segmentId

    def onSegmentSelected(self, segmentId):
        if self._parameterNode and not self._updating and self._parameterNode.segmentId != segmentId:
            self._parameterNode.segmentId = segmentId
            self._refreshTimer.start()

    def observeSegmentation(self, segmentation):
        """Refresh the corrections list (debounced) whenever the segmentation or its segments change."""
        if self._observed is not None:
            self.removeObserver(self._observed, slicer.vtkSegmentation.SegmentModified, self.onSegmentationModified)
            self.removeObserver(self._observed, vtk.vtkCommand.ModifiedEvent, self.onSegmentationModified)
        self._observed = segmentation
        if segmentation is not None:
            self.addObserver(segmentation, slicer.vtkSegmentation.SegmentModified, self.onSegmentationModified)
            self.addObserver(segmentation, vtk.vtkCommand.ModifiedEvent, self.onSegmentationModified)

    def onSegmentationModified(self, caller, event):
        if not self._refreshing:
            self._refreshTimer.start()

    # -- lists ---------------------------------------------------------------------------------
    def ensureLogic(self, install=True):
        """Create the Logic once its Python packages are there (asking to install them if ``install``)."""
        if self.logic is not None:
            return True
        dependencies = DependencyLogic()
        if not (dependencies.ensureDependencies(parent=slicer.util.mainWindow()) if install
                else not dependencies.missing()):
            self.setStatus(_("GuiDINO needs these Python packages: {packages}. Press Refresh or Refine to install "
                             "them.").format(packages=", ".join(dependencies.missing())))
            return False
        from GuiDINOTrainLib import GuiDINOTrainLogic

        self.logic = GuiDINOTrainLogic()
        return True

    def refreshLists(self, install=False):
        """Fill the versions and corrections lists from the Logic."""
        p = self._parameterNode
        if p is None or not self.ensureLogic(install=install):
            return
        self._refreshing = True
        try:
            self.fillLists(p)
        finally:
            self._refreshing = False

    def fillLists(self, p):
        self.ui.correctionsList.clear()
        try:  # runs on every edit: problems go to the label, not to a dialog
            versions = self.logic.versions()
            active = self.logic.segmentLogic.activeModel(p.segmentation) if p.segmentation else None
            self.ui.activeModelLabel.text = activeModelText(active)
            self.ui.activeModelLabel.toolTip = str(active or "")
            self.fillVersions(versionRows(versions, active))
            if not (p.segmentation and p.segmentId):
                self.ui.correctionsLabel.text = _("Select the corrected segment.")
                return
            corrections = self.logic.corrections(p.segmentation, p.segmentId)
        except Exception as error:
            logging.warning(f"GuiDINO Train: could not list the corrections or versions: {error}")
            self.ui.correctionsLabel.text = str(error)
            return
        trained = activeVersionSlices(versions, active)
        self.ui.correctionsLabel.text = correctionsSummary(corrections, trained)
        for row in correctionRows(corrections, trained):
            self.ui.correctionsList.addItem(row)

    def fillVersions(self, rows):
        selected = self.selectedVersion()
        self._versionRows = rows
        self.ui.versionsList.clear()
        for index, row in enumerate(rows):
            self.ui.versionsList.addItem(row.text)
            item = self.ui.versionsList.item(index)
            item.setToolTip(row.toolTip)
            if row.path == selected:
                self.ui.versionsList.setCurrentRow(index)
        self.ui.versionsList.toolTip = _("Model versions in {folder}").format(folder=self.logic.modelsFolder)
        self.updateGui()

    def selectedVersion(self):
        row = self.ui.versionsList.currentRow
        return self._versionRows[row].path if 0 <= row < len(self._versionRows) else None

    # -- actions -------------------------------------------------------------------------------
    def onRefineButton(self):
        if self._run is not None:
            self._run.cancel()
            self.updateGui()
            return
        if not self.ensureLogic():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Refine from corrections could not start."), waitCursor=True):
            budget = timeBudgetSeconds(p.timeBudget)
            prepared = self.logic.prepareRefine(p.inputVolume, p.segmentation, p.segmentId,
                                                train=trainParts(p.trainTokenBook, p.trainNetwork, p.trainLoRA),
                                                timeBudgetSeconds=budget, resegment=False)
            self.startRun(RefineRun(self.logic, p.inputVolume, p.segmentation, p.segmentId, budget).train(prepared))

    def onRollbackButton(self):
        bundle = self.selectedVersion()
        if bundle is None or not self.ensureLogic():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Roll back failed."), waitCursor=True):
            self.logic.rollback(p.inputVolume, p.segmentation, p.segmentId, bundle, resegment=False)
            message = _("Rolled back: {name} is the active model.").format(name=Path(bundle).name)
            self.startRun(RefineRun(self.logic, p.inputVolume, p.segmentation, p.segmentId).resegment(bundle, message))
            self.refreshLists()

    def startRun(self, run):
        self._run = run
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = _("Starting...")
        self.setStatus("")
        self._timer.start()
        self.updateGui()

    def onRunTimer(self):
        state = self._run.poll()
        self.ui.progressBar.value = state.percent
        self.ui.progressBar.format = state.text
        if not state.finished:
            return
        self._timer.stop()
        self._run = None
        self.updateGui()
        if state.error is not None:
            self.showError(str(state.error), state.errorDetails)
        else:
            self.setStatus(state.message)
        if self._parameterNode is not None:
            self.refreshLists()

    def setStatus(self, text):
        self.ui.statusLabel.text = text

    def showError(self, message, details):
        logging.error(f"GuiDINO Train: {message}\n{details}")
        self.setStatus(message)
        slicer.util.errorDisplay(message, windowTitle="GuiDINO Train", detailedText=details or None)


class GuiDINOTrainTest(ScriptedLoadableModuleTest):
    """Smoke test run by Slicer's module tests; the application tests are in Testing/Slicer/."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_widget_builds()

    def test_widget_builds(self):
        widget = slicer.modules.guidinotrain.widgetRepresentation().self()
        self.assertEqual(widget.ui.refineButton.text, "Refine from corrections")
        self.assertFalse(widget.ui.refineButton.enabled)  # no volume, no segmentation
        self.delayDisplay("GuiDINOTrain widget loads")
