"""Refine from a few corrected slices finds a small structure and stays quiet where it has no evidence (issue 13).

Deterministic (fixed seed, a step count instead of a time budget): a small 3D blob (well under 1 % of
the voxels, on a few slices) in textured noise, refined from nothing on 3 spread slices.
"""

import numpy as np
import pytest
from scipy import ndimage

from guidino.corrections import continuing, evidence_region
from guidino.geometry import Geometry
from guidino.imageio import ImageData
from guidino.inference import segment_volume
from guidino.metrics import dice_score
from guidino.review import slice_mask
from guidino.training.protocols import spread_slices, with_corrections
from guidino.training.refine import refine_model
from guidino.training.settings import RefineSettings

SHAPE = (24, 96, 96)
SPACING = (0.8, 0.8, 2.0)  # x, y, z (mm)


def _blob_volume(seed=0, centre=(12, 40, 58), radii=(3.2, 6.5, 7.5)):
    """Textured noise with a brighter ellipsoid: (ImageData, truth)."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), (0.5, 2.0, 2.0))
    texture = 100 + 200 * texture / texture.std()
    z, y, x = np.indices(SHAPE)
    truth = (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
             + ((x - centre[2]) / radii[2]) ** 2 <= 1).astype(np.uint8)
    voxels = (texture + 700.0 * truth + rng.normal(0, 60, SHAPE)).astype(np.int16)
    geometry = Geometry(SPACING, (-40.0, 12.5, 3.0), (0.96, -0.28, 0.0, 0.28, 0.96, 0.0, 0.0, 0.0, 1.0))
    return ImageData(voxels, geometry, False), truth


def _settings():
    return RefineSettings(steps=120, time_budget=None, device="cpu", seed=0,
                          new_model={"network": "unet", "widths": [8, 16, 32, 64], "input_size": 64})


def test_the_blob_is_small():
    _, truth = _blob_volume()
    holding = np.flatnonzero(truth.reshape(SHAPE[0], -1).any(axis=1))
    assert truth.mean() < 0.01 and 5 <= holding.size <= 7


def test_three_spread_slices_find_the_blob_and_nothing_far_from_it(tiny_guide_dir):
    image, truth = _blob_volume()
    slices = spread_slices(truth, 0, 3)
    result = refine_model(image, truth, slices, guide=str(tiny_guide_dir), settings=_settings())
    predicted = segment_volume(result.model, image, device="cpu", batch_size=4).labels
    predicted = with_corrections(predicted, truth, slices, 0, image.geometry.spacing[::-1])
    rest = [k for k in range(SHAPE[0]) if k not in slices]
    assert dice_score(predicted[rest], truth[rest]) >= 0.7
    distance = ndimage.distance_transform_edt(truth == 0)  # voxels (z, y, x) from the blob
    assert predicted.any() and distance[predicted > 0].max() <= 5


def test_nothing_is_predicted_outside_the_region_the_corrections_bound(tiny_guide_dir):
    """Corrected slices without the structure bound it through the volume; in-plane, the box around what was
    labelled bounds it: a second bright blob far from the labelled one stays unlabelled."""
    image, truth = _blob_volume()
    other = np.zeros_like(truth)
    other[2:8, 70:84, 8:22] = 1  # looks like the target, but no corrected slice shows it
    voxels = image.voxels.copy()
    voxels[other > 0] += 700
    image = ImageData(voxels, image.geometry, False)
    slices = spread_slices(truth, 0, 3) + [1]  # slice 1: corrected, and shows no target (the other blob is not the target)
    region = evidence_region(truth, slices, 0, "axial", SPACING[::-1])
    assert region["slices"][0] >= 2 and region["cols"][0] > 22
    result = refine_model(image, truth, slices, guide=str(tiny_guide_dir), settings=_settings())
    predicted = segment_volume(result.model, image, device="cpu", batch_size=4).labels
    assert not predicted[other > 0].any()
    first, last = result.model.config.region["slices"]
    assert not predicted[:first].any() and not predicted[last + 1:].any()


def test_the_region_follows_the_corrections_and_a_region_model_refuses_another_volume(tiny_guide_dir):
    image, truth = _blob_volume()
    region = evidence_region(truth, [12], 0, "axial", SPACING[::-1])
    rows, cols = np.flatnonzero(truth[12].any(axis=1)), np.flatnonzero(truth[12].any(axis=0))
    assert region["rows"][0] < rows[0] and region["rows"][1] > rows[-1] + 1
    assert region["cols"][0] < cols[0] and region["cols"][1] > cols[-1] + 1
    assert region["slices"][0] < 12 < region["slices"][1]  # a radius beyond the one labelled slice
    assert evidence_region(truth, [0, 1], 0, "axial", SPACING[::-1]) is None  # no slice holds the structure
    result = refine_model(image, truth, [10, 12, 14], guide=str(tiny_guide_dir),
                          settings=RefineSettings(**{**_settings().__dict__, "steps": 2}))
    other = ImageData(image.voxels[:, :80], image.geometry, False)
    from guidino.errors import InputError

    with pytest.raises(InputError, match="segments only that volume"):
        segment_volume(result.model, other, device="cpu")


UNIT = (1.0, 1.0, 1.0)


def test_only_prediction_connected_to_what_the_user_labelled_is_kept():
    labels = np.zeros((6, 10, 10), np.uint8)
    labels[2, 3:6, 3:6] = 1
    predicted = np.zeros_like(labels)
    predicted[1, 4:7, 4:7] = 1  # touches the labelled square of slice 2 (diagonally counts)
    predicted[3, 6, 6] = 1
    predicted[4, 0:2, 8:10] = 1  # alone
    kept = with_corrections(predicted, labels, [2], 0, UNIT)
    assert kept[1].sum() == 9 and kept[3, 6, 6] == 1 and not kept[4].any()
    assert np.array_equal(kept[2], labels[2])  # the corrected slice as drawn
    assert not with_corrections(predicted, labels, [0], 0, UNIT).any()  # slice 0 holds nothing: nothing reaches
    along = with_corrections(np.moveaxis(predicted, 0, 2), np.moveaxis(labels, 0, 2), [2], 2, UNIT)
    assert np.array_equal(along, np.moveaxis(kept, 0, 2))


def test_beyond_the_users_slices_only_what_continues_them_is_kept():
    """A look-alike touching the structure's last slice (the skull beside a tumour) is not carried on."""
    labels = np.zeros((8, 40, 40), np.uint8)
    labels[2, 10:20, 10:20] = 1  # the user's slices 2 and 3; the structure goes on to slice 4
    labels[3, 10:20, 10:20] = 1
    predicted = np.zeros_like(labels)
    predicted[4, 11:19, 11:19] = 1  # tapering on: kept
    predicted[4, 18:20, 21:34] = 1  # a rim beside it, a piece of its own, mostly off the slice before: dropped
    predicted[5, 18:20, 21:34] = 1  # and what continues only the dropped rim: dropped
    predicted[1, 12:18, 12:18] = 1  # below the first slice, inside it: kept
    predicted[0, 12:18, 30:39] = 1  # touching nothing kept: dropped
    kept = with_corrections(predicted, labels, [2, 3], 0, UNIT)
    assert kept[4, 11:19, 11:19].all() and not kept[5:].any()
    assert kept[1].sum() == 36 and not kept[0].any()
    assert np.array_equal(kept[4], predicted[4] * (np.arange(40) < 19))  # the rim only
    writable = ~slice_mask(labels.shape, 0, [2, 3])
    thick = continuing(predicted, writable, labels, 0, (6.5, 0.78, 0.78))  # 9 px of shift per slice allowed
    assert thick[4].sum() == predicted[4].sum()  # the rim now lies mostly within reach of slice 3


def test_beyond_the_users_slices_what_continues_them_is_kept_whatever_its_shape():
    """Past the last labelled slice, a piece that lies on the section before it is kept, whatever its shape: a
    growing disc, a ring wider and far thinner than the disc before it (the end of an hourglass, as the prostate
    phantom's), a band continuing a band, two lobes that together outgrow the section before them."""
    y, x = np.mgrid[:60, :60]
    radius = np.hypot(y - 30, x - 30)
    thick = (6.5, 0.78, 0.78)  # 9 px of shift per slice allowed
    labels = np.zeros((6, 60, 60), np.uint8)
    labels[1:3] = radius < 6
    ring = (radius > 4) & (radius < 9)
    lobes = (np.hypot(y - 30, x - 24) < 5.5) | (np.hypot(y - 30, x - 36) < 5.5)  # two compact lobes, 2 x 97 voxels
    for section in (radius < 8, ring, lobes):
        predicted = np.zeros_like(labels)
        predicted[3] = section
        predicted[4] = section
        kept = with_corrections(predicted, labels, [1, 2], 0, thick)
        assert np.array_equal(kept[3], section) and np.array_equal(kept[4], section)
    band = (y >= 10) & (y < 50) & (x >= 36) & (x < 40)
    labels[1:3] = band
    predicted = np.zeros_like(labels)
    predicted[3:5] = band
    kept = with_corrections(predicted, labels, [1, 2], 0, thick)
    assert np.array_equal(kept[3], band) and np.array_equal(kept[4], band)


def _tube_volume(seed=0):
    """Textured noise with a brighter tube whose section grows and travels over 14 slices: (ImageData, truth)."""
    rng = np.random.default_rng(seed)
    shape = (18, 64, 64)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), (0.5, 2.0, 2.0))
    texture = 100 + 200 * texture / texture.std()
    truth = np.zeros(shape, np.uint8)
    rows, cols = np.ogrid[:shape[1], :shape[2]]
    for k in range(2, 16):
        radius, centre = 4 + 5 * np.sin(np.pi * (k - 1.5) / 15), (24 + k, 28 + 0.5 * k)
        truth[k] = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2
    voxels = (texture + 700.0 * truth + rng.normal(0, 60, shape)).astype(np.int16)
    return ImageData(voxels, Geometry((0.8, 0.8, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), False), truth


def test_one_more_labelled_slice_does_not_lower_the_result(tiny_guide_dir):
    """A fixed-step, seeded refine from 3 interior slices of a tube, then from the same 3 and one more: the result
    over the volume (the labelled slices holding the truth) does not drop by more than the benchmark's tolerance
    (0.03: the two models train on different batches; volume seeds 0-4 checked while writing it: -0.016 on seed 0,
    where the 4-slice model missed the tube's first section, +0.008 to +0.029 on the others)."""
    from guidino.training.protocols import refine_and_segment

    image, truth = _tube_volume()
    three = spread_slices(truth, 0, 3, "interior")
    scores = []
    for slices in (three, sorted(three + [int(np.mean(three[:2]))])):
        _, _, written, _, fused = refine_and_segment(image, truth, slices, guide=str(tiny_guide_dir),
                                                     settings=_settings(), device="cpu")
        scores.append(dice_score(written, truth))
        assert "model and interpolation" in fused.source
    assert scores[1] >= scores[0] - 0.03 and scores[0] > 0.7, scores
