"""The shape between the user's slices and what a model made from corrections writes (guidino.interpolation,
guidino.fusion), on synthetic volumes built so that the right answer is known."""

import numpy as np
import pytest

from guidino.fusion import SURE_DEPTH, contour_tolerance, fuse_prediction, model_weight, suggest_slice
from guidino.interpolation import interpolate_shape, signed_distance
from guidino.training.protocols import spread_slices, with_corrections, with_corrections_explained

UNIT = (1.0, 1.0, 1.0)


def disc(shape, centre, radius):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def tube(radii, centres=None, plane=(48, 48)):
    """A label volume whose slice k holds a disc of radius ``radii[k]`` (0: nothing) at ``centres[k]``."""
    centres = centres or [(24, 24)] * len(radii)
    volume = np.zeros((len(radii), *plane), np.uint8)
    for k, (radius, centre) in enumerate(zip(radii, centres)):
        if radius > 0:
            volume[k] = disc(plane, centre, radius)
    return volume


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def test_signed_distance_is_negative_inside_and_zero_at_the_contour():
    mask = disc((31, 31), (15, 15), 8)
    distance = signed_distance(mask, (1.0, 1.0))
    assert (distance[mask] < 0).all() and (distance[~mask] > 0).all()
    assert distance[15, 15] == pytest.approx(-8.0, abs=0.6)  # the nearest outside pixel is sqrt(65) away
    assert signed_distance(np.zeros((5, 5), bool), (1.0, 1.0)) is None


def test_the_interpolated_area_moves_linearly_between_the_labelled_sections():
    truth = tube([0, 4, 0, 0, 0, 0, 0, 12, 0], plane=(40, 40))
    shape = interpolate_shape(truth, [1, 7], 0, UNIT, extrapolate=False).mask()
    areas = [int(shape[k].sum()) for k in range(2, 7)]
    expected = [np.pi * (16 + (144 - 16) * w) for w in np.arange(1, 6) / 6]
    assert areas == sorted(areas) and np.allclose(areas, expected, rtol=0.12)
    assert not shape[[0, 1, 7, 8]].any()  # the labelled slices are the user's, nothing beyond them


def test_beyond_the_labelled_slices_the_shape_tapers_within_the_structure_radius():
    truth = tube([0] * 10 + [3, 3, 3] + [0] * 10)
    interpolation = interpolate_shape(truth, [11], 0, UNIT)
    areas = [int(interpolation.mask()[k].sum()) for k in range(23)]
    reach = int(np.ceil(np.sqrt(truth[11].sum() / np.pi)))  # the largest radius, in slices
    assert areas[11] == 0 and areas[10] > 0 and areas[12] > 0  # the user's slice is theirs; next to it, tapering
    assert areas[12:12 + reach] == sorted(areas[12:12 + reach], reverse=True) and areas[12] > areas[11 + reach]
    assert not any(areas[:11 - reach]) and not any(areas[12 + reach:])
    assert interpolation.gap[12] == 1.0 and np.isinf(interpolation.gap[0])
    bounded = interpolate_shape(truth, [11, 13], 0, UNIT)  # a labelled slice without it bounds it
    assert not bounded.mask()[13:].any()


SHRINKING = [0] * 4 + [12, 11, 10, 9, 8, 6, 4, 2] + [0] * 8  # radii: the structure narrows from slice 4 to 11


def test_beyond_sections_shrinking_three_in_a_row_the_shape_shrinks_at_their_rate_and_then_has_ended():
    truth = tube(SHRINKING)
    areas = [int(truth[k].sum()) for k in range(len(SHRINKING))]
    shape = interpolate_shape(truth, [4, 6, 8], 0, UNIT)  # sections shrinking toward slice 8, three in a row
    rate = (areas[6] - areas[8]) / 2  # the two nearest sections' loss per slice
    written = [int(shape.mask()[k].sum()) for k in range(len(SHRINKING))]
    assert 0 < written[9] <= round(areas[8] - rate) and 0 < written[11] <= round(areas[8] - 3 * rate)
    assert np.isposinf(shape.distance[12:]).all()  # the trend is spent: the structure has ended
    assert not np.isinf(shape.distance[:4]).any() and written[3] > 0  # toward slice 4 it grows: the radius taper
    assert not np.isinf(interpolate_shape(truth, [4, 6, 8], 0, UNIT, trend=False).distance).any()
    pair = interpolate_shape(truth, [6, 8], 0, UNIT)  # two sections are not a trend (a waist would be cut)
    assert not np.isinf(pair.distance).any() and pair.mask()[12].any()
    bounded = interpolate_shape(truth, [4, 6, 8, 12], 0, UNIT)  # a labelled empty slice ends it: no trend needed
    assert not np.isinf(bounded.distance).any() and not bounded.mask()[12:].any()


def test_a_false_continuation_beyond_sections_shrinking_three_in_a_row_is_not_written():
    truth = tube(SHRINKING)
    probability = np.full(truth.shape, 0.02, np.float32)
    probability[4:18] = np.where(tube([0] * 4 + [9] * 14 + [0] * 2)[4:18] > 0, 0.97, 0.02)  # it goes on and on
    written, fused = written_and_fused(truth, probability, [4, 6, 8])
    assert written[9].any()  # next to the user's last slice the model still writes, within the trend
    assert not written[12:].any()  # where the user's slices say the structure has ended: nothing
    assert fused.source[9] == "model and interpolation" and fused.source[13] == "interpolation"  # it ended there
    written_pair, _ = written_and_fused(truth, probability, [6, 8])  # two sections: the model's continuation stays
    assert written_pair[12:16].any()


def travelling_and_branching():
    """Two structures labelled on slices 0 and 8, whose sections there do not overlap: one travels from the first
    section to the second (the pancreas), the other is two lobes, one ending as the other begins (brain1's
    tumour)."""
    plane = (48, 48)
    travelling = tube([5] * 9, [(14 + 2 * k, 14 + 2 * k) for k in range(9)], plane)
    lobes = np.zeros_like(travelling)
    for k, (ending, beginning) in enumerate(zip([6, 5, 4, 3, 2, 0, 0, 0, 0], [0, 0, 0, 0, 2, 3, 4, 5, 6])):
        lobes[k] = disc(plane, (14, 14), ending) * (ending > 0) | disc(plane, (34, 34), beginning) * (beginning > 0)
    return travelling, lobes


def test_sections_apart_hold_both_a_travelling_and_an_ending_structure():
    """The slices cannot tell the two apart: the interpolated shape holds both candidates (the path between the
    sections, each section tapering toward the other), so that neither structure is cut."""
    for truth in travelling_and_branching():
        shape = interpolate_shape(truth, [0, 8], 0, UNIT).mask()
        for k in range(1, 8):
            covered = np.count_nonzero(shape[k] & (truth[k] > 0)) / np.count_nonzero(truth[k])
            assert covered > 0.85, k


def test_between_sections_apart_the_image_decides_which_candidate_is_there():
    """With a model that sees the structure (and reproduces the user's slices), the result follows the travelling
    structure along its path and the lobes where they are; without image contrast, it holds both candidates."""
    for truth in travelling_and_branching():
        probability = np.where(truth > 0, 0.95, 0.05).astype(np.float32)
        fused = fuse_prediction(probability, truth, [0, 8], 0, UNIT)
        assert dice(fused.labels[1:8], truth[1:8]) > 0.95
        flat = fuse_prediction(np.full(truth.shape, 0.5, np.float32), truth, [0, 8], 0, UNIT)
        assert np.array_equal(flat.labels[1:8] > 0, interpolate_shape(truth, [0, 8], 0, UNIT).mask()[1:8])


def test_a_labelled_slice_without_the_structure_ends_it_on_the_way():
    truth = tube([8, 8, 8, 6, 4, 0, 0], plane=(40, 40))
    labelled = [0, 6]  # the structure on slice 0, none on slice 6
    shape = interpolate_shape(truth, labelled, 0, UNIT).mask()
    areas = [int(shape[k].sum()) for k in range(1, 6)]
    assert areas == sorted(areas, reverse=True) and len(set(areas)) == 5 and areas[-1] < areas[0] / 4


def test_end_slices_holding_specks_do_not_lose_the_structure():
    """Fill between slices fills nothing when an end slice's speck overlaps no contour: here the result keeps the
    body of the structure between the specks."""
    radii = [1, 6, 8, 9, 9, 8, 6, 1]
    centres = [(24, 35)] + [(24, 24)] * 6 + [(24, 13)]  # specks beside the body, overlapping no contour
    truth = tube(radii, centres)
    slices = [0, 3, 7]
    probability = np.full(truth.shape, 0.5, np.float32)  # a model that has learned nothing
    written = with_corrections((probability >= 0.5).astype(np.uint8) * 0, truth, slices, 0, UNIT, probability)
    rest = [k for k in range(len(radii)) if k not in slices]
    assert all(written[k].any() for k in rest) and dice(written[rest], truth[rest]) > 0.5
    assert dice(written, truth) >= dice(np.where(np.isin(np.arange(len(radii)), slices)[:, None, None], truth, 0),
                                        truth)


def test_without_image_contrast_the_result_follows_the_interpolation():
    truth = tube([0, 5, 6, 7, 8, 9, 10, 11, 0])
    slices = [1, 7]
    flat = np.full(truth.shape, 0.5, np.float32)  # no contrast: the model cannot tell
    fused = fuse_prediction(flat, truth, slices, 0, UNIT)
    interpolated = interpolate_shape(truth, slices, 0, UNIT).mask()
    for k in range(2, 7):
        assert np.array_equal(fused.labels[k] > 0, interpolated[k]), k
        assert fused.source[k] == "model and interpolation"


def test_where_the_shape_changes_between_the_labelled_slices_the_result_follows_the_image():
    """A section that stays small, then jumps: the interpolation grows it steadily, the image (a confident model
    that reproduces the user's slices) shows where it is."""
    radii = [0, 5, 5, 5, 5, 5, 12, 12, 0]
    truth = tube(radii)
    slices = [1, 7]
    probability = np.where(truth > 0, 0.97, 0.03).astype(np.float32)  # the image's evidence, right everywhere
    fused = fuse_prediction(probability, truth, slices, 0, UNIT)
    interpolated = interpolate_shape(truth, slices, 0, UNIT).mask()
    rest = [2, 3, 4, 5, 6]
    assert fused.model_weight == pytest.approx(1.0)
    assert dice(fused.labels[rest], truth[rest]) > 0.95 > dice(interpolated[rest], truth[rest]) + 0.1


def test_a_model_that_does_not_reproduce_the_user_slices_cannot_carve_into_the_shape_between_overlapping_sections():
    """Between two overlapping sections of the user's, the shape is their blend: a model that misses the structure
    there with confidence, and reproduces the user's own slices only in part, removes no more than a band along
    the interpolated contour. Between sections apart the shape holds candidates, not a blend: nothing is forced
    there. A model that reproduces the user's slices keeps its full say."""
    truth = tube([0, 8, 8, 8, 8, 8, 8, 8, 0])
    slices = [1, 7]
    probability = np.where(truth > 0, 0.97, 0.03).astype(np.float32)
    probability[slices] = np.where(disc((48, 48), (24, 24), 6), 0.97, 0.03)  # the user's sections only in part
    probability[3:6] = 0.03  # confidently nothing where the structure is
    fused = fuse_prediction(probability, truth, slices, 0, UNIT)
    without = fuse_prediction(probability, truth, slices, 0, UNIT, sure_depth=None)
    shape = interpolate_shape(truth, slices, 0, UNIT)
    assert 0 < fused.model_weight < 1
    assert list(np.flatnonzero(shape.blended)) == [2, 3, 4, 5, 6]
    for k in (3, 4, 5):
        sure = shape.distance[k] < -contour_tolerance(shape.gap[k]) * SURE_DEPTH / (1 - fused.model_weight)
        assert sure.any() and np.array_equal(fused.labels[k] > 0, sure | (without.labels[k] > 0)), k
        assert dice(fused.labels[k], truth[k]) > dice(without.labels[k], truth[k]) + 0.15, k
    assert np.array_equal(fused.labels[[0, 8]], without.labels[[0, 8]])
    # sections apart: the path and the tapers are candidates, none is sure
    for apart in travelling_and_branching():
        partial = np.where(apart > 0, 0.97, 0.03).astype(np.float32)
        partial[0] = 0.03  # the first user's section missed: a weight below 1
        partial[2:7] = 0.03
        assert not interpolate_shape(apart, [0, 8], 0, UNIT).blended.any()
        assert 0 < model_weight(partial, apart, [0, 8], 0) < 1
        assert np.array_equal(fuse_prediction(partial, apart, [0, 8], 0, UNIT).labels,
                              fuse_prediction(partial, apart, [0, 8], 0, UNIT, sure_depth=None).labels)
    # a labelled empty slice ends the structure: the taper toward it is not a blend
    assert list(np.flatnonzero(interpolate_shape(tube([8, 8, 8, 6, 4, 0, 0]), [0, 6], 0, UNIT).blended)) == []
    # a model that reproduces the user's slices: its say is whole
    right = np.where(truth > 0, 0.97, 0.03).astype(np.float32)
    right[3:6] = 0.03
    assert fuse_prediction(right, truth, slices, 0, UNIT).model_weight == pytest.approx(1.0)
    assert np.array_equal(fuse_prediction(right, truth, slices, 0, UNIT).labels,
                          fuse_prediction(right, truth, slices, 0, UNIT, sure_depth=None).labels)


def test_a_model_that_cannot_reproduce_the_user_slices_counts_less():
    truth = tube([0, 6, 7, 8, 9, 10, 0])
    slices = [1, 5]
    wrong = np.zeros(truth.shape, np.float32)
    wrong[:, 2:10, 2:10] = 0.99  # confident, and elsewhere
    assert model_weight(wrong, truth, slices, 0) == 0.0
    fused = fuse_prediction(wrong, truth, slices, 0, UNIT)
    interpolated = interpolate_shape(truth, slices, 0, UNIT).mask()
    assert np.array_equal(fused.labels[2:5] > 0, interpolated[2:5])
    processed = np.ones(truth.shape[0], bool)
    processed[slices] = False  # not run on the user's slices: nothing known of it, it counts fully
    assert model_weight(wrong, truth, slices, 0, processed) is None


def test_the_suggested_slice_is_the_one_with_the_largest_true_error():
    """The model and the interpolation agree everywhere but on slice 5, where the truth follows neither; slice 5
    is suggested, and it holds the largest error of what is written."""
    radii = [0, 8, 8, 8, 8, 8, 8, 8, 8, 8, 0]
    truth = tube(radii)
    truth[5] = disc((48, 48), (24, 24), 4)  # a narrowing the user has not labelled
    slices = [1, 9]
    probability = np.where(tube(radii) > 0, 0.9, 0.1).astype(np.float32)
    probability[5] = np.where(disc((48, 48), (24, 24), 8), 0.5, 0.1)  # the model unsure there
    written, fused = written_and_fused(truth, probability, slices)
    error = [int(np.count_nonzero((written[k] > 0) != (truth[k] > 0))) for k in range(len(radii))]
    assert suggest_slice(fused, written) == 5 == int(np.argmax(error))
    assert suggest_slice(fused, written, exclude=[5]) not in (1, 5, 9)


def test_interior_placement_puts_slices_in_the_middle_of_equal_parts():
    truth = tube([0, 0, 0, 0] + [5] * 11 + [0])  # the structure on slices 4..14 (n = 11)
    assert spread_slices(truth, 0, 3, "interior") == [5, 9, 13]  # 4 + floor((i + 0.5) * 11 / 3)
    assert spread_slices(truth, 0, 3, "ends") == [4, 9, 14]


def test_with_one_corrected_slice_the_suggestion_is_the_far_end_of_what_was_found():
    """A confident model gives no unsure voxels: the slice resting on the least evidence is the farthest one that
    holds a large section (where an oracle finds the largest error when the model drifts)."""
    radii = [0, 0, 4, 6, 8, 9, 9, 9, 9, 9, 8, 6, 3, 0, 0]
    truth = tube(radii)
    probability = np.where(truth > 0, 0.99, 0.01).astype(np.float32)
    written, fused = written_and_fused(truth, probability, [7])
    first = suggest_slice(fused, written)  # 3 slices from slice 7, radius 8: more at stake than radius 6 at 4
    assert first in (4, 10) and suggest_slice(fused, written, exclude=[first]) == 14 - first


def test_the_suggestion_judges_what_is_written_not_what_the_write_dropped():
    """Far beyond the structure's end the model finds a look-alike that nothing connects to the user's slices: the
    write drops it, the slice shows nothing, and correcting it would teach nothing. The suggestion is the slice
    whose written result rests on the least evidence, where the true error is largest."""
    radii = [0, 6, 7, 8, 8, 8, 8, 8, 7, 6, 0, 0, 0, 0, 0, 0]
    truth = tube(radii)
    slices = [4, 6]
    probability = np.where(truth > 0, 0.97, 0.03).astype(np.float32)
    probability[1] = np.where(disc((48, 48), (24, 24), 6), 0.55, 0.03)  # unsure of the first slice
    for k in (13, 14, 15):
        probability[k] = np.where(disc((48, 48), (6, 40), 5), 0.97, 0.03)  # a look-alike in a corner, far away
    written, fused = written_and_fused(truth, probability, slices)
    assert not written[13:].any() and (fused.labels[13:] > 0).any()  # the write drops it
    error = [int(np.count_nonzero((written[k] > 0) != (truth[k] > 0))) for k in range(len(radii))]
    suggested = suggest_slice(fused, written)
    assert suggested not in (13, 14, 15) and error[suggested] == max(error)
    assert suggest_slice(fused, fused.labels) in (13, 14, 15)  # scored before the write, it would be sent there


def written_and_fused(truth, probability, slices):
    """What the write leaves (the user's ``slices`` of ``truth`` kept) and its ``FusedPrediction``."""
    return with_corrections_explained((probability >= 0.5).astype(np.uint8), truth, slices, 0, UNIT, probability)


def test_the_level_holds_exactly_the_area_asked_for():
    from guidino.interpolation import _level

    rng = np.random.default_rng(0)
    for _ in range(300):  # distinct values: exactly ``area`` lie below the level (seeds 0-2 swept: 900 cases)
        blend = rng.normal(size=(30, 30))
        area = int(rng.integers(0, 901))
        assert int((blend < _level(blend, area)).sum()) == area
