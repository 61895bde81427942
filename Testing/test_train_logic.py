"""GuiDINOTrainLogic on a real headless MRML scene: corrections from real edits, versions, rollback, cancel."""

import threading

import numpy as np
import pytest
import SimpleITK as sitk
import slicer.util
from conftest import synthetic_volume

from GuiDINOSegmentLib import GuiDINOSegmentLogic
from guidino.bundle import build_model, read_bundle_config, save_bundle
from guidino.model import ModelConfig
from guidino.errors import InputError
from GuiDINOTrainLib import GuiDINOTrainLogic
from guidino.training.settings import RefineSettings

LIGHT = {"network": "unet", "input_size": 64, "widths": [8, 16, 32, 64, 128]}


def _volume_and_segmentation(headless_slicer, tmp_path):
    """A synthetic volume loaded from a file, an empty segmentation, and the true labels."""
    image, labels = synthetic_volume(shape=(12, 48, 40))
    sitk.WriteImage(image, str(tmp_path / "volume.nrrd"))
    volume = headless_slicer.load_volume(tmp_path / "volume.nrrd")
    segmentation = headless_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    return volume, segmentation, sitk.GetArrayFromImage(labels)


@pytest.fixture
def setup(headless_slicer, tmp_path, tiny_guide_dir):
    volume, segmentation, truth = _volume_and_segmentation(headless_slicer, tmp_path)
    first = save_bundle(build_model(ModelConfig(**LIGHT), str(tiny_guide_dir)), tmp_path / "models" / "start")
    segment_logic = GuiDINOSegmentLogic()
    segment_logic.defaultModelPath = str(first)
    logic = GuiDINOTrainLogic(segment_logic, modelsFolder=tmp_path / "models")
    run = segment_logic.process(volume, segmentation, segmentName="target", device="cpu")
    return volume, segmentation, run.segmentId, truth, logic, first


def _segment(volume, segmentation, segment_id):
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume).copy()


def _correct(volume, segmentation, segment_id, truth, slices):
    """The user paints the true label on ``slices`` (a real segment edit)."""
    array = _segment(volume, segmentation, segment_id)
    array[slices] = truth[slices]
    slicer.util.updateSegmentBinaryLabelmapFromArray(array, segmentation, segment_id, volume)


def _settings(**kw):
    return RefineSettings(**{"steps": 60, "time_budget": None, "device": "cpu", **kw})  # steps, not the clock


def test_no_corrections_gives_the_promised_message(setup):
    volume, segmentation, segment_id, _, logic, _ = setup
    with pytest.raises(InputError, match="no corrections yet"):
        logic.refineFromCorrections(volume, segmentation, segment_id)


def test_refine_learns_from_edits_and_never_touches_reviewed_slices(setup):
    volume, segmentation, segment_id, truth, logic, first = setup
    _correct(volume, segmentation, segment_id, truth, [3, 6, 8])
    assert logic.corrections(segmentation, segment_id)["slices"] == [3, 6, 8]
    reviewed_before = _segment(volume, segmentation, segment_id)[[3, 6, 8]]

    result = logic.refineFromCorrections(volume, segmentation, segment_id, settings=_settings())
    assert result.bundle.parent == logic.modelsFolder and result.bundle.name == "volume-v001"
    assert result.slices == [3, 6, 8] and result.steps > 0 and result.voxelsChanged > 0
    provenance = read_bundle_config(result.bundle)["provenance"]
    assert provenance["parent"] == str(first.resolve()) and provenance["volume"] == "volume"
    np.testing.assert_array_equal(_segment(volume, segmentation, segment_id)[[3, 6, 8]], reviewed_before)
    assert logic.segmentLogic.activeModel(segmentation) == str(result.bundle)

    second = logic.refineFromCorrections(volume, segmentation, segment_id, settings=_settings(steps=5))
    assert second.bundle.name == "volume-v002"
    assert read_bundle_config(second.bundle)["provenance"]["parent"] == str(result.bundle.resolve())
    assert [v["path"].name for v in logic.versions()] == ["start", "volume-v001", "volume-v002"]
    np.testing.assert_array_equal(_segment(volume, segmentation, segment_id)[[3, 6, 8]], reviewed_before)


def test_rollback_restores_the_earlier_predictions_exactly(setup):
    volume, segmentation, segment_id, truth, logic, first = setup
    _correct(volume, segmentation, segment_id, truth, [5])
    logic.refineFromCorrections(volume, segmentation, segment_id, settings=_settings())
    v1 = _segment(volume, segmentation, segment_id)
    v1_bundle = logic.segmentLogic.activeModel(segmentation)
    _correct(volume, segmentation, segment_id, truth, [2, 5])
    logic.refineFromCorrections(volume, segmentation, segment_id, settings=_settings())
    after_v2 = _segment(volume, segmentation, segment_id)
    assert not np.array_equal(after_v2, v1)

    logic.rollback(volume, segmentation, segment_id, v1_bundle)
    back = _segment(volume, segmentation, segment_id)
    unreviewed = [k for k in range(back.shape[0]) if k not in (2, 5)]
    np.testing.assert_array_equal(back[unreviewed], v1[unreviewed])
    np.testing.assert_array_equal(back[[2, 5]], after_v2[[2, 5]])  # the user's slices stay the user's
    assert logic.segmentLogic.activeModel(segmentation) == v1_bundle


def test_cancel_keeps_the_previous_model_active_and_the_scene_consistent(setup):
    volume, segmentation, segment_id, truth, logic, first = setup
    _correct(volume, segmentation, segment_id, truth, [4, 6])
    before = _segment(volume, segmentation, segment_id)
    cancel = threading.Event()
    cancel.set()
    result = logic.refineFromCorrections(volume, segmentation, segment_id, cancelEvent=cancel,
                                         settings=_settings(keep_on_cancel=False))
    assert result.bundle is None and result.stopped == "cancelled"
    assert logic.segmentLogic.activeModel(segmentation) is None  # still the default bundle
    assert [v["path"].name for v in logic.versions()] == ["start"]
    np.testing.assert_array_equal(_segment(volume, segmentation, segment_id), before)


def test_few_shot_from_nothing(headless_slicer, tmp_path, tiny_guide_dir):
    volume, segmentation, truth = _volume_and_segmentation(headless_slicer, tmp_path)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "target")
    one_slice = np.zeros_like(truth)
    one_slice[6] = truth[6]
    slicer.util.updateSegmentBinaryLabelmapFromArray(one_slice, segmentation, segment_id, volume)
    segment_logic = GuiDINOSegmentLogic()
    segment_logic.guideSource = str(tiny_guide_dir)
    logic = GuiDINOTrainLogic(segment_logic, modelsFolder=tmp_path / "models")
    segment_logic.markSliceReviewed(segmentation, segment_id, 6)
    result = logic.refineFromCorrections(volume, segmentation, segment_id,
                                         settings=_settings(steps=120, new_model=dict(LIGHT)))
    assert read_bundle_config(result.bundle)["provenance"]["parent"] is None
    segmented = _segment(volume, segmentation, segment_id)
    np.testing.assert_array_equal(segmented[6], truth[6])
    assert segmented[[5, 7]].any(), "the neighbours of the labelled slice were segmented"
