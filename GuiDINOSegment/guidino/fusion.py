"""What a model made from a few corrections writes: its image evidence combined with the shape interpolated
between the user's slices, each weighed by what the user's slices say of it on this volume.

Between two slices the user labelled, the interpolated shape (``interpolation``) says where the structure is
and how large; the model says where the image's boundary runs. Each voxel's decision adds the two as log-odds:
the model's (clipped), weighted by how well it reproduces the user's own slices (a model that has not learned the
structure has little say), and the interpolation's, the signed distance to the interpolated contour over a
tolerance that grows with the distance to the nearer labelled slice (far from the user's slices the contour is
less sure). Between two of the user's sections that overlap the shape is their blend, not a guess: a model that
does not reproduce the user's slices may move its contour there, but not carve deep inside it (``SURE_DEPTH``).
Beyond the first and the last labelled slice there is nothing to interpolate: the model alone
writes, within what continues the user's structure (``corrections.continuing``).

No torch, no VTK: the Slicer process applies it to the worker's probabilities.
"""

from dataclasses import dataclass

import numpy as np

from .interpolation import interpolate_shape

SOURCES = ("user", "model and interpolation", "interpolation", "model", "none")  # where each slice's result came from

# Tolerance of the interpolated contour (mm): ``TOLERANCE`` plus ``TOLERANCE_PER_MM`` per mm to the nearer
# labelled slice (BENCHMARKS.md section 3 gives each choice's effect per case).
TOLERANCE = 1.0
TOLERANCE_PER_MM = 0.5
# The model's weight is its Dice on the user's slices to this power: those are the slices it trained on, so its
# Dice there overstates its accuracy elsewhere, and a model that cannot reproduce them (0.76 on an adrenal of nine
# pixels a slice: weight 0.33) has little to add to the interpolated shape.
WEIGHT_POWER = 4
CLIP = 6.0
# Where the shape is the blend of two overlapping sections of the user's (``ShapeInterpolation.blended``), a model of
# weight w < 1 may carve into it only ``SURE_DEPTH / (1 - w)`` tolerances deep: deeper inside, the interpolated
# shape holds. A model that reproduces the user's slices (w = 1) keeps its full say.
SURE_DEPTH = 0.2
UNSURE = float(np.log(0.8 / 0.2))  # log-odds: a decision closer than this (probability 0.2 to 0.8) is unsure


@dataclass
class FusedPrediction:
    """What a region model's prediction becomes before the write rule.

    ``labels``: 0/1 uint8 on the volume's grid. ``source``: per slice along ``axis``, one of ``SOURCES``.
    ``model_weight``: how much the model counted between the user's slices (0..1, from its Dice on them; None
    when it was not run on them: then 1). ``uncertainty``: per slice, the voxels whose decision is unsure
    (combined foreground probability between 0.2 and 0.8; 0 on the user's slices and where the model did not
    run): many where the model is unsure, or where it and the interpolation disagree. ``distance``: per slice,
    how many slices away the nearest user's slice is.
    """

    labels: np.ndarray
    source: list
    axis: int
    model_weight: object
    uncertainty: np.ndarray
    distance: np.ndarray

    def report(self):
        """The JSON-ready account of it: slices per source, each slice's source, the model's weight."""
        return {"slices_by_source": {name: self.source.count(name) for name in SOURCES if name in self.source},
                "slice_source": list(self.source),
                "model_weight": None if self.model_weight is None else round(float(self.model_weight), 4)}


def contour_tolerance(gap, tolerance=TOLERANCE, tolerance_per_mm=TOLERANCE_PER_MM):
    """How far (mm) the interpolated contour may be off at ``gap`` mm from the nearer labelled slice: the write
    weighs the interpolation's distance against it, and refine trusts only what lies deeper inside."""
    return tolerance + tolerance_per_mm * gap


def model_weight(probability, user, user_slices, array_axis, processed=None):
    """The model's Dice on the user's slices holding the structure (0..1), or None when it was not run there.
    (``metrics.dice_score`` is MONAI's, on torch: this runs in Slicer's process too.)"""
    moved_p = np.moveaxis(np.asarray(probability), array_axis, 0)
    moved_u = np.moveaxis(np.asarray(user) > 0, array_axis, 0)
    holding = [s for s in user_slices if moved_u[s].any() and (processed is None or processed[s])]
    if not holding:
        return None
    predicted, drawn = moved_p[holding] >= 0.5, moved_u[holding]
    return float(2 * np.count_nonzero(predicted & drawn) / (np.count_nonzero(predicted) + np.count_nonzero(drawn)))


def _logit(probability):
    p = np.clip(np.asarray(probability, np.float32), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _unsure(log_odds):
    """How many voxels' decisions are close: the combined foreground probability between 0.2 and 0.8."""
    return float(np.count_nonzero(np.abs(np.asarray(log_odds)) < UNSURE))


def fuse_prediction(probability, user, user_slices, array_axis, spacing, processed=None, weight=None,
                    tolerance=TOLERANCE, tolerance_per_mm=TOLERANCE_PER_MM, clip=CLIP, extrapolate=True, apart="both",
                    trend=True, sure_depth=SURE_DEPTH):
    """Combine a region model's ``probability`` with the shape interpolated between the user's slices.

    Args:
        probability: the model's foreground probability, the volume's grid (array order).
        user: the segment as the user left it (> 0: the structure); only ``user_slices`` are read.
        user_slices: the user's slices along ``array_axis``.
        array_axis: the array axis of the user's slices.
        spacing: voxel spacing in array order (mm).
        processed: per slice along ``array_axis``, whether the model ran there (None: everywhere).
        weight: the model's weight between the user's slices; None: ``model_weight`` to the power
            ``WEIGHT_POWER`` (1 when the model was not run on the user's slices).
        tolerance, tolerance_per_mm, clip, extrapolate, apart, trend, sure_depth: the rules' settings (the defaults
            are the shipped rule; ``benchmarks/fusion_rules.py`` changes one at a time); ``extrapolate``, ``apart``
            and ``trend`` as in ``interpolation.interpolate_shape``; ``sure_depth`` None: the model may carve into
            the blended shape as deep as its log-odds reach.

    Returns:
        A ``FusedPrediction``; the user's slices hold the model's labels (the write rule never writes them).
    """
    probability = np.asarray(probability, np.float32)
    shape = interpolate_shape(user, user_slices, array_axis, spacing, extrapolate, apart, trend)
    if weight is None:
        fit = model_weight(probability, user, user_slices, array_axis, processed)
        weight = None if fit is None else fit ** WEIGHT_POWER
    counted = 1.0 if weight is None else weight
    moved_p = np.moveaxis(probability, array_axis, 0)
    distance = np.moveaxis(shape.distance, array_axis, 0)
    labels = (moved_p >= 0.5).astype(np.uint8)
    uncertainty = np.zeros(moved_p.shape[0])
    source = []
    user_set = set(int(s) for s in user_slices)
    for k in range(moved_p.shape[0]):
        if k in user_set:
            source.append("user")
            continue
        ran = processed is None or bool(processed[k])
        if shape.inside[k]:
            tolerance_k = contour_tolerance(shape.gap[k], tolerance, tolerance_per_mm)
            evidence = -distance[k] / tolerance_k
            if ran:
                evidence = evidence + counted * np.clip(_logit(moved_p[k]), -clip, clip)
                if sure_depth is not None and shape.blended[k] and counted < 1:
                    evidence[distance[k] < -tolerance_k * sure_depth / (1 - counted)] = np.inf  # the sure inside
            labels[k] = evidence > 0
            uncertainty[k] = _unsure(evidence)
            ended = bool(np.isposinf(distance[k]).all())  # the user's sections say it has ended: the model had no say
            source.append("model and interpolation" if ran and counted > 0 and not ended else "interpolation")
        else:
            uncertainty[k] = _unsure(_logit(moved_p[k])) if ran else 0.0
            source.append("model" if ran else "none")
    index = np.arange(moved_p.shape[0])
    distance = (np.min(np.abs(index[:, None] - np.asarray(sorted(user_set))[None, :]), axis=1) if user_set
                else np.full(index.size, index.size))
    return FusedPrediction(np.moveaxis(labels, 0, array_axis), source, array_axis, weight, uncertainty, distance)


def suggest_slice(fused, written, exclude=()):
    """The slice to correct next: where the result the user sees rests on the least evidence. Each slice scores
    its unsure voxels (``FusedPrediction.uncertainty``) plus the voxels the write left on it (``written``), times
    its distance in slices to the nearest user's slice: a large section far from every corrected slice, or a
    doubtful one, comes first. Never a user's slice nor one in ``exclude``; None when no slice holds anything or
    anything unsure.

    ``written`` is the segment after the write (``review.merge_prediction_explained``), not ``fused.labels``: a
    piece of the model's labels that the write drops (nothing connects it to the user's slices, or it does not
    continue them) is not shown, and sending the user to a slice that shows it correctly empty asks for work
    that teaches nothing (BENCHMARKS.md section 3 compares the robots that follow either).

    A confidently empty slice scores nothing: where the model misses a structure without doubt, nothing says so.
    """
    moved = np.moveaxis(np.asarray(written) > 0, fused.axis, 0)
    area = moved.reshape(moved.shape[0], -1).sum(axis=1)
    scores = (np.asarray(fused.uncertainty, float) + area) * np.asarray(fused.distance, float)
    for k, name in enumerate(fused.source):
        if name == "user" or k in set(exclude):
            scores[k] = -1.0
    best = int(np.argmax(scores))
    return best if scores[best] > 0 else None
