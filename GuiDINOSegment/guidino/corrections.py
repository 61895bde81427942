"""What a few corrected slices say about where the structure can be: the evidence region.

A model refined from nothing on a few corrected slices has seen the structure only there. It trains
on crops of a box around what the user labelled and segments only that box, on the slices near the
labelled ones (``ModelConfig.region``; ``VolumeSlicer`` applies it). A small lesion then fills the
model's input instead of a few pixels of a whole letterboxed slice, each training step costs less,
and there is nothing to be wrong about far from the evidence. Corrected slices without the structure
bound the region: the structure is not beyond them.
"""

import math

import numpy as np

from .errors import InputError

PLANE_MARGIN = 0.5  # the box grows by this fraction of the labelled extent on each side ...
MIN_PLANE_MARGIN = 8  # ... and by at least this many pixels


def evidence_region(labels, slices, array_axis, axis_name, spacing):
    """The box and slice range a model refined from ``slices`` may segment, as ``ModelConfig.region``.

    ``labels``: the label volume in the image's array order (only ``slices`` along ``array_axis`` are
    read); ``spacing``: voxel spacing in the same order (mm). In the slice plane: the bounding box of the
    structure over all corrected slices, grown by ``PLANE_MARGIN`` of its size (at least
    ``MIN_PLANE_MARGIN`` pixels). Through the volume: from the first to the last corrected slice holding
    the structure, extended on each side by the structure's largest radius (in slices), but never past a
    corrected slice without it. None when no corrected slice holds the structure.
    """
    moved = np.moveaxis(np.asarray(labels) > 0, array_axis, 0)
    slices = sorted(int(s) for s in slices)
    if not slices:
        raise InputError("an evidence region needs at least one corrected slice")
    holding = [s for s in slices if moved[s].any()]
    if not holding:
        return None
    union = np.any(moved[holding], axis=0)
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    plane = moved.shape[1:]
    box = []
    for found, size in ((rows, plane[0]), (cols, plane[1])):
        extent = found[-1] - found[0] + 1
        margin = max(MIN_PLANE_MARGIN, int(math.ceil(PLANE_MARGIN * extent)))
        box.append([int(max(0, found[0] - margin)), int(min(size, found[-1] + 1 + margin))])
    plane_spacing = [s for a, s in enumerate(spacing) if a != array_axis]
    largest = max(int(moved[s].sum()) for s in holding) * plane_spacing[0] * plane_spacing[1]
    reach = int(math.ceil(math.sqrt(largest / math.pi) / float(spacing[array_axis])))
    empty = [s for s in slices if s not in holding]
    first = max([holding[0] - reach] + [s + 1 for s in empty if s < holding[0]] + [0])
    last = min([holding[-1] + reach] + [s - 1 for s in empty if s > holding[-1]] + [moved.shape[0] - 1])
    return {"axis": axis_name, "array_axis": int(array_axis), "grid": [int(n) for n in np.shape(labels)[:3]],
            "slices": [int(first), int(last)], "rows": box[0], "cols": box[1]}


def connected_to(predicted, evidence):
    """``predicted`` (a label volume) without its 3D connected pieces (26-connectivity, with ``evidence`` put in)
    that reach no voxel of ``evidence`` (a boolean volume: what the user labelled). A piece of prediction the
    user's structure does not connect to has no evidence behind it."""
    from scipy import ndimage

    predicted, evidence = np.asarray(predicted), np.asarray(evidence, bool)
    pieces, _ = ndimage.label((predicted > 0) | evidence, structure=np.ones((3, 3, 3), bool))
    reached = np.unique(pieces[evidence])
    return np.where(np.isin(pieces, reached[reached > 0]), predicted, 0).astype(predicted.dtype)


CONTINUES = 0.5  # a piece of prediction beyond the corrected slices must lie this much on the slice before it


def continuing(predicted, writable, user, array_axis, spacing):
    """``predicted`` where, beyond the first and the last of the user's slices holding the structure, each slice keeps
    only the 2D pieces (8-connectivity) that lie at least ``CONTINUES`` of their area on the slice before it (toward
    the user's slices) as kept, grown by one slice spacing in the plane (a surface sloping up to 45°).

    A model refined from a few corrections has no negative evidence beyond them: there a look-alike touching the
    structure's last slice (a rim beside a tumour) would be carried on from slice to slice. A piece is not judged
    by its shape: a section that grows or changes shape (a gland widening toward its end, a ring) goes on being
    kept (BENCHMARKS.md section 3 gives the effect of a shape rule per case).
    ``writable``: where the prediction may be written (the user's slices are those along ``array_axis`` with
    nothing writable); ``user``: the segment as the user left it; ``spacing``: voxel spacing in array order (mm).
    """
    from scipy import ndimage

    moved = np.moveaxis(np.asarray(predicted) > 0, array_axis, 0).copy()
    free = np.moveaxis(np.asarray(writable, bool), array_axis, 0).reshape(moved.shape[0], -1).any(axis=1)
    drawn = np.moveaxis(np.asarray(user) > 0, array_axis, 0)
    holding = [k for k in range(moved.shape[0]) if not free[k] and drawn[k].any()]
    if not holding:
        return np.zeros_like(np.asarray(predicted))
    plane = [s for a, s in enumerate(spacing) if a != array_axis]
    grow = int(min(16, max(1, math.ceil(float(spacing[array_axis]) / min(plane)))))
    square = np.ones((3, 3), bool)
    for ahead in (range(holding[-1] + 1, moved.shape[0]), range(holding[0] - 1, -1, -1)):
        before = drawn[ahead.start - ahead.step]
        for k in ahead:
            if not free[k]:
                before = drawn[k]
                continue
            reach = ndimage.binary_dilation(before, structure=square, iterations=grow)
            pieces, count = ndimage.label(moved[k], structure=square)
            area = np.bincount(pieces.ravel(), minlength=count + 1)[1:]
            inside = np.bincount(pieces.ravel(), weights=reach.ravel(), minlength=count + 1)[1:]
            keep = [int(p) for p in np.flatnonzero(inside >= CONTINUES * area) + 1]
            moved[k] = np.isin(pieces, keep)
            before = moved[k]
    out = np.where(np.moveaxis(moved, 0, array_axis), np.asarray(predicted), 0)
    return out.astype(np.asarray(predicted).dtype)
