"""GuiDINO Segment: slice-by-slice segmentation of a volume, gated by a DINOv3 guide.

The module file only wires the GUI. Its Slicer code is in ``GuiDINOSegmentLib``: ``GuiDINOSegmentLogic``
(imported on first use: it needs the installed packages, not torch), ``DependencyLogic`` (installs the packages),
``WidgetHelpers`` (the panel's small decisions) and ``SegmentSettings`` (one run's settings); the
Segment Editor effect is ``SegmentEditorGuiDINOLib/SegmentEditorEffect.py``. The computing is done by
the engine, the ``guidino`` package beside them (see ARCHITECTURE.md).
"""

import logging
import os
import traceback
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, Minimum, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from GuiDINOSegmentLib.DependencyLogic import DependencyLogic
from GuiDINOSegmentLib import WidgetHelpers as helpers
from GuiDINOSegmentLib.JobPoller import JobPoller, workerJobProgress
from GuiDINOSegmentLib.WorkerClient import closeSharedWorker, startSharedWorker


class GuiDINOSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GuiDINO Segment")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["GuiDINO developers"]
        self.parent.helpText = _(
            "Segment a structure slice by slice: a frozen DINOv3 guide gates a UNet / nnWNet-style network. "
            "The guide is shown as a colour overlay, the result as a segment. Slices you mark reviewed (or edit) "
            "are never overwritten. The <b>GuiDINO</b> Segment Editor effect previews the same model before "
            "applying it."
        )
        self.parent.acknowledgementText = _("Method: Liang et al., GuiDINO (arXiv 2603.01115); DINOv3 (Meta AI).")
        slicer.app.connect("startupCompleted()", registerEditorEffect)
        slicer.app.connect("startupCompleted()", watchEdits)
        slicer.app.connect("aboutToQuit()", closeSharedWorker)  # no job goes on after Slicer exits


def watchEdits():
    """Record every edit of GuiDINO's segments as it is made, from Slicer's start (a ``.seg.nrrd`` loaded and
    painted before any GuiDINO run included). The review store imports no torch."""
    from GuiDINOSegmentLib.ReviewStore import watchScene

    watchScene(slicer.mrmlScene)


def registerEditorEffect():
    """Register the GuiDINO Segment Editor effect; Slicer runs its Python source for every editor."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    source = os.path.join(os.path.dirname(__file__), "SegmentEditorGuiDINOLib", "SegmentEditorEffect.py")
    instance.setPythonSource(source.replace("\\", "/"))
    instance.self().register()


def __getattr__(name):
    """``GuiDINOSegment.GuiDINOSegmentLogic``, imported when first asked for (it needs the installed packages)."""
    if name == "GuiDINOSegmentLogic":
        return helpers.segmentLogicClass()
    raise AttributeError(name)


@parameterNodeWrapper
class GuiDINOSegmentParameterNode:
    """The panel's settings, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    segmentName: str = "GuiDINO"
    # Bundle folder; "": the Logic's default ($GUIDINO_MODEL). A str wired by hand (onModelPathChanged): Slicer's
    # connector for a ctkPathLineEdit takes only pathlib.Path, whose empty value shows as ".".
    modelPath: str = ""
    guideSource: str = ""  # hub id or folder overriding the guide the bundle names
    axis: Annotated[str, Choice(list(helpers.AXES))] = "axial"
    sliceMode: Annotated[str, Choice(list(helpers.SLICE_MODES))] = "all"
    sliceFirst: Annotated[int, Minimum(0)] = 0
    sliceLast: Annotated[int, Minimum(0)] = 0
    device: Annotated[str, Choice(list(helpers.DEVICES))] = "auto"
    showGuide: bool = True
    guideOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4


def getParameterNode():
    """The scene's (singleton) GuiDINOSegment parameter node."""
    parameters = ScriptedLoadableModuleLogic()
    parameters.moduleName = "GuiDINOSegment"
    return GuiDINOSegmentParameterNode(parameters.getParameterNode())


class GuiDINOSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None  # GuiDINOSegmentLogic, created when first needed
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the running job of the GuiDINO worker process
        self._request = None  # its SegmentationJob (where the result goes); None once the scene was closed
        self._poller = None  # the JobPoller following the job

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GuiDINOSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.runButton.connect("clicked(bool)", self.onRunButton)
        self.ui.markReviewedButton.connect("clicked(bool)", lambda checked: self.onMarkReviewed(True))
        self.ui.unmarkReviewedButton.connect("clicked(bool)", lambda checked: self.onMarkReviewed(False))
        self.ui.showGuideCheckBox.connect("toggled(bool)", self.onGuideDisplay)
        self.ui.guideOpacitySlider.connect("valueChanged(double)", self.onGuideDisplay)
        self.initializeParameterNode()

    def cleanup(self):
        if self._job is not None:
            self._job.cancel()
            self._request = None
        if self._poller is not None:
            self._poller.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        startSharedWorker()  # torch and MONAI load while the user works, not in the first job

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event):
        if self._job is not None:
            self._job.cancel()
            self._request = None  # its nodes are going away: nothing to apply
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self.updateGui()

    def updateGui(self, caller=None, event=None):
        p = self._parameterNode
        running = self._job is not None
        ready = bool(p and p.inputVolume)
        self.ui.runButton.text = _("Cancel") if running else _("Run")
        self.ui.runButton.enabled = running or ready
        self.ui.runButton.toolTip = (_("Stop after the current batch of slices; the slices done are kept") if running
                                     else _("Segment the input volume") if ready else _("Select an input volume"))
        self.ui.settingsWidget.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.markReviewedButton.enabled = self.ui.unmarkReviewedButton.enabled = bool(
            not running and ready and p.outputSegmentation)
        if p and self.ui.modelPathLineEdit.currentPath != p.modelPath:
            wasBlocked = self.ui.modelPathLineEdit.blockSignals(True)
            self.ui.modelPathLineEdit.currentPath = p.modelPath
            self.ui.modelPathLineEdit.blockSignals(wasBlocked)
        rangeMode = bool(p and p.sliceMode == "range")
        self.ui.sliceFirstSpinBox.enabled = self.ui.sliceLastSpinBox.enabled = rangeMode
        if ready and p.inputVolume.GetImageData() is not None:
            from GuiDINOSegmentLib.VolumeNodes import sliceCountNode

            last = sliceCountNode(p.inputVolume, p.axis) - 1
            self.ui.sliceFirstSpinBox.maximum = self.ui.sliceLastSpinBox.maximum = max(last, 0)

    def onModelPathChanged(self, path):
        if self._parameterNode and self._parameterNode.modelPath != path.strip():
            self._parameterNode.modelPath = path.strip()

    # -- actions -------------------------------------------------------------------------------
    def ensureLogic(self, install=True):
        """Create the Logic once its Python packages are there (asking to install them if ``install``)."""
        if self.logic is not None:
            return True
        dependencies = DependencyLogic()
        if not (dependencies.ensureDependencies(parent=slicer.util.mainWindow()) if install
                else not dependencies.missing()):
            self.setStatus(_("GuiDINO needs these Python packages: {packages}").format(
                packages=", ".join(dependencies.missing())))
            return False
        self.logic = helpers.segmentLogicClass()()
        return True

    def onRunButton(self):
        if self._job is not None:
            self._job.cancel()
            self.ui.runButton.text = _("Cancelling...")
            self.ui.runButton.enabled = False
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("GuiDINO could not start."), waitCursor=True):
            if not self.ensureLogic():  # an installation that fails is shown, not only logged
                return
            if p.outputSegmentation is None:
                segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{p.inputVolume.GetName()} GuiDINO")
                segmentation.CreateDefaultDisplayNodes()
                p.outputSegmentation = segmentation
            current = self.currentSliceIndex(p.inputVolume, p.axis) if p.sliceMode == "current" else None
            job = self.logic.prepareSegmentation(p.inputVolume, p.outputSegmentation,
                                                 helpers.panelSettings(p, current))  # validates once
            self._request = job
            self._job = self.logic.startSegmentation(job)  # in the GuiDINO worker process
            self.showProgress(0, _("Loading the model..."))
            self.setStatus("")
            self._poller = JobPoller(self._job, workerJobProgress, self.showProgress, self.onJobFinished, qt.QTimer())
            self.updateGui()
            self._poller.start()

    def showProgress(self, percent, text):
        self.ui.progressBar.value = percent
        self.ui.progressBar.format = text

    def onJobFinished(self, state):
        self.showProgress(*workerJobProgress(state))
        job, self._job, self._request, self._poller = self._request, None, None, None
        self.updateGui()
        if state.error is not None:
            self.showError(str(state.error), state.errorDetails)
        elif job is None:
            self.setStatus(_("Cancelled: the scene was closed."))
        elif not all(slicer.mrmlScene.IsNodePresent(node) for node in (job.inputVolume, job.segmentation)):
            self.setStatus(_("Nothing written: the input volume or the segmentation was removed while GuiDINO ran."))
        else:
            try:
                result = self.logic.applySegmentation(job, state.result)
            except Exception as error:
                self.showError(str(error), traceback.format_exc())
                return
            status = _("{slices} segmented in {time}.").format(
                slices=helpers.slicesText(result.slicesProcessed), time=helpers.formatDuration(result.seconds))
            if result.cancelled:
                status += " " + _("Cancelled: the slices done were kept.")
            self.setStatus(status)
            self.onGuideDisplay()

    def onMarkReviewed(self, reviewed):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(waitCursor=True):
            if not self.ensureLogic():
                return
            segmentId = p.outputSegmentation.GetSegmentation().GetSegmentIdBySegmentName(p.segmentName)
            if not segmentId:
                raise ValueError(_("{segmentation} has no segment named {name!r}: run GuiDINO first, or type the "
                                   "segment's name.").format(segmentation=p.outputSegmentation.GetName(),
                                                             name=p.segmentName))
            index = self.currentSliceIndex(p.inputVolume, p.axis)
            if index is None:
                raise ValueError(_("The slice view is outside {volume}.").format(volume=p.inputVolume.GetName()))
            self.logic.markSliceReviewed(p.outputSegmentation, segmentId, index, axis=p.axis, reviewed=reviewed,
                                         volume=p.inputVolume)
            state = self.logic.reviewedSlices(p.outputSegmentation, segmentId, axis=p.axis, volume=p.inputVolume)
            self.setStatus(_("Slice {index} {what}. Reviewed {axis} slices: {slices}.").format(
                index=index, what=_("marked reviewed") if reviewed else _("unmarked"), axis=state["axis"],
                slices=helpers.formatSlices(state["slices"])))

    def onGuideDisplay(self, *unused):
        p = self._parameterNode
        if not (p and p.inputVolume):
            return
        with slicer.util.tryWithErrorDisplay(_("The guide overlay could not be shown.")):
            if not self.ensureLogic(install=False):
                return
            self.logic.setGuideOpacity(self.ui.guideOpacitySlider.value)
            guide = self.logic.guideVolume(p.inputVolume)
            if guide is not None:
                self.logic.showGuideVolume(guide, self.ui.showGuideCheckBox.checked)

    # -- helpers -------------------------------------------------------------------------------
    def currentSliceIndex(self, volume, axis):
        """Index along ``axis`` of the slice shown in the slice view that looks along ``axis``."""
        sliceNode = helpers.viewLookingAlongNode(helpers.shownSliceNodes(), axis)
        if sliceNode is None:
            raise ValueError(_("No slice view is open."))
        return helpers.sliceIndexAtViewNode(volume, sliceNode, axis)

    def setStatus(self, text):
        self.ui.statusLabel.text = text

    def showError(self, message, details):
        logging.error(f"GuiDINO: {message}\n{details}")
        self.setStatus(message)
        slicer.util.errorDisplay(message, windowTitle="GuiDINO", detailedText=details or None)


class GuiDINOSegmentTest(ScriptedLoadableModuleTest):
    """Smoke test run by Slicer's module tests; the application tests are in Testing/Slicer/."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_widget_and_effect()

    def test_widget_and_effect(self):
        widget = slicer.modules.guidinosegment.widgetRepresentation().self()
        self.assertEqual(widget.ui.runButton.text, "Run")
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        self.assertIsNotNone(editor.effectByName("GuiDINO"), "the GuiDINO effect is not registered")
        self.delayDisplay("GuiDINOSegment widget and effect load")
