"""Losses: Dice + CE, deep supervision, the BCE guide loss, the boundary hinge, and GuiDINOLoss."""

import pytest
import torch
import torch.nn.functional as F

from guidino.training.losses import (
    IGNORE,
    GuiDINOLoss,
    boundary_hinge_loss,
    deep_supervision_loss,
    guide_loss,
    guide_target,
    segmentation_loss,
)


def _disc(b=2, size=16):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radii = torch.arange(b) + size / 4
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radii[:, None, None] ** 2).float()  # (B, H, W)


def test_binary_seg_loss_perfect_and_wrong():
    target = _disc()
    signed = 2 * target[:, None] - 1
    assert segmentation_loss(20 * signed, target) < 1e-3
    assert segmentation_loss(20 * signed, target[:, None]) < 1e-3  # (B, 1, H, W) target too
    assert segmentation_loss(-20 * signed, target) > 5
    assert segmentation_loss(torch.full_like(signed, -20), torch.zeros_like(target)) < 1e-3  # empty target


def test_unlabelled_pixels_count_in_no_term_of_the_loss():
    """A target whose right half is IGNORE costs what its left half alone costs, whatever the logits there; a
    foreground core next to unlabelled pixels has no boundary there."""
    torch.manual_seed(0)
    target = _disc(size=32)
    logits = torch.randn(2, 1, 32, 32)
    partial = target.clone()
    partial[..., 16:] = IGNORE
    left = segmentation_loss(logits[..., :16], target[..., :16])
    torch.testing.assert_close(segmentation_loss(logits, partial), left)
    changed = logits.clone()
    changed[..., 16:] = 20 * torch.randn(2, 1, 32, 16)
    torch.testing.assert_close(segmentation_loss(changed, partial), left)
    guide_logits = torch.randn(2, 1, 4, 4)  # cells of 8 x 8 pixels: the right two columns of cells are unlabelled
    torch.testing.assert_close(guide_loss(guide_logits, partial), guide_loss(guide_logits[..., :2], target[..., :16]))
    torch.testing.assert_close(guide_target(partial, (4, 4))[..., :2], guide_target(target, (4, 4))[..., :2])
    core = torch.full((1, 16, 16), float(IGNORE))
    core[:, 4:12, 4:12] = 1
    assert boundary_hinge_loss(torch.zeros(1, 1, 16, 16), core) == 0
    with pytest.raises(ValueError, match="binary"):
        segmentation_loss(torch.randn(2, 3, 32, 32), partial.long())


def test_multiclass_seg_loss():
    labels = _disc().long() + (torch.arange(16) >= 12).long()[None, None, :]  # classes 0, 1, 2
    perfect = 20 * F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    wrong = 20 * F.one_hot((labels + 1) % 3, 3).permute(0, 3, 1, 2).float()
    assert segmentation_loss(perfect, labels) < 1e-3
    assert segmentation_loss(wrong, labels) > 5


def test_guide_target_is_area_fraction():
    target = torch.tensor([[[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]])
    expected = torch.tensor([[[[0.75, 0.0], [0.0, 1.0]]]])
    torch.testing.assert_close(guide_target(target.float(), (2, 2)), expected)
    torch.testing.assert_close(guide_target(2 * target, (2, 2)), expected)  # multi-class: label > 0


def test_guide_loss_is_bce_on_guide_target():
    target = _disc(size=32)
    guide_logits = torch.randn(2, 1, 4, 4)
    expected = F.binary_cross_entropy_with_logits(guide_logits, guide_target(target, (4, 4)))
    torch.testing.assert_close(guide_loss(guide_logits, target), expected)
    assert not torch.allclose(expected, F.mse_loss(torch.sigmoid(guide_logits), guide_target(target, (4, 4))))


def test_deep_supervision_weights_and_resizing():
    target = (torch.rand(2, 16, 16) > 0.5).float()
    outputs = [torch.randn(2, 1, 16 // s, 16 // s) for s in (1, 2, 4)]
    # nearest-exact from 16 to 16/s picks pixel s*i + s//2
    parts = [segmentation_loss(o, target[:, s // 2 :: s, s // 2 :: s]) for o, s in zip(outputs, (1, 2, 4))]
    torch.testing.assert_close(deep_supervision_loss(outputs, target), (4 * parts[0] + 2 * parts[1] + parts[2]) / 7)
    torch.testing.assert_close(deep_supervision_loss(outputs, target, weights=[0, 1, 0]), parts[1])
    with pytest.raises(ValueError):
        deep_supervision_loss(outputs, target, weights=[1, 1])


def test_deep_supervision_multiclass_labels():
    labels = (torch.rand(2, 16, 16) * 3).long()
    outputs = [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8)]
    expected = (2 * segmentation_loss(outputs[0], labels) + segmentation_loss(outputs[1], labels[:, 1::2, 1::2])) / 3
    torch.testing.assert_close(deep_supervision_loss(outputs, labels), expected)


def test_boundary_hinge_loss():
    target = _disc(size=32)
    signed = 2 * target[:, None] - 1
    assert boundary_hinge_loss(5 * signed, target) == 0
    assert boundary_hinge_loss(0.5 * signed, target) == pytest.approx(0.5)
    assert boundary_hinge_loss(torch.zeros_like(signed), target) == pytest.approx(1.0)
    assert boundary_hinge_loss(-signed, target) == pytest.approx(2.0)
    # only the band counts: errors far from the boundary cost nothing
    far = 5 * signed
    far[..., 0, 0] = 5
    assert boundary_hinge_loss(far, target) == 0
    assert boundary_hinge_loss(torch.zeros_like(signed), torch.zeros_like(target)) == 0  # no boundary
    with pytest.raises(ValueError):
        boundary_hinge_loss(torch.zeros(2, 3, 32, 32), target)


def test_guidino_loss_components_and_gradients():
    target = _disc(size=32)
    outputs = [torch.randn(2, 1, 32 // s, 32 // s, requires_grad=True) for s in (1, 2, 4)]
    guide_logits = torch.randn(2, 1, 2, 2, requires_grad=True)
    loss = GuiDINOLoss(guide_weight=0.1, boundary_weight=0.5)
    total, parts = loss(outputs, target, guide_logits=guide_logits)
    assert set(parts) == {"seg", "guide", "boundary"}
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in parts.values())
    torch.testing.assert_close(total.detach(), parts["seg"] + 0.1 * parts["guide"] + 0.5 * parts["boundary"])
    torch.testing.assert_close(parts["seg"], deep_supervision_loss(outputs, target).detach())
    total.backward()
    for t in (*outputs, guide_logits):
        assert t.grad is not None and t.grad.abs().sum() > 0

    single = torch.randn(2, 1, 32, 32)
    total, parts = GuiDINOLoss()(single, target)
    assert parts["guide"] == 0 and parts["boundary"] == 0
    torch.testing.assert_close(total, segmentation_loss(single, target))
