"""Refine from corrections: fine-tune on the slices a user corrected, as a new model version.

Works on engine objects (ImageData, label arrays, GuiDINOModel); the GuiDINOTrain Logic feeds it
from MRML, the ``guidino refine`` / ``guidino simulate`` commands from files.
"""

import copy
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..arguments import slice_indices
from ..bundle import BundleExistsError, build_model, load_bundle, save_bundle
from ..corrections import evidence_region
from ..errors import BundleError, InputError
from ..guides import load_guide
from ..imageio import image_slice_axis
from ..inference import segment_volume
from ..jobs import RefineResult
from ..lora import add_lora, has_lora
from ..metrics import dice_score
from ..model import ModelConfig
from ..review import merge_prediction, slice_mask
from ..runtime import preload_monai, seed_everything
from .datasets import slices_of
from .settings import RefineSettings
from .trainer import learned_state, seed_tokenbook, train


def corrections_check(labels, slices, axis_index, starting_fresh):
    """Refuse corrections that cannot teach the model, with what the user should do."""
    if len(slices) == 0:
        raise InputError("no corrected slices: correct the segment on at least one slice (or mark a slice "
                         "reviewed), then press Refine from corrections")
    corrected = np.take(labels, list(slices), axis=axis_index)
    if starting_fresh and not corrected.any():
        raise InputError("the corrected slices contain no target: label the structure on at least one slice "
                         "before refining a new model")
    if corrected.all():
        raise InputError("the corrected slices are all foreground: label the background too")


def refine_model(image, labels, slices, model=None, guide=None, axis="axial", settings=None, progress=None,
                 cancel=None):
    """Fine-tune ``model`` (a GuiDINOModel, or None to start a new one from ``guide``) on slices ``slices``.

    ``labels``: the user's label volume (only the listed slices are read). With ``HOLD_OUT_FROM`` or more
    corrected slices one is held out for early stopping (``held_out_slice``). A new model learns and
    segments only the evidence region of the corrections (``guidino.corrections``), starting quiet.
    The input model is not modified.
    """
    settings = settings or RefineSettings()
    start = time.perf_counter()
    axis_index = image_slice_axis(image, axis)
    slices = slice_indices(slices, image.voxels.shape[axis_index], axis)
    if np.shape(labels)[:3] != image.voxels.shape[:3]:
        raise InputError(f"the labels {np.shape(labels)[:3]} and the volume {image.voxels.shape[:3]} have different "
                         "grids: give labels on the volume's grid")
    fresh = model is None
    corrections_check(labels, slices, axis_index, fresh)
    parts = settings.parts()
    region = (evidence_region(labels, slices, axis_index, axis, image.geometry.spacing[::-1])
              if fresh or model.config.region is not None else None)  # models trained on whole slices keep them
    seed_everything(settings.seed)  # before anything random is built (a new model, LoRA adapters)
    if fresh:
        guide_model = load_guide(guide)
        config = {"in_channels": image.channels, "guided": guide_model is not None, "region": region,
                  **settings.new_model}
        if "lora" in parts and guide_model is None:
            raise InputError("LoRA adapts the guide, and there is none (--guide none): give a guide, or drop --lora")
        model = build_model(ModelConfig(**config), guide_model)
    else:
        if "lora" in parts and model.guide is None:
            raise InputError("LoRA adapts the guide, and this model has none: refine without LoRA")
        model = copy.deepcopy(model)
        if model.config.region is not None and region is not None:
            model.config.region = region  # a model made from corrections follows them as they grow
    if "lora" in parts and not has_lora(model.guide):
        add_lora(model.guide, rank=8)
        model.config.lora_rank = 8
    data = slices_of(image, labels, model.config, axis=axis, indices=slices, name="correction")
    held_out = held_out_slice(labels, slices, axis_index)
    train_index = [i for i, s in enumerate(slices) if s != held_out]
    train_set = data.subset(train_index)
    val_set = data.subset([slices.index(held_out)]) if held_out is not None else None
    if fresh:
        model.set_output_prior(float((train_set.labels > 0).float().mean()))  # quiet where it has learned nothing
        seed_tokenbook(model, train_set)
    before = learned_state(model)
    config = settings.train_config(batch_size=min(settings.batch_size, max(1, len(train_set))),
                                   validate_every=max(1, settings.steps // 10) if val_set is not None else 0,
                                   patience=4 if val_set is not None else None)
    result = train(model, train_set, val_set, config, progress=progress, cancel=cancel)
    kept = model
    if result.stopped == "cancelled" and not settings.keep_on_cancel:
        model.load_state_dict(before, strict=False)
        kept = None
    return RefineResult(kept, slices, held_out, result.steps, time.perf_counter() - start, result.best_val_dice,
                        result.stopped, settings=asdict(settings))


HOLD_OUT_FROM = 5  # corrected slices needed before one is kept aside for early stopping


def held_out_slice(labels, slices, axis_index):
    """The corrected slice kept aside for early stopping, or None: with fewer than ``HOLD_OUT_FROM`` slices
    every one is needed for training. Never the first or the last (they bound the structure), nor the one
    with the most structure, nor one without it; the one nearest the middle of the list among the rest."""
    if len(slices) < HOLD_OUT_FROM:
        return None
    area = {s: int(np.count_nonzero(np.take(labels, s, axis=axis_index))) for s in slices}
    largest = max(slices, key=lambda s: area[s])
    candidates = [s for s in slices[1:-1] if s != largest and area[s] > 0]
    middle = slices[len(slices) // 2]
    return min(candidates, key=lambda s: (abs(s - middle), s)) if candidates else None


def next_version_path(folder, stem):
    """``folder/stem-v001``, ``-v002``, …: the first version number not used yet."""
    folder = Path(folder)
    stem = re.sub(r"-v\d{3}$", "", stem)
    used = [int(m.group(1)) for p in folder.glob(f"{stem}-v*") if (m := re.fullmatch(re.escape(stem) + r"-v(\d{3})", p.name))]
    return folder / f"{stem}-v{max(used, default=0) + 1:03d}"


def save_refined(result, out, parent=None, volume=None, axis="axial"):
    """Save a refine result as a new bundle recording its parent, the volume, slices, settings and time."""
    provenance = {"kind": "refine", "parent": None if parent is None else str(Path(parent).resolve()),
                  "volume": volume, "axis": axis, "slices": result.slices, "held_out": result.held_out,
                  "settings": result.settings, "steps": result.steps, "seconds": round(result.seconds, 3),
                  "stopped": result.stopped}
    metrics = {"held_out_dice_at_model_size": result.val_dice}
    result.bundle = save_bundle(result.model, out, metrics=metrics, provenance=provenance)
    return result.bundle


def save_version(result, folder, stem, parent=None, volume=None, axis="axial"):
    """Save a refine result as the next version ``folder/stem-vNNN``. Numbers are taken by the atomic rename of
    the finished bundle: two saves at once get two numbers, none replaces the other."""
    for _ in range(1000):
        try:
            return save_refined(result, next_version_path(folder, stem), parent=parent, volume=volume, axis=axis)
        except BundleExistsError:
            continue  # another save took that number meanwhile
    raise BundleError(f"no free version number for {stem} in {folder}")


def simulate(image, truth, rounds, model=None, guide=None, axis="axial", settings=None, device="auto",
             progress=None, on_round=None):
    """A robot user: each round it corrects the unreviewed slice with the largest error, refines, re-segments.

    Starting from nothing (``model`` None), round 1 labels the slice with the largest true area.
    Returns ``{"rounds": [{"round", "corrected_slices", "dice_all", "dice_unreviewed",
    "refine_seconds", "segment_seconds"}, ...], "guide_pretrained", "warm_up_seconds"}``: Dice over the whole volume
    (corrected slices hold the truth) and over the slices the robot has not corrected. The rounds run as in a warm
    worker: MONAI is imported first (``warm_up_seconds``), off every round's clock. ``on_round(entry, predicted,
    current)``, when given, receives each round's model labels on the unreviewed slices and what the user's
    segmentation then holds (``with_corrections``), both in the image's array order.
    """
    settings = settings or RefineSettings(device=device)
    warm_up = preload_monai()
    truth = (np.asarray(truth) > 0).astype(np.uint8)
    axis_index = image_slice_axis(image, axis)
    truth_slices = np.moveaxis(truth, axis_index, 0)
    reviewed, history = [], []
    current = None if model is None else segment_volume(model, image, axis=axis, device=device).labels
    for number in range(1, rounds + 1):
        candidates = [k for k in range(truth_slices.shape[0]) if k not in reviewed]
        if not candidates:
            break
        if current is None:
            pick = max(candidates, key=lambda k: int(truth_slices[k].sum()))
        else:
            error = np.moveaxis(current != truth, axis_index, 0)
            pick = max(candidates, key=lambda k: int(error[k].sum()))
        reviewed.append(pick)
        refined = refine_model(image, truth, reviewed, model=model, guide=guide, axis=axis, settings=settings)
        model = refined.model
        todo = [k for k in range(truth_slices.shape[0]) if k not in reviewed]
        seg = segment_volume(model, image, axis=axis, slices=todo, device=device)
        current = with_corrections(seg.labels, truth, reviewed, axis_index, image.geometry.spacing[::-1])
        predicted_unreviewed = np.moveaxis(current, axis_index, 0)[todo]
        entry = {"round": number, "corrected_slices": sorted(reviewed),
                 "dice_all": dice_score(current, truth),
                 "dice_unreviewed": dice_score(predicted_unreviewed, truth_slices[todo]) if todo else None,
                 "refine_seconds": round(refined.seconds, 3), "segment_seconds": round(seg.seconds, 3),
                 "steps": refined.steps}
        history.append(entry)
        if on_round is not None:
            on_round(entry, seg.labels, current)
        if progress is not None:
            progress(entry)
    guide = None if model is None else model.guide
    return {"rounds": history, "guide_pretrained": None if guide is None else bool(guide.pretrained),
            "warm_up_seconds": round(warm_up, 3)}


def with_corrections(predicted, truth, corrected, axis_index, spacing):
    """What the user's segmentation holds after a round (0/1 uint8), by Slicer's write rule for a model refined
    from corrections: the corrected slices as drawn, elsewhere the prediction that connects to them and continues
    them (``review.merge_prediction`` with ``evidence_axis``); ``spacing`` in array order (mm)."""
    writable = ~slice_mask(np.shape(truth), axis_index, list(corrected))
    return merge_prediction(truth, predicted, writable, evidence_axis=axis_index, spacing=spacing)


def spread_slices(truth, axis_index, count):
    """``count`` slices evenly spaced from the first to the last slice holding the structure (fewer when it
    spans fewer slices)."""
    holding = np.flatnonzero(np.moveaxis(np.asarray(truth) > 0, axis_index, 0).reshape(truth.shape[axis_index], -1)
                             .any(axis=1))
    if holding.size == 0:
        raise InputError("the label volume is empty: there is no structure to spread slices over")
    return sorted({int(round(v)) for v in np.linspace(holding[0], holding[-1], count)})


def refine_and_segment(image, truth, slices, guide=None, axis="axial", settings=None, device="auto", progress=None):
    """A new model refined from ``slices`` of ``truth``, then the other slices segmented: (the RefineResult, the
    SegmentationResult, what the user's segmentation holds: ``with_corrections``, the slices not labelled)."""
    axis_index = image_slice_axis(image, axis)
    refined = refine_model(image, truth, slices, guide=guide, axis=axis, settings=settings, progress=progress)
    rest = [k for k in range(truth.shape[axis_index]) if k not in slices]
    seg = segment_volume(refined.model, image, axis=axis, slices=rest, device=device)
    return refined, seg, with_corrections(seg.labels, truth, slices, axis_index, image.geometry.spacing[::-1]), rest


def spread_protocol(image, truth, count, guide=None, axis="axial", settings=None, device="auto", on_round=None):
    """The spread protocol: ``count`` slices evenly spaced over the structure are labelled, a new model is refined
    from them once, and the other slices are segmented. Dice on the slices not labelled (false positives anywhere
    count) and over the whole volume (the labelled slices hold the truth). As in a warm worker, MONAI is imported
    before the clock starts (``warm_up_seconds``). ``on_round``: as ``simulate``'s, called once."""
    settings = settings or RefineSettings(device=device)
    warm_up = preload_monai()
    truth = (np.asarray(truth) > 0).astype(np.uint8)
    axis_index = image_slice_axis(image, axis)
    slices = spread_slices(truth, axis_index, count)
    refined, seg, current, rest = refine_and_segment(image, truth, slices, guide, axis, settings, device)
    moved, moved_truth = np.moveaxis(current, axis_index, 0), np.moveaxis(truth, axis_index, 0)
    summary = {"protocol": "spread", "count": count, "slices": slices, "steps": refined.steps,
               "stopped": refined.stopped, "dice_not_labelled": dice_score(moved[rest], moved_truth[rest]),
               "dice_all": dice_score(current, truth), "refine_seconds": round(refined.seconds, 3),
               "segment_seconds": round(seg.seconds, 3), "region": refined.model.config.region,
               "warm_up_seconds": round(warm_up, 3),
               "guide_pretrained": None if refined.model.guide is None else bool(refined.model.guide.pretrained)}
    if on_round is not None:
        on_round(summary, seg.labels, current)
    return summary


def load_starting_model(bundle, guide=None, device="cpu"):
    """``none`` or None -> None (start from nothing); otherwise the bundle's model."""
    if bundle is None or str(bundle).lower() == "none":
        return None
    return load_bundle(bundle, guide=guide, device=device)
