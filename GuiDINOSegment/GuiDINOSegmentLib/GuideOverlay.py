"""The guide overlay: a prediction's guide as a colour volume over the input, shown in every slice view.

``GuiDINOSegmentLogic`` inherits it: the panels and the effect call ``guideVolume``, ``updateGuideVolume``,
``showGuideVolume`` and ``setGuideOpacity`` on the Logic.
"""

import numpy as np
import slicer
import vtk
from guidino.review import slice_mask

from .ReviewStore import GUIDE_INPUT_ROLE, watcher
from .VolumeNodes import matchGrid

GUIDE_COLOR_NAME = "GuiDINO guide"
GUIDE_COLORS = ((0.0, (0.0, 0.0, 0.5)), (0.25, (0.0, 0.4, 1.0)), (0.6, (1.0, 1.0, 0.0)), (1.0, (1.0, 0.0, 0.0)))
GUIDE_THRESHOLD = 0.05  # guide values below it are transparent in the slice views


class GuideOverlay:
    """The guide volume of each input volume (found by its node reference), its colours and its opacity."""

    def __init__(self):
        self.guideOpacity = 0.4

    def guideVolume(self, inputVolume):
        """The guide volume computed for ``inputVolume``, or None."""
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if node.GetNodeReferenceID(GUIDE_INPUT_ROLE) == inputVolume.GetID():
                return node
        return None

    def updateGuideVolume(self, inputVolume, prediction):
        """Create or update "<volume> GuiDINO guide" from a prediction's processed slices; returns the node."""
        guide = self.guideVolume(inputVolume)
        if guide is None:
            guide = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                       f"{inputVolume.GetName()} GuiDINO guide")
            guide.SetNodeReferenceID(GUIDE_INPUT_ROLE, inputVolume.GetID())
            watcher.watchScene(inputVolume.GetScene())
        values = matchGrid(guide, inputVolume, 0.0, np.float32)
        processed = slice_mask(values.shape, prediction.axis, np.flatnonzero(prediction.processed))
        values[processed] = prediction.guide[processed]
        slicer.util.arrayFromVolumeModified(guide)
        if guide.GetDisplayNode() is None:
            guide.CreateDefaultDisplayNodes()
        display = guide.GetDisplayNode()
        display.SetAndObserveColorNodeID(guideColorNode().GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.AutoThresholdOff()
        display.SetThreshold(GUIDE_THRESHOLD, 1.0)
        display.ApplyThresholdOn()
        return guide

    def showGuideVolume(self, guideNode, show=True):
        """Show the guide as the foreground of every slice view (or remove it from where it is shown)."""
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            if show:
                composite.SetForegroundVolumeID(guideNode.GetID())
                composite.SetForegroundOpacity(self.guideOpacity)
            elif composite.GetForegroundVolumeID() == guideNode.GetID():
                composite.SetForegroundVolumeID(None)

    def setGuideOpacity(self, opacity):
        """Foreground opacity (0..1) of every slice view, used for the guide from now on."""
        self.guideOpacity = float(min(max(opacity, 0.0), 1.0))
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(self.guideOpacity)


def guideColorNode():
    """The guide's colour map (dark blue at 0 through yellow to red at 1), created once per scene."""
    node = slicer.mrmlScene.GetFirstNode(GUIDE_COLOR_NAME, "vtkMRMLProceduralColorNode")
    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLProceduralColorNode", GUIDE_COLOR_NAME)
        colors = vtk.vtkColorTransferFunction()
        for value, rgb in GUIDE_COLORS:
            colors.AddRGBPoint(value, *rgb)
        node.SetAndObserveColorTransferFunction(colors)
        node.SetAttribute("Category", "GuiDINO")
    return node
