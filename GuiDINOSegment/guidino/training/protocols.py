"""The benchmark protocols of refine from corrections, run as a user would: a robot user correcting the worst
slice each round (``simulate``) and K slices spread over the structure, refined once (``spread_protocol``).

``guidino simulate`` and ``benchmarks/interactive.py`` run them; each writes what the user's segmentation would
hold by Slicer's write rule (``with_corrections``).
"""

import math

import numpy as np

from ..errors import InputError
from ..fusion import suggest_slice
from ..imageio import image_slice_axis
from ..inference import segment_volume
from ..metrics import dice_score
from ..review import merge_prediction_explained, slice_mask
from ..runtime import preload_monai
from .refine import refine_model
from .settings import PLACEMENTS, ROBOTS, RefineSettings


def simulate(image, truth, rounds, model=None, guide=None, axis="axial", settings=None, device="auto",
             progress=None, on_round=None, robot="largest-error"):
    """A robot user: each round it corrects one more slice, refines, re-segments.

    Args:
        robot: which slice it corrects: ``"largest-error"``, the unreviewed slice where what the segmentation holds
            differs most from the truth (an oracle); ``"suggested"``, the slice GuiDINO suggests
            (``fusion.suggest_slice`` on what the round wrote: the most voxels expected wrong), as a user following
            the suggestion would.
            Starting from nothing (``model`` None), both label the slice with the largest true area first.

    Returns:
        ``{"robot", "rounds": [{"round", "corrected_slices", "dice_all", "dice_unreviewed", "refine_seconds",
        "segment_seconds", "steps", "interpolated_slices", "suggested", ...``FusedPrediction.report()``}, ...],
        "guide_pretrained",
        "warm_up_seconds"}``: Dice over the whole volume (corrected slices hold the truth) and over the slices the
        robot has not corrected; ``interpolated_slices``: the slices refine trained on with the interpolated shape
        as their label; ``suggested``: the slice suggested next. The rounds run as in a warm worker: MONAI
        is imported first (``warm_up_seconds``), off every round's clock. ``on_round(entry, segmentation,
        current)``, when given, receives each round's SegmentationResult and what the user's segmentation then holds
        (``with_corrections``), in the image's array order.

    Raises:
        InputError: an unknown ``robot``.
    """
    if robot not in ROBOTS:
        raise InputError(f"unknown robot {robot!r}: use one of {', '.join(ROBOTS)}")
    settings = settings or RefineSettings(device=device)
    warm_up = preload_monai()
    truth = (np.asarray(truth) > 0).astype(np.uint8)
    axis_index = image_slice_axis(image, axis)
    truth_slices = np.moveaxis(truth, axis_index, 0)
    reviewed, history, suggested = [], [], None
    current = None if model is None else segment_volume(model, image, axis=axis, device=device).labels
    for number in range(1, rounds + 1):
        candidates = [k for k in range(truth_slices.shape[0]) if k not in reviewed]
        if not candidates:
            break
        if current is None:
            pick = max(candidates, key=lambda k: int(truth_slices[k].sum()))
        elif robot == "suggested" and suggested is not None:
            pick = suggested
        else:
            error = np.moveaxis(current != truth, axis_index, 0)
            pick = max(candidates, key=lambda k: int(error[k].sum()))
        reviewed.append(pick)
        refined = refine_model(image, truth, reviewed, model=model, guide=guide, axis=axis, settings=settings)
        model = refined.model
        todo = [k for k in range(truth_slices.shape[0]) if k not in reviewed]
        seg = segment_volume(model, image, axis=axis, device=device)
        current, fused = with_corrections_explained(seg.labels, truth, reviewed, axis_index,
                                                    image.geometry.spacing[::-1], seg.probability, seg.processed)
        suggested = suggest_slice(fused, current)
        predicted_unreviewed = np.moveaxis(current, axis_index, 0)[todo]
        entry = {"round": number, "corrected_slices": sorted(reviewed),
                 "dice_all": dice_score(current, truth),
                 "dice_unreviewed": dice_score(predicted_unreviewed, truth_slices[todo]) if todo else None,
                 "refine_seconds": round(refined.seconds, 3), "segment_seconds": round(seg.seconds, 3),
                 "steps": refined.steps, "interpolated_slices": refined.interpolated, "suggested": suggested,
                 **fused.report()}
        history.append(entry)
        if on_round is not None:
            on_round(entry, seg, current)
        if progress is not None:
            progress(entry)
    guide = None if model is None else model.guide
    return {"robot": robot, "rounds": history, "guide_pretrained": None if guide is None else bool(guide.pretrained),
            "warm_up_seconds": round(warm_up, 3)}


def with_corrections(predicted, truth, corrected, axis_index, spacing, probability=None, processed=None):
    """What the user's segmentation holds after a round (0/1 uint8), by Slicer's write rule for a model refined
    from corrections (``review.merge_prediction`` with ``evidence_axis``): the corrected slices as drawn,
    elsewhere the model's labels ``predicted``, combined with the shape between the corrected slices when its
    ``probability`` is given (``processed``: the slices it ran on), connected to them and continuing them;
    ``spacing`` in array order (mm)."""
    return with_corrections_explained(predicted, truth, corrected, axis_index, spacing, probability, processed)[0]


def with_corrections_explained(predicted, truth, corrected, axis_index, spacing, probability=None, processed=None):
    """``with_corrections``' segment and its ``fusion.FusedPrediction`` (``review.merge_prediction_explained``)."""
    writable = ~slice_mask(np.shape(truth), axis_index, list(corrected))
    return merge_prediction_explained(truth, predicted, writable, evidence_axis=axis_index, spacing=spacing,
                                      probability=probability, processed=processed, user_slices=list(corrected))


def spread_slices(truth, axis_index, count, placement="ends"):
    """``count`` slices spread over the structure (fewer when it spans fewer slices), along ``axis_index``.

    Args:
        truth: the label volume (labels > 0 are the structure).
        axis_index: the array axis the slices are cut along.
        count: how many slices.
        placement: ``"ends"``: evenly spaced from the first to the last slice holding the structure (those two
            included); ``"interior"``: as a user places them, in the middle of ``count`` equal parts of the
            structure's extent (first + floor((i + 0.5) n / count), n slices from first to last).

    Returns:
        The sorted slice indices.

    Raises:
        InputError: the label volume is empty, or the placement is unknown.
    """
    if placement not in PLACEMENTS:
        raise InputError(f"unknown placement {placement!r}: use one of {', '.join(PLACEMENTS)}")
    holding = np.flatnonzero(np.moveaxis(np.asarray(truth) > 0, axis_index, 0).reshape(truth.shape[axis_index], -1)
                             .any(axis=1))
    if holding.size == 0:
        raise InputError("the label volume is empty: there is no structure to spread slices over")
    if placement == "interior":
        extent = int(holding[-1] - holding[0] + 1)
        return sorted({int(holding[0] + math.floor((i + 0.5) * extent / count)) for i in range(count)})
    return sorted({int(round(v)) for v in np.linspace(holding[0], holding[-1], count)})


def refine_and_segment(image, truth, slices, guide=None, axis="axial", settings=None, device="auto", progress=None):
    """A new model refined from ``slices`` of ``truth``, then the other slices segmented: (the RefineResult, the
    SegmentationResult, what the user's segmentation holds: ``with_corrections``, the slices not labelled, and its
    ``fusion.FusedPrediction``: where each slice's result came from)."""
    axis_index = image_slice_axis(image, axis)
    refined = refine_model(image, truth, slices, guide=guide, axis=axis, settings=settings, progress=progress)
    rest = [k for k in range(truth.shape[axis_index]) if k not in slices]
    seg = segment_volume(refined.model, image, axis=axis, device=device)
    current, fused = with_corrections_explained(seg.labels, truth, slices, axis_index, image.geometry.spacing[::-1],
                                                seg.probability, seg.processed)
    return refined, seg, current, rest, fused


def spread_protocol(image, truth, count, guide=None, axis="axial", settings=None, device="auto", on_round=None,
                    placement="ends"):
    """The spread protocol: ``count`` slices spread over the structure (``spread_slices``' ``placement``) are
    labelled, a new model is refined from them once, and the other slices are segmented. Dice on the slices not labelled (false positives anywhere
    count) and over the whole volume (the labelled slices hold the truth). As in a warm worker, MONAI is imported
    before the clock starts (``warm_up_seconds``). ``on_round``: as ``simulate``'s, called once."""
    settings = settings or RefineSettings(device=device)
    warm_up = preload_monai()
    truth = (np.asarray(truth) > 0).astype(np.uint8)
    axis_index = image_slice_axis(image, axis)
    slices = spread_slices(truth, axis_index, count, placement)
    refined, seg, current, rest, fused = refine_and_segment(image, truth, slices, guide, axis, settings, device)
    moved, moved_truth = np.moveaxis(current, axis_index, 0), np.moveaxis(truth, axis_index, 0)
    summary = {"protocol": "spread", "placement": placement, "count": count, "slices": slices,
               "interpolated_slices": refined.interpolated, "steps": refined.steps,
               "stopped": refined.stopped, "dice_not_labelled": dice_score(moved[rest], moved_truth[rest]),
               "dice_all": dice_score(current, truth), "refine_seconds": round(refined.seconds, 3),
               "segment_seconds": round(seg.seconds, 3), "region": refined.model.config.region,
               "warm_up_seconds": round(warm_up, 3), **fused.report(),
               "guide_pretrained": None if refined.model.guide is None else bool(refined.model.guide.pretrained)}
    if on_round is not None:
        on_round(summary, seg, current)
    return summary
