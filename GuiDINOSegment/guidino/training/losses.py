"""GuiDINO training losses: L = L_seg + λ·L_guide (+ optional boundary hinge).

``L_seg`` is MONAI's Dice + cross-entropy with batch Dice (one Dice over the whole batch, as
nnU-Net does), binary (sigmoid + BCE-with-logits) for one output channel and multi-class
(softmax + CE, Dice over the foreground classes) for more. ``L_guide`` is BCE-with-logits
against the foreground fraction of the ground truth at the guide's grid (the paper's BCE, not
the reference code's MSE). Losses are computed in float32 even under autocast.
"""

import functools

import torch.nn.functional as F

from ..networks import deep_supervision_weights

# smooth = 1 keeps Dice near 0 for a confident all-background prediction of an empty batch
# (MONAI's 1e-5 turns the 1e-9 residual probabilities into a loss of ~0.1) and is negligible otherwise.
_DICE_KW = {"batch": True, "smooth_nr": 1.0, "smooth_dr": 1.0}


@functools.cache
def _dice_ce(binary):
    from monai.losses import DiceCELoss  # imported on first use: monai takes seconds to import

    if binary:
        return DiceCELoss(sigmoid=True, **_DICE_KW)
    return DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, **_DICE_KW)

_BOUNDARY_KERNEL = 3  # the boundary band: pixels whose 3x3 neighbourhood holds both classes


def _with_channel(target):
    """``(B, H, W)`` -> ``(B, 1, H, W)``; ``(B, 1, H, W)`` unchanged."""
    if target.ndim == 3:
        return target.unsqueeze(1)
    if target.ndim == 4 and target.shape[1] == 1:
        return target
    raise ValueError(f"expected a target of shape (B, H, W) or (B, 1, H, W), got {tuple(target.shape)}")


def segmentation_loss(logits, target):
    """Dice + CE of logits ``(B, C, H, W)``: binary for C == 1 (target in {0, 1}), else integer labels."""
    target = _with_channel(target)
    if logits.shape[1] == 1:
        return _dice_ce(True)(logits.float(), target.float())
    return _dice_ce(False)(logits.float(), target.long())


def _resize_target(target, size):
    """Nearest-neighbour resize of a ``(B, 1, H, W)`` target, keeping its dtype."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(size), mode="nearest-exact").to(target.dtype)


def deep_supervision_loss(outputs, target, weights=None):
    """Weighted ``segmentation_loss`` over outputs (full resolution first), target resized to each."""
    weights = deep_supervision_weights(len(outputs)) if weights is None else list(weights)
    if len(weights) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} deep-supervision weights")
    target = _with_channel(target)
    return sum(w * segmentation_loss(out, _resize_target(target, out.shape[-2:])) for w, out in zip(weights, outputs))


def guide_target(target, grid_hw):
    """Foreground fraction (label > 0) of the ground truth in each guide cell, ``(B, 1, h, w)`` in [0, 1]."""
    foreground = (_with_channel(target) > 0).float()
    return F.adaptive_avg_pool2d(foreground, tuple(grid_hw))


def guide_loss(guide_logits, target):
    """BCE-with-logits between guide logits ``(B, 1, h, w)`` and ``guide_target`` at that grid."""
    return F.binary_cross_entropy_with_logits(guide_logits.float(), guide_target(target, guide_logits.shape[-2:]))


def boundary_hinge_loss(logits, target, margin=1.0):
    """Mean ``relu(margin - y·logit)``, y = ±1, over the pixels in a thin band around the true boundary.

    Binary only (logits ``(B, 1, H, W)``). Zero when the target has no boundary.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"the boundary hinge loss is binary: expected 1 logit channel, got {logits.shape[1]}")
    t = (_with_channel(target) > 0).float()
    pad = _BOUNDARY_KERNEL // 2
    dilated = F.max_pool2d(t, _BOUNDARY_KERNEL, stride=1, padding=pad)
    eroded = -F.max_pool2d(-t, _BOUNDARY_KERNEL, stride=1, padding=pad)
    band = dilated - eroded
    hinge = F.relu(margin - (2.0 * t - 1.0) * logits.float())
    return (hinge * band).sum() / band.sum().clamp_min(1.0)


class GuiDINOLoss:
    """``L_seg`` (deep-supervised for a list) + ``guide_weight·L_guide`` + ``boundary_weight·L_boundary``."""

    def __init__(self, guide_weight=0.1, boundary_weight=0.0, deep_supervision_weights=None):
        self.guide_weight = guide_weight
        self.boundary_weight = boundary_weight
        self.deep_supervision_weights = deep_supervision_weights

    def __call__(self, logits_or_list, target, guide_logits=None):
        """Return ``(total, {"seg", "guide", "boundary"})``; components are detached tensors, 0 when off."""
        if isinstance(logits_or_list, (list, tuple)):
            seg = deep_supervision_loss(logits_or_list, target, self.deep_supervision_weights)
            logits = logits_or_list[0]
        else:
            seg = segmentation_loss(logits_or_list, target)
            logits = logits_or_list
        zero = seg.new_zeros(())
        guide = guide_loss(guide_logits, target) if guide_logits is not None else zero
        boundary = boundary_hinge_loss(logits, target) if self.boundary_weight else zero
        total = seg + self.guide_weight * guide + self.boundary_weight * boundary
        return total, {"seg": seg.detach(), "guide": guide.detach(), "boundary": boundary.detach()}
