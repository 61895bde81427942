"""GuiDINO training losses: L = L_seg + λ·L_guide (+ optional boundary hinge).

``L_seg`` is MONAI's Dice + cross-entropy with batch Dice (one Dice over the whole batch, as
nnU-Net does), binary (sigmoid + BCE-with-logits) for one output channel and multi-class
(softmax + CE, Dice over the foreground classes) for more. ``L_guide`` is BCE-with-logits
against the foreground fraction of the ground truth at the guide's grid (the paper's BCE, not
the reference code's MSE). Losses are computed in float32 even under autocast.

A binary target may leave pixels unlabelled (``IGNORE``): no term of the loss reads them (a slice labelled only
where the interpolation between the user's slices is sure, ``training.refine``).
"""

import functools

import torch.nn.functional as F

from ..networks import deep_supervision_weights

# smooth = 1 keeps Dice near 0 for a confident all-background prediction of an empty batch
# (MONAI's 1e-5 turns the 1e-9 residual probabilities into a loss of ~0.1) and is negligible otherwise.
_DICE_KW = {"batch": True, "smooth_nr": 1.0, "smooth_dr": 1.0}
IGNORE = 255  # a binary target's unlabelled pixels


@functools.cache
def _dice(binary):
    from monai.losses import DiceCELoss, MaskedDiceLoss  # imported on first use: monai takes seconds to import

    if binary:
        return MaskedDiceLoss(sigmoid=True, **_DICE_KW)
    return DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, **_DICE_KW)

_BOUNDARY_KERNEL = 3  # the boundary band: labelled pixels whose 3x3 neighbourhood holds both classes


def _with_channel(target):
    """``(B, H, W)`` -> ``(B, 1, H, W)``; ``(B, 1, H, W)`` unchanged."""
    if target.ndim == 3:
        return target.unsqueeze(1)
    if target.ndim == 4 and target.shape[1] == 1:
        return target
    raise ValueError(f"expected a target of shape (B, H, W) or (B, 1, H, W), got {tuple(target.shape)}")


def _known(target):
    """``(foreground, known)`` of a ``(B, 1, H, W)`` target as float maps: label > 0, and not ``IGNORE``."""
    known = target != IGNORE
    return ((target > 0) & known).float(), known.float()


def segmentation_loss(logits, target):
    """Dice + CE of logits ``(B, C, H, W)``: binary for C == 1 (target in {0, 1}, ``IGNORE`` where unlabelled:
    the Dice and the mean CE over the labelled pixels only), else integer labels (no ``IGNORE``)."""
    target = _with_channel(target)
    if logits.shape[1] == 1:
        foreground, known = _known(target)
        cross_entropy = F.binary_cross_entropy_with_logits(logits.float(), foreground, weight=known, reduction="sum")
        return _dice(True)(logits.float(), foreground, mask=known) + cross_entropy / known.sum().clamp_min(1.0)
    if (target == IGNORE).any():
        raise ValueError(f"unlabelled pixels ({IGNORE}) are for binary targets only")
    return _dice(False)(logits.float(), target.long())


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


def _cell_fractions(target, grid_hw):
    """Per guide cell, ``(B, 1, h, w)`` each: the foreground fraction of its labelled pixels and its labelled (not
    ``IGNORE``) fraction."""
    foreground, known = _known(_with_channel(target))
    labelled = F.adaptive_avg_pool2d(known, tuple(grid_hw))
    return F.adaptive_avg_pool2d(foreground, tuple(grid_hw)) / labelled.clamp_min(1e-6), labelled


def guide_target(target, grid_hw):
    """Foreground fraction (label > 0) of the labelled pixels in each guide cell, ``(B, 1, h, w)`` in [0, 1]."""
    return _cell_fractions(target, grid_hw)[0]


def guide_loss(guide_logits, target):
    """BCE-with-logits between guide logits ``(B, 1, h, w)`` and ``guide_target`` at that grid, each cell weighed
    by its labelled fraction (the plain mean without ``IGNORE``)."""
    wanted, labelled = _cell_fractions(target, guide_logits.shape[-2:])
    loss = F.binary_cross_entropy_with_logits(guide_logits.float(), wanted, weight=labelled, reduction="sum")
    return loss / labelled.sum().clamp_min(1e-6)


def boundary_hinge_loss(logits, target, margin=1.0):
    """Mean ``relu(margin - y·logit)``, y = ±1, over the pixels in a thin band around the true boundary.

    Binary only (logits ``(B, 1, H, W)``). Zero when the target has no boundary.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"the boundary hinge loss is binary: expected 1 logit channel, got {logits.shape[1]}")
    t, known = _known(_with_channel(target))
    pad = _BOUNDARY_KERNEL // 2
    near_foreground = F.max_pool2d(t, _BOUNDARY_KERNEL, stride=1, padding=pad)
    near_background = F.max_pool2d((1 - t) * known, _BOUNDARY_KERNEL, stride=1, padding=pad)
    band = near_foreground * near_background * known
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
