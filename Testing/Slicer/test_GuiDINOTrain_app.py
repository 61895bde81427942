"""GuiDINO Train in the real Slicer application (pytest skips this folder: it needs Slicer).

Run it with::

    Slicer --no-main-window --testing --python-script Testing/Slicer/test_GuiDINOTrain_app.py

(ctest runs it through ``slicer_add_python_unittest``). The tests that train need a GuiDINO model
bundle in ``GUIDINO_TEST_MODEL`` and GuiDINO's Python packages installed (Slicer never installs
them while testing); they are skipped otherwise. Refined versions go to a temporary folder, never
to the user's model cache.
"""

import os
import pathlib
import tempfile
import time
import unittest

import numpy as np

import slicer

MODEL = os.environ.get("GUIDINO_TEST_MODEL")


def processEventsUntil(condition, timeout=900):
    """Run the event loop until ``condition()``; returns the longest time one processEvents() took."""
    deadline, longest = time.monotonic() + timeout, 0.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s")
        start = time.monotonic()
        slicer.app.processEvents()
        longest = max(longest, time.monotonic() - start)
        time.sleep(0.02)
    return longest


def makeVolume(shape=(12, 48, 40), name="GuiDINO train volume"):
    """An oblique volume with a bright ellipsoid, and the ellipsoid's mask (the truth)."""
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
    return slicer.util.addVolumeFromArray(voxels, ijkToRAS=ijkToRas, name=name), blob.astype(np.uint8)


def dependenciesMissing():
    from GuiDINOSegmentLib.DependencyLogic import DependencyLogic

    return DependencyLogic().missing()


class GuiDINOTrainAppTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear(0)
        self.models = tempfile.TemporaryDirectory(prefix="GuiDINOTrain-test-")

    def tearDown(self):
        widget = slicer.modules.guidinotrain.widgetRepresentation().self()
        if widget._run is not None:
            widget._run.abandon()
            processEventsUntil(lambda: widget._run is None, timeout=300)
        self.models.cleanup()

    def requireModel(self):
        if not MODEL:
            self.skipTest("set GUIDINO_TEST_MODEL to a GuiDINO model bundle folder")
        missing = dependenciesMissing()
        if missing:
            self.skipTest(f"GuiDINO's Python packages are not installed: {', '.join(missing)}")

    def widget(self, volume=None, segmentation=None):
        widget = slicer.modules.guidinotrain.widgetRepresentation().self()
        widget.initializeParameterNode()
        parameters = widget._parameterNode  # a singleton: start each test from the defaults
        parameters.segmentId, parameters.timeBudget = "", 0
        parameters.trainTokenBook, parameters.trainNetwork, parameters.trainLoRA = True, True, False
        if volume is not None:
            widget._parameterNode.inputVolume = volume
        if segmentation is not None:
            widget._parameterNode.segmentation = segmentation
        return widget

    def segmentedScene(self):
        """A volume segmented by the test model, with slices 3 and 7 corrected to the truth by 'the user'."""
        from GuiDINOSegmentLib import GuiDINOSegmentLogic

        volume, truth = makeVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "GuiDINO train segmentation")
        segmentation.CreateDefaultDisplayNodes()
        segmentLogic = GuiDINOSegmentLogic()
        segmentLogic.defaultModelPath = MODEL
        segmentId = segmentLogic.process(volume, segmentation, segmentName="GuiDINO", model=MODEL).segmentId
        labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        labels[[3, 7]] = truth[[3, 7]]
        slicer.util.updateSegmentBinaryLabelmapFromArray(labels, segmentation, segmentId, volume)
        return volume, segmentation, segmentId, labels.copy(), segmentLogic

    def trainWidget(self, volume, segmentation, segmentLogic):
        from GuiDINOTrainLib import GuiDINOTrainLogic

        widget = self.widget(volume, segmentation)
        widget.logic = GuiDINOTrainLogic(segmentLogic, modelsFolder=self.models.name)
        return widget

    # -- without a model -----------------------------------------------------------------------
    def test_widget_builds_with_settings_saved_in_the_scene(self):
        volume, _ = makeVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.GetSegmentation().AddEmptySegment("other", "other")
        segmentId = segmentation.GetSegmentation().AddEmptySegment("GuiDINO", "GuiDINO")
        widget = self.widget(volume, segmentation)
        ui, parameters = widget.ui, widget._parameterNode
        self.assertEqual(parameters.segmentId, segmentId, "the GuiDINO segment is preferred")
        self.assertEqual(ui.segmentSelector.currentSegmentID(), segmentId)
        self.assertEqual(ui.refineButton.text, "Refine from corrections")
        self.assertTrue(ui.refineButton.enabled)
        self.assertTrue(ui.progressBar.isHidden())

        ui.segmentSelector.setCurrentSegmentID("other")
        self.assertEqual(parameters.segmentId, "other")
        ui.trainLoRACheckBox.checked = True
        ui.timeBudgetSpinBox.value = 120
        node = slicer.mrmlScene.GetSingletonNode("GuiDINOTrain", "vtkMRMLScriptedModuleNode")
        self.assertEqual(node.GetParameter("trainLoRA"), "True")
        self.assertEqual(node.GetParameter("timeBudget"), "120")
        self.assertEqual(node.GetParameter("segmentId"), "other")
        ui.timeBudgetSpinBox.value = 0
        self.assertEqual(ui.timeBudgetSpinBox.text, "no limit")

        for box in (ui.trainTokenBookCheckBox, ui.trainNetworkCheckBox, ui.trainLoRACheckBox):
            box.checked = False
        self.assertFalse(ui.refineButton.enabled)
        self.assertIn("Choose what to train", ui.refineButton.toolTip)
        parameters.trainNetwork = True
        self.assertTrue(ui.refineButton.enabled)
        self.assertFalse(ui.rollbackButton.enabled, "no version is selected")

    # -- with a model --------------------------------------------------------------------------
    def test_refine_without_corrections_says_what_to_do(self):
        self.requireModel()
        from GuiDINOSegmentLib import GuiDINOSegmentLogic

        volume, _ = makeVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentLogic = GuiDINOSegmentLogic()
        segmentLogic.process(volume, segmentation, segmentName="GuiDINO", model=MODEL)
        widget = self.trainWidget(volume, segmentation, segmentLogic)
        widget.refreshLists()
        self.assertEqual(widget.ui.correctionsList.count, 0)
        self.assertIn("No corrections yet", widget.ui.correctionsLabel.text)
        with self.assertRaisesRegex(ValueError, "no corrections"):  # shown in a dialog outside testing
            widget.onRefineButton()
        self.assertIsNone(widget._run)
        self.assertEqual(widget.ui.refineButton.text, "Refine from corrections")

    def test_refine_off_the_gui_thread_then_roll_back(self):
        self.requireModel()
        volume, segmentation, segmentId, corrected, segmentLogic = self.segmentedScene()
        widget = self.trainWidget(volume, segmentation, segmentLogic)
        widget._parameterNode.timeBudget = 20
        widget.refreshLists()
        self.assertEqual(widget.ui.correctionsList.count, 2)
        self.assertIn("2 corrected axial slices (3, 7)", widget.ui.correctionsLabel.text)

        widget.onRefineButton()
        self.assertEqual(widget.ui.refineButton.text, "Cancel", "Refine should return at once and train in the background")
        self.assertFalse(widget.ui.progressBar.isHidden())
        longest = processEventsUntil(lambda: widget._run is None)
        self.assertLess(longest, 5.0, "the GUI thread was blocked while training")
        status = widget.ui.statusLabel.text
        self.assertIn("Saved", status)
        self.assertIn("re-segmented", status)
        first = segmentLogic.activeModel(segmentation)
        self.assertEqual(pathlib.Path(first).parent, pathlib.Path(self.models.name))
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        np.testing.assert_array_equal(after[[3, 7]], corrected[[3, 7]], "a corrected slice was overwritten")
        self.assertEqual(widget.ui.versionsList.count, 1)
        self.assertIn("(active)", widget.ui.versionsList.item(0).text())
        self.assertIn("in the active model", widget.ui.correctionsList.item(0).text())

        widget.onRefineButton()  # a second round: version 2
        processEventsUntil(lambda: widget._run is None)
        second = segmentLogic.activeModel(segmentation)
        self.assertNotEqual(second, first)
        self.assertEqual(widget.ui.versionsList.count, 2)
        self.assertIn("(active)", widget.ui.versionsList.item(0).text())  # newest first

        widget.ui.versionsList.setCurrentRow(1)
        self.assertTrue(widget.ui.rollbackButton.enabled)
        widget.onRollbackButton()
        processEventsUntil(lambda: widget._run is None)
        self.assertEqual(segmentLogic.activeModel(segmentation), first)
        self.assertIn("Rolled back", widget.ui.statusLabel.text)
        self.assertIn("(active)", widget.ui.versionsList.item(1).text())
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        np.testing.assert_array_equal(after[[3, 7]], corrected[[3, 7]])

    def test_cancel_keeps_the_gui_responsive_and_skips_resegmentation(self):
        self.requireModel()
        volume, segmentation, segmentId, corrected, segmentLogic = self.segmentedScene()
        widget = self.trainWidget(volume, segmentation, segmentLogic)
        before = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume).copy()
        widget.onRefineButton()
        widget.onRefineButton()  # Cancel
        self.assertEqual(widget.ui.refineButton.text, "Cancelling...")
        processEventsUntil(lambda: widget._run is None)
        self.assertEqual(widget.ui.refineButton.text, "Refine from corrections")
        self.assertIn("not re-segmented", widget.ui.statusLabel.text)
        np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume),
                                      before, "a cancelled refine must not change the segment")

    def test_scene_close_during_refine_writes_nothing(self):
        self.requireModel()
        volume, segmentation, segmentId, corrected, segmentLogic = self.segmentedScene()
        widget = self.trainWidget(volume, segmentation, segmentLogic)
        widget.onRefineButton()
        slicer.mrmlScene.Clear(0)
        processEventsUntil(lambda: widget._run is None)
        self.assertIn("scene was closed", widget.ui.statusLabel.text)
        self.assertEqual(list(pathlib.Path(self.models.name).iterdir()), [])


if __name__ == "__main__":
    outcome = unittest.TextTestRunner(verbosity=2).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(GuiDINOTrainAppTest))
    slicer.util.exit(0 if outcome.wasSuccessful() else 1)
