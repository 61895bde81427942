"""Whose voxels they are (guidino.review): edits are given to the slices they were drawn on, the state
survives encoding, and a fingerprint bounds the edits made while nobody watched."""

import numpy as np
import pytest

from guidino.review import (ReviewState, attribute_edits, changed_from_fingerprint, content_hash, content_slices,
                            fingerprint)

AXES = {"axial": 0, "coronal": 1, "sagittal": 2}  # a (k, j, i) volume in the usual orientation


def _diff(shape=(8, 10, 12)):
    return np.zeros(shape, bool)


def test_a_stroke_is_given_to_the_slice_it_was_drawn_on():
    diff = _diff()
    diff[3, 2:6, 4:9] = True  # painted on axial slice 3
    assert attribute_edits(diff, AXES) == {"axial": {3}, "coronal": set(), "sagittal": set()}
    diff = _diff()
    diff[1:7, 5, 2:10] = True  # on coronal slice 5
    assert attribute_edits(diff, AXES) == {"axial": set(), "coronal": {5}, "sagittal": set()}


def test_strokes_along_several_axes_are_each_found():
    diff = _diff()
    diff[3, 2:6, 4:9] = True  # axial 3
    diff[0:8, 8, 0:3] = True  # coronal 8
    diff[6, 0:4, 10:12] = True  # axial 6, a smaller stroke
    assert attribute_edits(diff, AXES) == {"axial": {3, 6}, "coronal": {8}, "sagittal": set()}


def test_ambiguous_edits_make_every_candidate_slice_the_users():
    diff = _diff()
    diff[2, 4, 1:9] = True  # one row: on axial slice 2 and coronal slice 4 alike
    assert attribute_edits(diff, AXES, prefer="axial") == {"axial": {2}, "coronal": {4}, "sagittal": set()}
    diff = _diff()
    diff[5, 6, 7] = True  # one voxel lies in a slice of each axis
    assert attribute_edits(diff, AXES) == {"axial": {5}, "coronal": {6}, "sagittal": {7}}


@pytest.mark.parametrize("seed", range(20))
def test_every_changed_voxel_lies_in_a_slice_given_to_the_user(seed):
    rng = np.random.default_rng(seed)
    diff = rng.random((6, 7, 8)) < rng.uniform(0.001, 0.2)  # a 3D edit (islands, smoothing, another program)
    chosen = attribute_edits(diff, AXES, prefer="coronal")
    state = ReviewState()
    for name, slices in chosen.items():
        state.add("edited", name, slices)
    assert not (diff & ~state.protected(diff.shape, AXES)).any()


def test_the_protected_voxels_are_every_user_slice_along_every_axis():
    state = ReviewState(axis="axial", marked={"axial": [1]}, edited={"coronal": [4, 99]})
    protected = state.protected((5, 6, 7), AXES)
    expected = np.zeros((5, 6, 7), bool)
    expected[1] = True
    expected[:, 4] = True
    np.testing.assert_array_equal(protected, expected)  # 99 is outside this grid: ignored
    assert state.user_slices("axial") == [1] and state.user_slices("coronal") == [4, 99]
    state.remove("coronal", [4])
    assert state.user_slices("coronal") == [99] and state.user_slices("sagittal") == []


def test_the_state_round_trips_through_a_segment_tag():
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2:4, 1:5] = True
    state = ReviewState(axis="coronal", marked={"axial": [2]}, edited={"coronal": [1, 3]}, shape=mask.shape,
                        fingerprint=fingerprint(mask), baseline=content_hash(mask))
    text = state.encode()
    assert "|" not in text  # Slicer separates segment tags with '|'
    assert ReviewState.decode(text) == state
    for broken in ("", "2:abc", "1:not base64!", "1:" + text[2:-8]):
        assert ReviewState.decode(broken) is None


def test_a_fingerprint_bounds_the_edits_made_unseen():
    before = np.zeros((6, 7, 8), bool)
    before[2:5, 2:6, 3:7] = True
    state = ReviewState(shape=before.shape, fingerprint=fingerprint(before), baseline=content_hash(before))
    after = before.copy()
    after[4, 1:3, 2:5] = ~after[4, 1:3, 2:5]  # painted and erased on axial slice 4
    bound = changed_from_fingerprint(after, state)
    assert ((after != before) & ~bound).sum() == 0  # every changed voxel is inside the bound
    assert bound.sum() < after.size / 10  # and the bound is tight: one slice's rows and columns
    assert not changed_from_fingerprint(before, state).any()
    assert changed_from_fingerprint(np.zeros((6, 7, 9), bool), state) is None  # another grid: nothing is known
    assert content_hash(after) != content_hash(before) == state.baseline
    assert content_slices(before, 0) == [2, 3, 4] and content_slices(before, 2) == [3, 4, 5, 6]


def test_a_write_can_keep_only_the_prediction_connected_to_the_users_slices():
    from guidino.review import merge_prediction

    current = np.zeros((6, 8, 8), np.uint8)
    current[2, 2:5, 2:5] = 1  # the user's slice 2
    writable = np.ones_like(current, bool)
    writable[2] = False
    predicted = np.zeros_like(current)
    predicted[3, 3:6, 3:6] = 1  # touches the user's square
    predicted[5, 0, 7] = 1  # alone
    predicted[2] = 1  # not writable: ignored either way
    merged = merge_prediction(current, predicted, writable, evidence_axis=0, spacing=(1.0, 1.0, 1.0))
    assert merged[3].sum() == 9 and merged[5].sum() == 0 and np.array_equal(merged[2], current[2])
    assert merge_prediction(current, predicted, writable)[5].sum() == 1


def test_a_fingerprint_updated_in_the_changed_box_equals_one_computed_anew():
    """Random masks and random changed boxes (seeded): the incremental fingerprint of a stroke is the full one."""
    import numpy as np

    from guidino.review import fingerprint

    rng = np.random.default_rng(7)
    for _ in range(300):
        shape = tuple(int(n) for n in rng.integers(1, 9, 3))
        before = rng.random(shape) > 0.5
        after = before.copy()
        lo = [int(rng.integers(0, n)) for n in shape]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, shape)]
        after[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.random([b - a for a, b in zip(lo, hi)]) > 0.5
        assert fingerprint(after, fingerprint(before), list(zip(lo, hi))) == fingerprint(after)
        assert fingerprint(after.astype(np.uint8)) == fingerprint(after)
