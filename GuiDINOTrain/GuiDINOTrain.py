"""GuiDINO Train: refine the GuiDINO model from the user's corrections.

The module file only wires the GUI; the work happens in ``GuiDINOTrainLib``.
"""

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class GuiDINOTrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "GuiDINO Train"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["GuiDINO developers"]
        self.parent.helpText = (
            "Refine from corrections: fine-tune the TokenBook, LoRA adapters and the network on the "
            "slices you corrected, then re-segment the slices you have not reviewed."
        )
        self.parent.acknowledgementText = (
            "Method: Liang et al., GuiDINO (arXiv 2603.01115); DINOv3 (Meta AI)."
        )


class GuiDINOTrainWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GuiDINOTrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)


class GuiDINOTrainTest(ScriptedLoadableModuleTest):
    def runTest(self):
        self.setUp()
        self.delayDisplay("GuiDINOTrain module loads")
