"""Segmentation metrics for one case: Dice, IoU and HD95, computed with MONAI.

Definitions (binary masks of one case, 2D ``(H, W)`` or 3D ``(D, H, W)``):

- ``dice`` = 2|P∩T| / (|P| + |T|); ``iou`` = |P∩T| / |P∪T|.
- ``hd95`` is MONAI's ``compute_hausdorff_distance(percentile=95, directed=False)``: the boundary
  (surface) voxels of each mask are those removed by a binary erosion; for each boundary voxel of
  one mask the Euclidean distance to the nearest boundary voxel of the other mask is taken; the
  95th percentile (linear interpolation) is taken of each directed set, and HD95 is the larger of
  the two. This is also the definition of DeepMind's ``surface-distance`` package; medpy's ``hd95``
  pools both directions before the percentile, which can give a slightly smaller value.
- Units: pixels (voxels) of the evaluated array when ``spacing`` is None, else the units of
  ``spacing`` (mm), one value per array axis in the array's axis order (numpy ``(k, j, i)``).

Edge cases:

- both masks empty: ``dice = iou = 1``, ``hd95 = 0`` (a correct "nothing here").
- exactly one mask empty: ``dice = iou = 0``, ``hd95 =`` the diagonal of the image extent,
  ``sqrt(sum((shape * spacing) ** 2))``, in the same units: a finite worst-case penalty, larger
  than any achievable HD95, so that means over cases stay finite.
"""

import math
import warnings

import numpy as np
import torch


def _binary_pair(pred, truth):
    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have the same shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def dice_score(pred, truth):
    """Dice of binary masks of any shape (MONAI's ``compute_dice``); both empty scores 1."""
    from monai.metrics import compute_dice  # slow import: on first use

    pred, truth = _binary_pair(pred, truth)
    if not pred.any() and not truth.any():
        return 1.0
    p, t = (torch.from_numpy(a).reshape(1, 1, -1).float() for a in (pred, truth))
    return float(compute_dice(p, t, include_background=True, ignore_empty=False))


def case_metrics(pred, truth, spacing=None):
    """Dice, IoU and HD95 of one binary prediction against its ground truth (see module docstring)."""
    from monai.metrics import compute_hausdorff_distance, compute_iou  # slow import: on first use

    pred, truth = _binary_pair(pred, truth)
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {pred.shape}")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != pred.ndim:
            raise ValueError(f"spacing {spacing} does not match a {pred.ndim}D mask")

    pred_any, truth_any = bool(pred.any()), bool(truth.any())
    if not pred_any and not truth_any:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    if not (pred_any and truth_any):
        extent = np.asarray(pred.shape, dtype=float) * (np.asarray(spacing) if spacing is not None else 1.0)
        return {"dice": 0.0, "iou": 0.0, "hd95": math.hypot(*extent)}

    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(truth)[None, None].float()
    with warnings.catch_warnings():
        # MONAI 1.5-1.6 passes its own deprecated ``always_return_as_numpy`` argument internally
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd95 = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
    return {
        "dice": dice_score(pred, truth),
        "iou": float(compute_iou(p, t, include_background=True, ignore_empty=False)),
        "hd95": float(hd95),
    }


def summarize(cases):
    """Means of ``dice``, ``iou`` and ``hd95`` over per-case dicts, with the case count ``n``."""
    summary = {"n": len(cases)}
    for key in ("dice", "iou", "hd95"):
        summary[key] = float(np.mean([c[key] for c in cases])) if cases else float("nan")
    return summary


def multiclass_case_metrics(pred_labels, truth_labels, classes, spacing=None):
    """``{class_value: case_metrics(pred == class_value, truth == class_value)}`` for each class."""
    pred_labels, truth_labels = np.asarray(pred_labels), np.asarray(truth_labels)
    return {c: case_metrics(pred_labels == c, truth_labels == c, spacing) for c in classes}
