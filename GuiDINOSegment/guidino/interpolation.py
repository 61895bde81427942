"""The shape between the user's slices: signed-distance interpolation, and how sure it is.

Between two slices the user labelled, a structure's cross-section moves from one contour to the other. Each
labelled slice gives a signed distance map (mm, in its plane: negative inside the structure); a slice between two
labelled ones takes the linear blend of theirs, weighted by how near each is, and its zero level, placed so that
the section's area is the blend of theirs, is the interpolated contour (Fill between slices does the same job with
morphological contours). When the two sections do not overlap, the slices cannot tell a structure that travels
across them (the pancreas) from one that ends while another begins (a lobe, a branch): the interpolated shape holds
both, the blend of the maps moved along the path of the section's centre and each section tapering to nothing
toward the other slice; the image (the model, in ``fusion``) decides between them. A labelled slice without the
structure says it has ended: its map is the other slice's deepest inside distance everywhere, so the shape shrinks
to nothing on the way. Beyond the first and the last labelled slice the shape may taper the same way; where the
user's sections shrink toward that end over three labelled slices in a row, it shrinks at least as fast as the two
nearest do, and where that reaches nothing the structure has ended (``ShapeInterpolation.distance`` is +inf there:
nothing is written).

No torch, no VTK: the Slicer process may call it.
"""

import math
from dataclasses import dataclass

import numpy as np


def signed_distance(mask, spacing):
    """The signed distance (mm) of every pixel of a 2D boolean ``mask`` to its contour: negative inside, positive
    outside, about half a pixel at the contour on either side. ``spacing``: pixel spacing (rows, columns), mm.
    None for an empty mask."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    if mask.all():
        return -ndimage.distance_transform_edt(np.pad(mask, 1, constant_values=False), sampling=spacing)[1:-1, 1:-1]
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return np.where(mask, -inside, outside) + np.where(mask, 0.5, -0.5) * min(spacing)


def _level(blend, area):
    """The level of ``blend`` below which ``area`` pixels lie (halfway between the area-th and the next value)."""
    values = blend.ravel()
    if area <= 0:
        return float(values.min()) - 1.0
    if area >= values.size:
        return float(values.max()) + 1.0
    ordered = np.partition(values, (area - 1, area))  # both order statistics in place, not just the upper one
    return 0.5 * float(ordered[area - 1] + ordered[area])


def _blend(below, above, area_below, area_above, weight, move):
    """The signed distance (mm) of the section ``weight`` of the way from the map ``below`` to ``above``: their
    blend, each moved ``weight`` of ``move`` (pixels) along the path between them, at the level that holds the
    blend of their areas (pixels)."""
    from scipy import ndimage

    if move.any():
        below = ndimage.shift(below, weight * move, order=1, mode="nearest")
        above = ndimage.shift(above, (weight - 1) * move, order=1, mode="nearest")
    blend = (1 - weight) * below + weight * above
    return blend - _level(blend, int(round((1 - weight) * area_below + weight * area_above)))


@dataclass
class ShapeInterpolation:
    """The interpolated shape through the volume, in the array order of the labels.

    ``distance``: signed distance (mm) of the interpolated contour on each slice between two labelled slices
    (``inside``); +inf on a slice beyond the labelled ones where the shape has ended (``interpolate_shape``'s
    ``trend``); NaN elsewhere. ``gap``: on those slices, the distance (mm, along the slice axis) to the nearer
    labelled slice. ``axis``: the array axis of the labelled slices. ``blended``: per slice, whether it lies
    between two labelled sections that overlap, where the shape is the blend of both: not one of the candidates
    between sections apart, nor a taper toward a labelled empty slice or beyond the labelled ones.
    """

    distance: np.ndarray
    gap: np.ndarray  # per slice along ``axis``: mm to the nearer labelled slice (0 on them, inf outside the range)
    axis: int
    blended: np.ndarray

    @property
    def inside(self):
        """Per slice along ``axis``: whether it lies strictly between two labelled slices."""
        return np.isfinite(self.gap) & (self.gap > 0)

    def mask(self):
        """The interpolated structure (bool, the labels' grid): where the blended distance is negative."""
        return np.nan_to_num(self.distance, nan=1.0) < 0


APART = ("both", "path")  # what the shape holds between sections that do not overlap (``interpolate_shape``)


def interpolate_shape(labels, slices, array_axis, spacing, extrapolate=True, apart="both", trend=True):
    """The signed-distance interpolation of the structure between labelled ``slices``.

    Args:
        labels: the user's label volume (> 0: the structure), array order; only ``slices`` are read.
        slices: the labelled slice indices along ``array_axis``.
        array_axis: the array axis the slices are cut along.
        spacing: voxel spacing in array order (mm).
        extrapolate: beyond the first and the last labelled slice holding the structure (when no labelled slice
            without it bounds them), let the shape taper to nothing over the structure's largest radius, as
            between a labelled section and a labelled empty slice.
        apart: between two sections that do not overlap, ``"both"`` candidates (the path between them, and each
            tapering toward the other slice) or only the ``"path"`` (BENCHMARKS.md section 3 compares them).
        trend: with ``extrapolate``, where the sections of the three labelled slices nearest an end shrink toward
            it, the tapering shape's area is at most their trend beyond it (the two nearest sections' loss per
            slice, carried on), and where the trend reaches nothing the structure has ended (``distance`` +inf).
            Two sections are not a trend: a structure with a waist would be cut there (BENCHMARKS.md section 3).

    Returns:
        A ``ShapeInterpolation``.

    Raises:
        ValueError: ``apart`` is not one of ``APART``.
    """
    if apart not in APART:
        raise ValueError(f"apart={apart!r}: choose one of {', '.join(APART)}")
    from scipy import ndimage

    moved = np.moveaxis(np.asarray(labels) > 0, array_axis, 0)
    plane = tuple(float(s) for a, s in enumerate(spacing) if a != array_axis)
    step = float(spacing[array_axis])
    slices = sorted({int(s) for s in slices})
    distance = np.full(moved.shape, np.nan, np.float32)
    gap = np.full(moved.shape[0], np.inf)
    gap[slices] = 0.0
    blended = np.zeros(moved.shape[0], bool)
    maps = {s: signed_distance(moved[s], plane) for s in slices}
    areas = {s: int(moved[s].sum()) for s in slices}
    spans = list(zip(slices, slices[1:]))
    holding = [s for s in slices if maps[s] is not None]
    # Each end that no labelled empty slice bounds: its direction (-1 the first, +1 the last) and the labelled
    # sections holding the structure from that end inwards.
    open_ends = [] if not (extrapolate and holding) else [
        (direction, inwards) for direction, inwards, bound in ((-1, holding, slices[0]), (1, holding[::-1], slices[-1]))
        if inwards[0] == bound]
    if open_ends:
        largest = max(areas[s] for s in holding) * plane[0] * plane[1]
        reach = int(math.ceil(math.sqrt(largest / math.pi) / step))  # a structure ends within its largest radius
        for direction, inwards in open_ends:
            spans.append(tuple(sorted((inwards[0], inwards[0] + direction * (reach + 1)))))
        spans.sort()
    for low, high in spans:
        below, above = maps.get(low), maps.get(high)
        if high - low < 2 or (below is None and above is None):
            continue  # nothing between, or nothing on either side: no shape to interpolate
        separate = below is not None and above is not None and not (moved[low] & moved[high]).any()
        move = (np.array(ndimage.center_of_mass(moved[high])) - np.array(ndimage.center_of_mass(moved[low]))
                if separate else np.zeros(2))
        ending_below = np.full(moved.shape[1:], -above.min()) if above is not None else None
        ending_above = np.full(moved.shape[1:], -below.min()) if below is not None else None
        for k in range(max(low + 1, 0), min(high, moved.shape[0])):
            weight = (k - low) / (high - low)
            area_low, area_high = areas.get(low, 0), areas.get(high, 0)
            distance[k] = _blend(below if below is not None else ending_below,
                                 above if above is not None else ending_above, area_low, area_high, weight, move)
            if separate and apart == "both":  # or one section ends and the other begins: both are candidates
                distance[k] = np.minimum(distance[k], np.minimum(
                    _blend(below, ending_above, area_low, 0, weight, np.zeros(2)),
                    _blend(ending_below, above, 0, area_high, weight, np.zeros(2))))
            gap[k] = step * min(k - low if low in areas else np.inf, high - k if high in areas else np.inf)
            blended[k] = below is not None and above is not None and not separate
    for _, inwards in open_ends if trend else ():
        if len(inwards) >= 3 and areas[inwards[2]] > areas[inwards[1]] > areas[inwards[0]]:
            _shrink_beyond(distance, gap, areas[inwards[0]], areas[inwards[1]], inwards[0], inwards[1])
    return ShapeInterpolation(np.moveaxis(distance, 0, array_axis), gap, array_axis, blended)


def _shrink_beyond(distance, gap, area_end, area_inner, end, inner):
    """Beyond the labelled slice ``end``, away from ``inner`` (the nearest labelled slice holding the structure),
    on the slices the taper reaches: no more area than the sections' loss per slice carried on, and +inf (ended)
    where that is spent. ``distance`` is changed in place, slices first."""
    rate = (area_inner - area_end) / abs(end - inner)  # pixels per slice
    direction = 1 if end > inner else -1
    k = end + direction
    while 0 <= k < distance.shape[0] and np.isfinite(gap[k]) and gap[k] > 0:
        allowed = int(round(area_end - rate * abs(k - end)))
        if allowed <= 0:
            distance[k] = np.inf
        elif allowed < np.count_nonzero(distance[k] < 0):
            distance[k] = distance[k] - _level(distance[k], allowed)
        k += direction
