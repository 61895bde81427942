"""GuiDINO Segment: slice-by-slice segmentation of a volume, gated by a DINOv3 guide.

The module file only wires the GUI; the work happens in ``GuiDINOSegmentLib``.
"""

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class GuiDINOSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "GuiDINO Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["GuiDINO developers"]
        self.parent.helpText = (
            "Segment a structure slice by slice: a frozen DINOv3 guide gates a UNet / nnWNet-style "
            "network. The guide is shown as a colour overlay, the result as a segment."
        )
        self.parent.acknowledgementText = (
            "Method: Liang et al., GuiDINO (arXiv 2603.01115); DINOv3 (Meta AI)."
        )


class GuiDINOSegmentWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GuiDINOSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)


class GuiDINOSegmentTest(ScriptedLoadableModuleTest):
    def runTest(self):
        self.setUp()
        self.delayDisplay("GuiDINOSegment module loads")
