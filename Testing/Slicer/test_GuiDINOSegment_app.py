"""GuiDINO Segment in the real Slicer application (pytest skips this folder: it needs Slicer).

Run it with::

    Slicer --no-main-window --testing --python-script Testing/Slicer/test_GuiDINOSegment_app.py

(ctest runs it through ``slicer_add_python_unittest``). The tests that run a model need a GuiDINO
model bundle in ``GUIDINO_TEST_MODEL`` and GuiDINO's Python packages installed (Slicer never installs
them while testing); they are skipped otherwise.
"""

import os
import time
import unittest

import numpy as np

import slicer

MODEL = os.environ.get("GUIDINO_TEST_MODEL")


def processEventsUntil(condition, timeout=900):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s")
        slicer.app.processEvents()
        time.sleep(0.02)


def makeVolume(shape=(12, 48, 40), name="GuiDINO test volume"):
    """An oblique volume with a bright ellipsoid in it."""
    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = np.array(shape) / 2
    blob = (((k - centre[0]) / (shape[0] * 0.3)) ** 2 + ((j - centre[1]) / (shape[1] * 0.25)) ** 2
            + ((i - centre[2]) / (shape[2] * 0.2)) ** 2) <= 1
    voxels = (200 + 600 * blob + rng.normal(0, 40, shape)).astype(np.int16)
    a = np.radians(20)
    ijkToRas = np.diag([0.8, 0.8, 2.5, 1.0])
    ijkToRas[:2, :2] = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([0.8, 0.8])
    ijkToRas[:3, 3] = (-20.0, 15.0, 40.0)
    return slicer.util.addVolumeFromArray(voxels, ijkToRAS=ijkToRas, name=name)


def centreViewOn(volume, kji, axis="axial"):
    """Put the slice view that looks along ``axis`` on voxel ``kji`` of ``volume``."""
    from GuiDINOSegmentLib import VolumeNodes as nodes
    from GuiDINOSegmentLib import WidgetHelpers as helpers

    sliceNodes = helpers.shownSliceNodes()
    if not sliceNodes:  # no main window and no views yet
        sliceNodes = [slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")]
        sliceNodes[0].SetLayoutName("Red")
        sliceNodes[0].SetOrientationToAxial()
    sliceNode = helpers.viewLookingAlongNode(sliceNodes, axis)
    ras = nodes.ijkToRasNode(volume) @ np.array([kji[2], kji[1], kji[0], 1.0])
    sliceNode.JumpSliceByCentering(*ras[:3])
    return sliceNode


def dependenciesMissing():
    from GuiDINOSegmentLib.DependencyLogic import DependencyLogic

    return DependencyLogic().missing()


class GuiDINOSegmentAppTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def requireModel(self):
        if not MODEL:
            self.skipTest("set GUIDINO_TEST_MODEL to a GuiDINO model bundle folder")
        missing = dependenciesMissing()
        if missing:
            self.skipTest(f"GuiDINO's Python packages are not installed: {', '.join(missing)}")

    def widget(self, volume=None):
        widget = slicer.modules.guidinosegment.widgetRepresentation().self()
        widget.initializeParameterNode()
        if volume is not None:
            widget._parameterNode.inputVolume = volume
        return widget

    def test_widget_created_with_settings_saved_in_the_scene(self):
        volume = makeVolume()
        widget = self.widget(volume)
        ui = widget.ui
        self.assertEqual(ui.runButton.text, "Run")
        self.assertTrue(ui.runButton.enabled)
        self.assertEqual([ui.axisComboBox.itemText(i) for i in range(ui.axisComboBox.count)],
                         ["axial", "coronal", "sagittal"])
        parameters = widget._parameterNode
        parameters.sliceMode = "range"
        parameters.sliceLast = 5
        self.assertTrue(ui.sliceFirstSpinBox.enabled)
        self.assertEqual(ui.sliceLastSpinBox.value, 5)
        self.assertEqual(ui.sliceLastSpinBox.maximum, 11)  # 12 axial slices
        ui.guideOpacitySlider.value = 0.7
        node = slicer.mrmlScene.GetSingletonNode("GuiDINOSegment", "vtkMRMLScriptedModuleNode")
        self.assertEqual(node.GetParameter("sliceMode"), "range")
        self.assertAlmostEqual(float(node.GetParameter("guideOpacity")), 0.7)

    def test_effect_is_registered_in_the_segment_editor(self):
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        effect = editor.effectByName("GuiDINO")
        self.assertIsNotNone(effect, "the GuiDINO effect is not registered")
        self.assertEqual(type(effect.self()).__name__, "SegmentEditorEffect")
        self.assertTrue(hasattr(effect.self(), "computePreviewLabelmap"))

    def test_run_on_a_small_volume_off_the_gui_thread(self):
        self.requireModel()
        volume = makeVolume()
        widget = self.widget(volume)
        parameters = widget._parameterNode
        parameters.modelPath = str(MODEL)
        parameters.outputSegmentation = None  # Run creates one
        widget.onRunButton()
        self.assertEqual(widget.ui.runButton.text, "Cancel", "Run should return at once and run in the background")
        processEventsUntil(lambda: widget._job is None)
        self.assertEqual(widget.ui.runButton.text, "Run")
        self.assertIn("slices segmented", widget.ui.statusLabel.text)
        segmentation = parameters.outputSegmentation
        segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName("GuiDINO")
        self.assertTrue(segmentId)
        labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        self.assertEqual(labels.shape, slicer.util.arrayFromVolume(volume).shape)

    def test_cancel_keeps_the_gui_responsive(self):
        self.requireModel()
        widget = self.widget(makeVolume())
        widget._parameterNode.modelPath = str(MODEL)
        widget.onRunButton()
        widget.onRunButton()  # Cancel
        self.assertEqual(widget.ui.runButton.text, "Cancelling...")
        processEventsUntil(lambda: widget._job is None)
        self.assertEqual(widget.ui.runButton.text, "Run")
        self.assertIn("Cancelled", widget.ui.statusLabel.text)

    def test_reviewed_slice_is_kept_by_the_next_run(self):
        self.requireModel()
        volume = makeVolume()
        widget = self.widget(volume)
        parameters = widget._parameterNode
        parameters.modelPath = str(MODEL)
        widget.onRunButton()
        processEventsUntil(lambda: widget._job is None)
        segmentation = parameters.outputSegmentation
        segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName("GuiDINO")
        labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        labels[4] = 0
        labels[4, 10:20, 10:20] = 1  # the user's correction of slice 4
        slicer.util.updateSegmentBinaryLabelmapFromArray(labels, segmentation, segmentId, volume)
        centreViewOn(volume, (4, 24, 20))
        widget.onMarkReviewed(True)
        self.assertIn(4, widget.logic.reviewedSlices(segmentation, segmentId)["slices"])
        widget.onRunButton()
        processEventsUntil(lambda: widget._job is None)
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        np.testing.assert_array_equal(after[4], labels[4])

    def test_preview_apply_undo_restores_the_segment(self):
        self.requireModel()
        volume = makeVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = segmentation.GetSegmentation().AddEmptySegment("liver", "liver")
        original = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
        original[3:9, 5:15, 5:12] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(original, segmentation, segmentId, volume)

        from GuiDINOSegmentLib import GuiDINOSegmentLogic

        GuiDINOSegmentLogic().markSliceReviewed(segmentation, segmentId, 5, axis="axial")

        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
        editor.setSegmentationNode(segmentation)
        editor.setSourceVolumeNode(volume)
        editor.setCurrentSegmentID(segmentId)
        editor.show()
        editor.setActiveEffectByName("GuiDINO")
        effect = editor.activeEffect()
        effect.setParameter("ModelPath", MODEL)
        effect.setParameter("Axis", "axial")
        effect.setParameter("Scope", "all")
        effect.self().onPreview()
        self.assertIsNotNone(effect.self().getPreviewNode(), "no preview was made")
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume),
                                      original, "the preview must not touch the segment")

        effect.self().onApply()
        self.assertIsNone(effect.self().getPreviewNode())
        applied = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        np.testing.assert_array_equal(applied[5], original[5], "a reviewed slice was overwritten")

        editor.undo()
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume),
                                      original, "undo did not restore the segment")
        editor.setActiveEffect(None)


if __name__ == "__main__":
    outcome = unittest.TextTestRunner(verbosity=2).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(GuiDINOSegmentAppTest))
    slicer.util.exit(0 if outcome.wasSuccessful() else 1)
