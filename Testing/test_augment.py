"""Batched augmentation: shapes, label integrity, image/label alignment, determinism, identities."""

import dataclasses

import torch

from guidino.training.augment import AugmentConfig, augment_batch

OFF = AugmentConfig(flip_p=0, rot90_p=0, elastic_p=0, affine_p=0, intensity_p=0, noise_p=0, blur_p=0)
GEOMETRY = dataclasses.replace(OFF, flip_p=0.5, rot90_p=0.5, elastic_p=1.0, affine_p=1.0)
EVERYTHING = dataclasses.replace(GEOMETRY, intensity_p=1.0, noise_p=1.0, blur_p=1.0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _blobs(b=6, h=40, w=40, seed=0):
    """(B, H, W) long labels with values {0, 3, 7}: two overlapping discs per sample."""
    g = _gen(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    labels = torch.zeros(b, h, w, dtype=torch.long)
    for value in (3, 7):
        cy, cx = torch.rand(b, generator=g) * h * 0.5 + h * 0.25, torch.rand(b, generator=g) * w * 0.5 + w * 0.25
        inside = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 < (min(h, w) / 5) ** 2
        labels[inside] = value
    return labels


def test_shapes_dtypes_and_ranges():
    images = torch.rand(6, 3, 40, 40, generator=_gen())
    labels = _blobs()
    out_images, out_labels = augment_batch(images, labels, EVERYTHING, _gen(1))
    assert out_images.shape == images.shape and out_images.dtype == images.dtype
    assert out_labels.shape == labels.shape and out_labels.dtype == torch.long
    assert out_images.min() >= 0 and out_images.max() <= 1

    binary = (labels > 0).float()[:, None]
    out_images, out_binary = augment_batch(images, binary, EVERYTHING, _gen(1))
    assert out_binary.shape == binary.shape and out_binary.dtype == torch.float32
    assert set(out_binary.unique().tolist()) <= {0.0, 1.0}


def test_labels_keep_their_values():
    labels = _blobs()
    _, out = augment_batch(torch.rand(6, 1, 40, 40), labels, EVERYTHING, _gen(2))
    assert set(out.unique().tolist()) <= {0, 3, 7}
    assert not torch.equal(out, labels)


def test_images_and_labels_stay_aligned():
    for h, w in ((40, 40), (36, 52)):  # square (with 90° rotations) and not
        labels = (_blobs(h=h, w=w) > 0).long()
        images = labels[:, None].float()
        out_images, out_labels = augment_batch(images, labels, GEOMETRY, _gen(3))
        assert not torch.equal(out_labels, labels)
        agreement = ((out_images[:, 0] > 0.5).long() == out_labels).float().mean()
        assert agreement >= 0.98


def test_deterministic_for_a_seed():
    images, labels = torch.rand(6, 3, 40, 40, generator=_gen()), _blobs()
    a = augment_batch(images, labels, EVERYTHING, _gen(5))
    b = augment_batch(images, labels, EVERYTHING, _gen(5))
    c = augment_batch(images, labels, EVERYTHING, _gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_all_probabilities_zero_is_identity():
    images, labels = torch.rand(6, 3, 40, 40, generator=_gen()), _blobs()
    out_images, out_labels = augment_batch(images, labels, OFF, _gen(7))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)


def test_flips_only():
    # labels are exact; images carry grid_sample's float32 coordinate rounding (bilinear weights ~1e-6)
    images, labels = torch.rand(6, 3, 36, 52, generator=_gen()), _blobs(h=36, w=52)
    out_images, out_labels = augment_batch(images, labels, dataclasses.replace(OFF, flip_p=1.0), _gen(8))
    assert torch.equal(out_labels, labels.flip(-2, -1))
    torch.testing.assert_close(out_images, images.flip(-2, -1), rtol=0, atol=1e-5)

    # at p = 0.5 every sample is one of the four flipped copies, and not all the same one
    out_images, out_labels = augment_batch(images, labels, dataclasses.replace(OFF, flip_p=0.5), _gen(9))
    kinds = set()
    for i in range(len(images)):
        for dims in ((), (-1,), (-2,), (-2, -1)):
            if torch.equal(out_labels[i], labels[i].flip(dims)):
                torch.testing.assert_close(out_images[i], images[i].flip(dims), rtol=0, atol=1e-5)
                kinds.add(dims)
                break
        else:
            raise AssertionError(f"sample {i} is not a flipped copy")
    assert len(kinds) > 1


def test_geometric_changes_shapes_and_never_intensities():
    images, labels = torch.rand(6, 3, 36, 52, generator=_gen()), _blobs(h=36, w=52)
    flips_and_intensities = dataclasses.replace(EVERYTHING, flip_p=1.0, rot90_p=0, elastic_p=0, affine_p=0)
    out_images, out_labels = augment_batch(images, labels, flips_and_intensities.geometric(), _gen(11))
    assert torch.equal(out_labels, labels.flip(-2, -1))
    torch.testing.assert_close(out_images, images.flip(-2, -1), rtol=0, atol=1e-5)
    out_images, _ = augment_batch(images, labels, flips_and_intensities, _gen(11))
    assert (out_images - images.flip(-2, -1)).abs().max() > 0.05  # the full config does change them
    assert AugmentConfig().geometric().flip_p == AugmentConfig().flip_p


def test_rot90_only_rotates_square_images():
    images, labels = torch.rand(6, 2, 32, 32, generator=_gen()), _blobs(h=32, w=32)
    out_images, out_labels = augment_batch(images, labels, dataclasses.replace(OFF, rot90_p=1.0), _gen(10))
    for i in range(len(images)):
        ks = [k for k in (1, 2, 3) if torch.equal(out_labels[i], torch.rot90(labels[i], k, (-2, -1)))]
        assert ks, f"sample {i} is not a 90° rotation"
        torch.testing.assert_close(out_images[i], torch.rot90(images[i], ks[0], (-2, -1)), rtol=0, atol=1e-5)


def test_cached_features_follow_the_image_geometry():
    """Guide features warped with the batch follow the same flips/rotations as the image."""
    from guidino.training.augment import AugmentConfig, augment_batch

    torch.manual_seed(0)
    images = torch.zeros(4, 1, 64, 64)
    images[:, :, :16, :16] = 1.0  # a bright top-left corner
    labels = (images[:, 0] > 0.5).long()
    features = torch.nn.functional.avg_pool2d(images, 16)  # (4, 1, 4, 4): one "token" per 16x16 patch
    config = AugmentConfig(flip_p=1.0, rot90_p=0.0, elastic_p=0.0, affine_p=0.0, intensity_p=0.0, noise_p=0.0,
                           blur_p=0.0)
    out, out_labels, out_features = augment_batch(images, labels, config, torch.Generator().manual_seed(1),
                                                  features=features)
    assert out_features.shape == features.shape
    torch.testing.assert_close(out_features, torch.nn.functional.avg_pool2d(out, 16), atol=1e-5, rtol=0)
    assert not torch.equal(out_features, features)
