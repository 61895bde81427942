"""GuiDINO Segment Editor effect: preview the model's segmentation of the selected segment, then Apply or Cancel.

Registered by the GuiDINOSegment module at startup. It is one of Slicer's auto-complete effects:
their preview node, preview opacity, Cancel, and Apply (``saveStateForUndo`` then
``modifySegmentByLabelmap``, so the editable area, masking and overwrite settings hold and Ctrl+Z
restores the segment). Seed-growing effects derive their preview from drawn segments; GuiDINO needs
none, so ``preview`` makes the preview node itself and ``computePreviewLabelmap`` runs the model.
"""

import logging
import os

import ctk
import qt
import vtk

import slicer

from SegmentEditorEffects import AbstractScriptedSegmentEditorAutoCompleteEffect
from SegmentEditorEffects.AbstractScriptedSegmentEditorAutoCompleteEffect import ResultPreviewNodeReferenceRole

from GuiDINOSegmentLib.DependencyLogic import DependencyLogic
from GuiDINOSegmentLib.JobPoller import statedProgress, workerJobProgress
from GuiDINOSegmentLib.JobWait import JobWait, nodesStillThere
from GuiDINOSegmentLib.RefineRegistry import refineLogicClass
from GuiDINOSegmentLib.SegmentSettings import SegmentSettings
from GuiDINOSegmentLib import WidgetHelpers as helpers

SCOPE_LABELS = (("current", "Current slice"), ("visible", "Visible range"), ("all", "All slices"))


class SegmentEditorEffect(AbstractScriptedSegmentEditorAutoCompleteEffect):
    """Fills the selected segment with GuiDINO's prediction, previewed before it is applied."""

    def __init__(self, scriptedEffect):
        AbstractScriptedSegmentEditorAutoCompleteEffect.__init__(self, scriptedEffect)
        scriptedEffect.perSegment = True  # it fills the selected segment: disabled while none is selected
        scriptedEffect.name = "GuiDINO"  # modules find effects by name: not translated
        scriptedEffect.title = "GuiDINO"
        self.logic = None  # GuiDINOSegmentLogic, created on first preview (it imports torch)
        self._connections = []  # (widget, signal, slot) made in setupOptionsFrame, undone by cleanup
        self._previewed = None  # (SegmentationJob, prediction) of the preview
        self._fusion = None  # the preview's fusionReport: where its slices came from, the slice suggested next

    def cleanup(self):
        """Disconnect this effect's signals, so that Slicer can delete it (Slicer issue 7392)."""
        for widget, signal, slot in self._connections:
            widget.disconnect(signal, slot)
        self._connections = []
        AbstractScriptedSegmentEditorAutoCompleteEffect.cleanup(self)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return """<html>Fill the selected segment with a GuiDINO model's segmentation.<p>
<ul style="margin: 0">
<li>Select the segment, a model bundle, the axis and the slices (scope), then click <dfn>Initialize</dfn>.
<li><dfn>Apply</dfn> writes the preview into the segment (editable area, masking and overwrite settings
hold; Ctrl+Z undoes it); <dfn>Cancel</dfn> discards it.
<li>Reviewed slices (marked in GuiDINO Segment, or edited by you) and slices outside the scope keep their content.
</ul></html>"""

    # -- options -------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.modelPathEdit = ctk.ctkPathLineEdit()
        self.modelPathEdit.filters = (ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Drives
                                      | ctk.ctkPathLineEdit.Readable)
        self.modelPathEdit.options = ctk.ctkPathLineEdit.ShowDirsOnly
        self.modelPathEdit.settingKey = "GuiDINO/ModelBundle"
        self.modelPathEdit.toolTip = "GuiDINO model bundle folder. Empty: the GUIDINO_MODEL environment variable."
        self.scriptedEffect.addLabeledOptionsWidget("Model bundle:", self.modelPathEdit)

        self.axisComboBox = qt.QComboBox()
        for axis in helpers.AXES:
            self.axisComboBox.addItem(axis, axis)
        self.axisComboBox.toolTip = "Direction the volume is cut into slices."
        self.scopeComboBox = qt.QComboBox()
        for scope, label in SCOPE_LABELS:
            self.scopeComboBox.addItem(label, scope)
        self.scopeComboBox.toolTip = ("Current slice: the one shown in the view that looks along the axis. Visible "
                                      "range: the slices the slice views show. All slices: the whole volume.")
        slicesLayout = qt.QHBoxLayout()
        slicesLayout.addWidget(self.axisComboBox)
        slicesLayout.addWidget(self.scopeComboBox)
        self.scriptedEffect.addLabeledOptionsWidget("Slices:", slicesLayout)

        self.showGuideCheckBox = qt.QCheckBox("Show guide overlay")
        self.showGuideCheckBox.toolTip = "Show the DINOv3 guide of the previewed slices as a colour overlay."
        self.refineButton = qt.QPushButton("Refine from corrections")
        self.suggestedButton = qt.QPushButton("Go to suggested slice")
        self.suggestedButton.toolTip = helpers.SUGGESTED_SLICE_TOOLTIP
        self.suggestedButton.enabled = False
        guideLayout = qt.QHBoxLayout()
        guideLayout.addWidget(self.showGuideCheckBox)
        guideLayout.addWidget(self.refineButton)
        guideLayout.addWidget(self.suggestedButton)
        self.scriptedEffect.addOptionsWidget(guideLayout)

        AbstractScriptedSegmentEditorAutoCompleteEffect.setupOptionsFrame(self)  # Initialize, opacity, Cancel, Apply

        self._connections = [(self.modelPathEdit, "currentPathChanged(QString)", self.updateMRMLFromGUI),
                             (self.axisComboBox, "currentIndexChanged(int)", self.updateMRMLFromGUI),
                             (self.scopeComboBox, "currentIndexChanged(int)", self.updateMRMLFromGUI),
                             (self.showGuideCheckBox, "toggled(bool)", self.onShowGuide),
                             (self.refineButton, "clicked()", self.onRefine),
                             (self.suggestedButton, "clicked()", self.onSuggestedSlice)]
        for widget, signal, slot in self._connections:
            widget.connect(signal, slot)
        self.refineButton.enabled = False  # checked on activation: importing the Train logic imports torch
        self.refineButton.toolTip = helpers.REFINE_UNAVAILABLE_TOOLTIP

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("AutoUpdate", "0")  # a model run is too slow to follow each edit
        AbstractScriptedSegmentEditorAutoCompleteEffect.setMRMLDefaults(self)
        self.scriptedEffect.setParameterDefault("ModelPath", "")
        self.scriptedEffect.setParameterDefault("Axis", "axial")
        self.scriptedEffect.setParameterDefault("Scope", "all")
        self.scriptedEffect.setParameterDefault("ShowGuide", "1")

    def updateGUIFromMRML(self):
        AbstractScriptedSegmentEditorAutoCompleteEffect.updateGUIFromMRML(self)
        widgets = (self.modelPathEdit, self.axisComboBox, self.scopeComboBox, self.showGuideCheckBox)
        blocked = [widget.blockSignals(True) for widget in widgets]
        self.modelPathEdit.currentPath = self.scriptedEffect.parameter("ModelPath")
        self.axisComboBox.currentIndex = max(0, self.axisComboBox.findData(self.scriptedEffect.parameter("Axis")))
        self.scopeComboBox.currentIndex = max(0, self.scopeComboBox.findData(self.scriptedEffect.parameter("Scope")))
        self.showGuideCheckBox.checked = self.scriptedEffect.integerParameter("ShowGuide") != 0
        for widget, wasBlocked in zip(widgets, blocked):
            widget.blockSignals(wasBlocked)

    def updateMRMLFromGUI(self):
        AbstractScriptedSegmentEditorAutoCompleteEffect.updateMRMLFromGUI(self)
        self.scriptedEffect.setParameter("ModelPath", self.modelPathEdit.currentPath)
        self.scriptedEffect.setParameter("Axis", self.axisComboBox.currentData)
        self.scriptedEffect.setParameter("Scope", self.scopeComboBox.currentData)
        self.scriptedEffect.setParameter("ShowGuide", 1 if self.showGuideCheckBox.checked else 0)

    def updateRefineButton(self):
        available = not DependencyLogic().missing() and refineLogicClass() is not None
        self.refineButton.enabled = available
        self.refineButton.toolTip = ("Fine-tune the model on the slices you corrected (GuiDINO Train)" if available
                                     else helpers.REFINE_UNAVAILABLE_TOOLTIP)

    def activate(self):
        qt.QTimer.singleShot(0, self.onActivated)  # once the effect is shown; never in a constructor

    def onActivated(self):
        """The user opened the effect: offer the Python packages (once per session), then check Refine."""
        try:
            DependencyLogic().offerOnce(parent=slicer.util.mainWindow())
        except Exception as error:
            logging.exception("GuiDINO: installing the Python packages failed")
            slicer.util.errorDisplay(f"Installing GuiDINO's Python packages failed: {error}")
        self.updateRefineButton()

    def ensureLogic(self):
        if self.logic is None:
            dependencies = DependencyLogic()
            if not dependencies.ensureDependencies(parent=slicer.util.mainWindow()):
                raise RuntimeError(f"GuiDINO needs these Python packages: {', '.join(dependencies.missing())}")
            self.logic = helpers.segmentLogicClass()()
        return self.logic

    # -- preview -> apply ------------------------------------------------------------------------
    def preview(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        sourceVolume = parameterSetNode.GetSourceVolumeNode()
        segmentId = parameterSetNode.GetSelectedSegmentID()
        if not segmentId:
            raise ValueError("Select the segment GuiDINO should fill.")
        if sourceVolume is None:
            raise ValueError("Select a source volume.")
        self.ensureLogic()
        previewNode = self.getPreviewNode()
        if previewNode is not None and (self.selectedSegmentIds is None
                                        or self.selectedSegmentIds.GetValue(0) != segmentId):
            self.reset()  # the preview was of another segment
            previewNode = None
        opacity, show3D = self.getPreviewOpacity(), self.getPreviewShow3D()
        self.selectedSegmentIds = vtk.vtkStringArray()
        self.selectedSegmentIds.InsertNextValue(segmentId)

        outputLabelmap = slicer.vtkOrientedImageData()
        self.computePreviewLabelmap(None, outputLabelmap)  # the Logic reads the segment itself

        if previewNode is None:
            previewNode = self.createPreviewNode(segmentationNode, segmentId)
        previewNode.RemoveClosedSurfaceRepresentation()
        previewSegment = previewNode.GetSegmentation().GetSegment(segmentId)
        binaryLabelmap = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
        previewSegment.AddRepresentation(binaryLabelmap, outputLabelmap)
        previewSegment.SetLabelValue(1)
        self.setPreviewOpacity(opacity)
        self.setPreviewShow3D(show3D)
        self.updateGUIFromMRML()

    def createPreviewNode(self, segmentationNode, segmentId):
        """A preview segmentation with one segment like ``segmentId``, registered as the auto-complete effects do."""
        previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                         f"{segmentationNode.GetName()} preview")
        previewNode.CreateDefaultDisplayNodes()
        previewNode.GetDisplayNode().SetVisibility2DOutline(False)
        if segmentationNode.GetParentTransformNode():
            previewNode.SetAndObserveTransformNodeID(segmentationNode.GetParentTransformNode().GetID())
        self.scriptedEffect.setCommonNodeReference(ResultPreviewNodeReferenceRole, previewNode)
        self.scriptedEffect.setCommonParameter("SegmentationResultPreviewOwnerEffect", self.scriptedEffect.name)
        source = segmentationNode.GetSegmentation().GetSegment(segmentId)
        segment = slicer.vtkSegment()
        segment.SetName(source.GetName())
        segment.SetColor(source.GetColor())
        previewNode.GetSegmentation().AddSegment(segment, segmentId)
        return previewNode

    def computePreviewLabelmap(self, mergedImage, outputLabelmap):
        """Run the model over the scope; ``outputLabelmap`` receives what Apply would leave in the segment
        (``mergedImage``, the auto-complete effects' seed image, is not needed: the Logic reads the segment).

        The Logic's one write rule decides: the prediction on the unreviewed slices the scope covers, the
        segment's current content elsewhere, on the grid of the editor's source image.
        """
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        sourceVolume = parameterSetNode.GetSourceVolumeNode()
        axis = self.scriptedEffect.parameter("Axis") or "axial"
        settings = SegmentSettings(
            segmentId=self.selectedSegmentIds.GetValue(0), axis=axis,
            model=helpers.optionalText(self.scriptedEffect.parameter("ModelPath")),
            sliceRange=self.sliceRange(sourceVolume, axis, self.scriptedEffect.parameter("Scope") or "all"),
            showGuide=bool(self.scriptedEffect.integerParameter("ShowGuide")))
        job = self.logic.prepareSegmentation(sourceVolume, segmentationNode, settings)  # main thread
        prediction = self.runInBackground(self.logic.startSegmentation(job), workerJobProgress).result
        if not nodesStillThere(sourceVolume, segmentationNode) or (
                job.segmentId and segmentationNode.GetSegmentation().GetSegment(job.segmentId) is None):
            slicer.util.showStatusMessage("GuiDINO: the volume, segmentation or segment was removed meanwhile; "
                                          "nothing was previewed.", 5000)
            return
        labels, self._fusion = self.logic.previewLabels(job, prediction)
        self.suggestedButton.enabled = helpers.suggestedSlice(self._fusion) is not None
        if self._fusion is not None:
            slicer.util.showStatusMessage("GuiDINO: " + helpers.fusionSummary(self._fusion), 10000)
        from GuiDINOSegmentLib.VolumeNodes import orientedImageFromArrayNode, resampleToReference

        image = orientedImageFromArrayNode(labels, sourceVolume, segmentationNode)
        outputLabelmap.DeepCopy(resampleToReference(image, self.scriptedEffect.sourceVolumeImageData()))
        self._previewed = (job, prediction)
        if settings.showGuide:
            self.logic.showPredictionGuide(job, prediction)

    def sliceRange(self, volume, axis, scope):
        sliceNodes = helpers.shownSliceNodes()
        current = visible = None
        if scope == "current":
            view = helpers.viewLookingAlongNode(sliceNodes, axis)
            current = None if view is None else helpers.sliceIndexAtViewNode(volume, view, axis)
        elif scope == "visible":
            visible = helpers.visibleSliceRangeNode(volume, sliceNodes, axis)
        return helpers.sliceRangeForScope(scope, current, visible)

    @staticmethod
    def progressDialog():
        """A modal progress dialog: the editor cannot change under a running computation."""
        return slicer.util.createProgressDialog(windowTitle="GuiDINO", labelText="Loading the model...", maximum=100,
                                                autoClose=False, autoReset=False,
                                                windowModality=qt.Qt.ApplicationModal)

    def runInBackground(self, job, describe):
        """Wait for a job (of the GuiDINO worker process, or a refine run) behind a modal progress dialog (the
        editor must not change under it), in an event loop a timer wakes to poll the job (``JobWait``): Slicer stays
        responsive and its main thread sleeps between polls. Cancel keeps what is done; the dialog stays up until
        the job has stopped. ``describe(state)`` gives the dialog's (percent, text). Returns the job's last state;
        raises its error."""
        state = JobWait(job, describe, self.progressDialog(), qt.QTimer(), qt.QEventLoop()).run()
        if state.error is not None:
            raise state.error
        return state

    def onApply(self):
        previewed = self._previewed if self.getPreviewNode() is not None else None
        if previewed is None:
            AbstractScriptedSegmentEditorAutoCompleteEffect.onApply(self)
            return
        # The editor writes (masking, overwrite settings, undo); the Logic records what it wrote as GuiDINO's.
        self.logic.applyThroughEditor(*previewed, lambda: AbstractScriptedSegmentEditorAutoCompleteEffect.onApply(self))

    def reset(self):
        self._previewed = None
        AbstractScriptedSegmentEditorAutoCompleteEffect.reset(self)

    # -- guide and refinement ------------------------------------------------------------------
    def onShowGuide(self, show):
        self.updateMRMLFromGUI()
        sourceVolume = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        if self.logic is None or sourceVolume is None:
            return
        guide = self.logic.guideVolume(sourceVolume)
        if guide is not None:
            self.logic.showGuideVolume(guide, show)

    def onSuggestedSlice(self):
        """Centre the slice views on the slice the last preview suggests correcting next."""
        index = helpers.suggestedSlice(self._fusion)
        sourceVolume = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        if index is not None and sourceVolume is not None:
            self.logic.jumpToSlice(sourceVolume, self._fusion["arrayAxis"], index)

    def onRefine(self):
        """Fine-tune on the corrected slices (GuiDINO Train, in the worker process), then preview the refined model:
        Apply writes it.

        The Train Logic is asked not to re-segment by itself: that would write into the segment around the
        editor (no undo, no masking); the preview goes through Apply instead.
        """
        logicClass = refineLogicClass()
        if logicClass is None:
            self.updateRefineButton()
            return
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        sourceVolume, segmentId = parameterSetNode.GetSourceVolumeNode(), parameterSetNode.GetSelectedSegmentID()
        with slicer.util.tryWithErrorDisplay("Refine from corrections failed.", waitCursor=False):
            if not segmentId or sourceVolume is None:
                raise ValueError("Select a source volume and the corrected segment first.")
            trainLogic = logicClass(self.ensureLogic())
            segmentationNode = parameterSetNode.GetSegmentationNode()
            prepared = trainLogic.prepareRefine(
                sourceVolume, segmentationNode, segmentId,
                model=helpers.optionalText(self.scriptedEffect.parameter("ModelPath")), resegment=False)
            run = trainLogic.newRefineRun(sourceVolume, segmentationNode, segmentId, resegment=False)
            state = self.runInBackground(run.train(prepared), statedProgress)
            if run.bundle is None:
                slicer.util.showStatusMessage("GuiDINO: " + state.message, 5000)
                return
            self.scriptedEffect.setParameter("ModelPath", run.bundle)
            self.updateGUIFromMRML()
            self.onPreview()
