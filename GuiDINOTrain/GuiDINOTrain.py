"""GuiDINO Train: refine the GuiDINO model from the user's corrections.

The module file only wires the GUI. The work is in ``GuiDINOTrainLib`` (``GuiDINOTrainLogic``,
imported on first use: it needs the installed packages). A refinement runs in three parts so that the
training never blocks the GUI: ``prepareRefine`` reads the scene (main thread), ``startRefine``
trains in the GuiDINO worker process (no MRML), ``finishRefine`` makes the new version active (main
thread); the unreviewed slices are then re-segmented by one Segment Logic job
(``prepareSegmentation`` / ``startSegmentation`` in the worker / ``applySegmentation``), as GuiDINO
Segment does.
The panel's decisions are in ``GuiDINOTrainLib/TrainPanel.py``, the run it follows in
``GuiDINOTrainLib/RefineRun.py`` (tested without Slicer).
"""

import logging
from pathlib import Path
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from GuiDINOSegmentLib import WidgetHelpers as helpers
from GuiDINOSegmentLib.DependencyLogic import DependencyLogic
from GuiDINOSegmentLib.JobPoller import JobPoller, statedProgress
from GuiDINOSegmentLib.RefineRegistry import registerRefineLogic
from GuiDINOSegmentLib.WorkerClient import startSharedWorker
from GuiDINOTrainLib import TrainPanel as panel
from guidino.training.settings import REFINE_TIME_BUDGET  # torch-free


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
        registerRefineLogic(trainLogicClass)  # the Segment Editor effect's Refine button


def trainLogicClass():
    """The GuiDINOTrainLogic class, imported when first asked for (it needs the installed packages)."""
    from GuiDINOTrainLib import GuiDINOTrainLogic

    return GuiDINOTrainLogic


def __getattr__(name):
    """``GuiDINOTrain.GuiDINOTrainLogic``, imported when first asked for (it needs the installed packages)."""
    if name == "GuiDINOTrainLogic":
        return trainLogicClass()
    raise AttributeError(name)


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
    timeBudget: Annotated[int, WithinRange(0, 86400)] = int(REFINE_TIME_BUDGET)  # seconds; 0: no limit


def getParameterNode():
    """The scene's (singleton) GuiDINOTrain parameter node."""
    parameters = ScriptedLoadableModuleLogic()
    parameters.moduleName = "GuiDINOTrain"
    return GuiDINOTrainParameterNode(parameters.getParameterNode())


class GuiDINOTrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None  # GuiDINOTrainLogic, created when first needed (it needs the installed packages)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # the RefineRun in progress
        self._poller = None  # the JobPoller following it
        self._fusion = None  # the last re-segmentation's fusionReport (the slice suggested next)
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
        self.ui.suggestedButton.connect("clicked(bool)", self.onSuggestedButton)
        self.ui.versionsList.connect("currentRowChanged(int)", self.updateGui)
        self.initializeParameterNode()

    def cleanup(self):
        if self._run is not None:
            self._run.abandon()
        if self._poller is not None:
            self._poller.stop()
        if getattr(self, "_refreshTimer", None) is not None:
            self._refreshTimer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        startSharedWorker()  # torch and MONAI load while the user works, not in the first job
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
            problem = panel.refineProblem(bool(p and p.inputVolume), bool(segmentation), bool(p and p.segmentId),
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
            self.ui.suggestedButton.enabled = bool(not running and p and p.inputVolume
                                                   and helpers.suggestedSlice(self._fusion) is not None)
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
        preferred = segmentation.GetSegmentation().GetSegmentIdBySegmentName(panel.PREFERRED_SEGMENT_NAME)
        segmentId = panel.pickSegmentId(p.segmentId, ids, preferred)
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
        self.logic = trainLogicClass()()
        return True

    def refreshLists(self, install=False):
        """Fill the versions and corrections lists from the Logic."""
        p = self._parameterNode
        if p is None:
            return
        with slicer.util.tryWithErrorDisplay(_("GuiDINO Train could not read the corrections.")):
            if not self.ensureLogic(install=install):  # an installation that fails is shown, not only logged
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
            self.ui.activeModelLabel.text = panel.activeModelText(active)
            self.ui.activeModelLabel.toolTip = str(active or "")
            self.fillVersions(panel.versionRows(versions, active))
            if not (p.segmentation and p.segmentId):
                self.ui.correctionsLabel.text = _("Select the corrected segment.")
                return
            corrections = self.logic.corrections(p.segmentation, p.segmentId, volume=p.inputVolume)
        except Exception as error:
            logging.warning(f"GuiDINO Train: could not list the corrections or versions: {error}")
            self.ui.correctionsLabel.text = str(error)
            return
        trained = panel.activeVersionSlices(versions, active)
        self.ui.correctionsLabel.text = panel.correctionsSummary(corrections, trained)
        for row in panel.correctionRows(corrections, trained):
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
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Refine from corrections could not start."), waitCursor=True):
            if not self.ensureLogic():
                return
            budget = panel.timeBudgetSeconds(p.timeBudget)
            prepared = self.logic.prepareRefine(p.inputVolume, p.segmentation, p.segmentId,
                                                train=panel.trainParts(p.trainTokenBook, p.trainNetwork, p.trainLoRA),
                                                timeBudgetSeconds=budget, resegment=False)
            self.startRun(self.logic.newRefineRun(p.inputVolume, p.segmentation, p.segmentId, budget).train(prepared))

    def onSuggestedButton(self):
        index = helpers.suggestedSlice(self._fusion)
        p = self._parameterNode
        if index is None or p is None or p.inputVolume is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the suggested slice."), waitCursor=False):
            if self.ensureLogic():
                self.logic.segmentLogic.jumpToSlice(p.inputVolume, self._fusion["arrayAxis"], index)

    def onRollbackButton(self):
        bundle = self.selectedVersion()
        if bundle is None:
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Roll back failed."), waitCursor=True):
            if not self.ensureLogic():
                return
            self.logic.rollback(p.inputVolume, p.segmentation, p.segmentId, bundle, resegment=False)
            message = _("Rolled back: {name} is the active model.").format(name=Path(bundle).name)
            self.startRun(self.logic.newRefineRun(p.inputVolume, p.segmentation, p.segmentId).resegment(bundle, message))
            self.refreshLists()

    def startRun(self, run):
        self._run = run
        self.showProgress(0, _("Starting..."))
        self.setStatus("")
        self._poller = JobPoller(run, statedProgress, self.showProgress, self.onRunFinished, qt.QTimer())
        self.updateGui()
        self._poller.start()

    def showProgress(self, percent, text):
        self.ui.progressBar.value = percent
        self.ui.progressBar.format = text

    def onRunFinished(self, state):
        self.showProgress(state.percent, state.text)
        self._fusion = self._run.fusion
        self._run = self._poller = None
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
