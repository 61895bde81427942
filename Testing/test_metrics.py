"""Metrics: Dice / IoU / HD95 definitions, units, anisotropic spacing and edge cases."""

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, distance_transform_edt

from guidino.metrics import case_metrics, multiclass_case_metrics, summarize


def _directed_surface_distances(a, b, spacing):
    """Distances from each boundary voxel of a to the nearest boundary voxel of b (scipy EDT)."""
    boundary_a = a & ~binary_erosion(a)
    boundary_b = b & ~binary_erosion(b)
    return distance_transform_edt(~boundary_b, sampling=spacing)[boundary_a]


def _hd95_reference(a, b, spacing=None):
    """(max of the two directed 95th percentiles, medpy's 95th percentile of the pooled distances)."""
    d_ab = _directed_surface_distances(a, b, spacing)
    d_ba = _directed_surface_distances(b, a, spacing)
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), np.percentile(np.concatenate([d_ab, d_ba]), 95)


def _box(shape, *slices):
    m = np.zeros(shape, dtype=bool)
    m[slices] = True
    return m


def test_identical_masks():
    m = _box((32, 32), slice(5, 20), slice(8, 25))
    assert case_metrics(m, m) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}


def test_dice_and_iou_by_hand():
    truth = _box((10, 10), slice(2, 4), slice(2, 5))  # 6 pixels
    pred = _box((10, 10), slice(3, 5), slice(3, 5))  # 4 pixels, 2 of them in truth
    m = case_metrics(pred, truth)
    assert m["dice"] == pytest.approx(2 * 2 / 10)
    assert m["iou"] == pytest.approx(2 / 8)


def test_hd95_single_pixels_in_pixels_and_with_spacing():
    a = _box((20, 20), 5, 5)
    b = _box((20, 20), 8, 9)  # offset (3, 4)
    assert case_metrics(a, b)["hd95"] == pytest.approx(5.0)
    assert case_metrics(a, b, spacing=(2.0, 1.0))["hd95"] == pytest.approx(math.hypot(6, 4))


def test_hd95_is_max_of_directed_percentiles_not_pooled():
    truth = _box((64, 64), slice(10, 30), slice(10, 30))
    pred = truth | _box((64, 64), slice(45, 47), slice(45, 48))  # a small far-away false positive
    directed_max, pooled = _hd95_reference(pred, truth)
    assert directed_max > pooled + 5  # the example separates the two definitions
    assert case_metrics(pred, truth)["hd95"] == pytest.approx(directed_max, rel=1e-5)
    assert case_metrics(truth, pred)["hd95"] == pytest.approx(directed_max, rel=1e-5)  # symmetric


def test_hd95_3d_anisotropic_spacing():
    truth = _box((12, 16, 16), slice(3, 8), slice(4, 12), slice(4, 11))
    pred = _box((12, 16, 16), slice(5, 10), slice(4, 12), slice(5, 13))
    iso = case_metrics(pred, truth)["hd95"]
    aniso = case_metrics(pred, truth, spacing=(2.0, 1.0, 1.0))["hd95"]
    assert iso == pytest.approx(_hd95_reference(pred, truth)[0], rel=1e-5)
    assert aniso == pytest.approx(_hd95_reference(pred, truth, (2.0, 1.0, 1.0))[0], rel=1e-5)
    assert aniso > iso + 1

    a, b = _box((8, 8, 8), 2, 2, 2), _box((8, 8, 8), 3, 4, 4)  # offset (1, 2, 2) voxels
    assert case_metrics(a, b)["hd95"] == pytest.approx(3.0)
    assert case_metrics(a, b, spacing=(2.0, 1.0, 1.0))["hd95"] == pytest.approx(math.sqrt(12))


def test_empty_cases():
    empty = np.zeros((30, 40), dtype=bool)
    m = _box((30, 40), slice(5, 9), slice(5, 9))
    assert case_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    for pred, truth in ((empty, m), (m, empty)):
        assert case_metrics(pred, truth) == {"dice": 0.0, "iou": 0.0, "hd95": pytest.approx(50.0)}
    assert case_metrics(empty, m, spacing=(0.5, 2.0))["hd95"] == pytest.approx(math.hypot(15, 80))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        case_metrics(np.zeros((4, 5)), np.zeros((5, 4)))


def test_summarize_means():
    cases = [{"dice": 1.0, "iou": 1.0, "hd95": 0.0}, {"dice": 0.5, "iou": 0.25, "hd95": 10.0}]
    assert summarize(cases) == {"n": 2, "dice": 0.75, "iou": 0.625, "hd95": 5.0}
    assert all(isinstance(v, float) for k, v in summarize(cases).items() if k != "n")
    assert summarize([])["n"] == 0


def test_multiclass_per_class():
    truth = np.zeros((20, 20), dtype=np.int64)
    truth[2:6, 2:6] = 1
    truth[10:15, 10:15] = 2
    pred = truth.copy()
    pred[pred == 2] = 0
    per_class = multiclass_case_metrics(pred, truth, classes=(1, 2))
    assert per_class[1] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    assert per_class[2]["dice"] == 0.0 and per_class[2]["hd95"] == pytest.approx(math.hypot(20, 20))
