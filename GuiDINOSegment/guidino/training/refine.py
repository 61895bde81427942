"""Refine from corrections: fine-tune on the slices a user corrected, as a new model version.

Works on engine objects (ImageData, label arrays, GuiDINOModel); the GuiDINOTrain Logic feeds it
from MRML, the ``guidino refine`` command from files (``protocols`` runs it as a benchmark user would).
"""

import copy
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from ..arguments import slice_indices
from ..bundle import BundleExistsError, build_model, load_bundle, save_bundle
from ..corrections import evidence_region
from ..errors import BundleError, InputError
from ..fusion import contour_tolerance
from ..guides import load_guide
from ..imageio import image_slice_axis
from ..interpolation import interpolate_shape
from ..jobs import RefineResult
from ..lora import add_lora, has_lora
from ..model import ModelConfig
from ..runtime import seed_everything
from .datasets import SliceSet, slices_of
from .losses import IGNORE
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


def interpolated_neighbours(labels, slices, axis_index, spacing, reach):
    """The slices beside the corrected ones, and where the shape interpolated between the corrections surely holds
    the structure there.

    Args:
        labels: the user's label volume (> 0: the structure), array order; only ``slices`` are read.
        slices: the corrected slice indices along ``axis_index``.
        axis_index: the array axis of the slices.
        spacing: voxel spacing in array order (mm).
        reach: how far (slices) from a corrected slice a neighbour may be; 0: none.

    Returns:
        ``(indices, core)``: the sorted indices of the slices within ``reach`` of a corrected slice and strictly
        between two corrected slices that both hold the structure, and the interpolated shape's sure inside (bool,
        the labels' grid; read only on ``indices``): deeper inside the interpolated contour than the write's
        tolerance there (``fusion.contour_tolerance`` at its distance to the nearer corrected slice).
        Nothing else on those slices is known: the interpolated contour errs by about that much (a bulging section
        is interpolated smaller), and a section the corrections do not show (a lobe, a branch) lies outside it, so
        the rest is left unlabelled (``losses.IGNORE``) rather than taught as background. Beyond the first or the
        last corrected slice nothing bounds the shape; toward a corrected slice without the structure its taper is
        a guess of how the structure ends (a tube cut short ends at full width), not evidence: neither is labelled.
        A neighbour with no sure inside (next to a small section) is left out: trained on with nothing labelled, it
        only dilutes the corrected slices' draws. ``([], None)`` when none.
    """
    corrected = sorted({int(s) for s in slices})
    if reach <= 0 or len(corrected) < 2:
        return [], None
    holding = {s for s in corrected if np.take(labels, s, axis=axis_index).any()}
    spans = [(low, high) for low, high in zip(corrected, corrected[1:]) if low in holding and high in holding]
    indices = sorted({k for low, high in spans for k in range(low + 1, high) if min(k - low, high - k) <= reach})
    if not indices:
        return [], None
    shape = interpolate_shape(labels, corrected, axis_index, spacing, extrapolate=False)
    gap = np.expand_dims(np.nan_to_num(shape.gap, posinf=0.0), tuple(a for a in range(3) if a != axis_index))
    sure = np.nan_to_num(shape.distance, nan=0.0) < -contour_tolerance(gap)
    indices = [k for k in indices if np.take(sure, k, axis=axis_index).any()]
    return (indices, sure) if indices else ([], None)


def refine_model(image, labels, slices, model=None, guide=None, axis: str = "axial",
                 settings: Optional[RefineSettings] = None, progress=None, cancel=None) -> RefineResult:
    """Fine-tune a model on the slices a user corrected; the input model is not modified.

    Every corrected slice is trained on: none is held out for early stopping (one slice's Dice is noise, and a stop
    kept on it can restore a model that has found nothing yet); what the corrections say about this volume is
    weighed when the result is written (``guidino.fusion``). With ``RefineSettings.interpolated_reach`` > 0 (off by
    default: it hurts slices placed at a structure's ends, BENCHMARKS section 3) the slices beside the corrected ones
    are trained on too, labelled where the shape interpolated between the corrections surely holds the structure and
    unlabelled elsewhere (``interpolated_neighbours``), the corrected slices drawn ``corrected_weight`` times as often.
    A new model learns and segments only the evidence region of the corrections (``guidino.corrections``), starting
    quiet.

    Args:
        image: the ImageData the corrections were made on.
        labels: the user's label volume on the image's grid (> 0: the structure); only ``slices`` are read.
        slices: the corrected slice indices along ``axis``.
        model: the GuiDINOModel to refine, or None to start a new one from ``guide``.
        guide: a new model's guide (hub id, folder, official .pth; None or ``"none"``: unguided).
        axis: the anatomical axis of the corrected slices.
        settings: RefineSettings (default: its defaults: 20 s of training, never fewer than 60 steps).
        progress: ``progress(entry)`` after each step (step, total, loss, seconds).
        cancel: a ``threading.Event``; set, training stops after the current step.

    Returns:
        A RefineResult: the refined model (None when a cancelled round is discarded), the slices, steps, seconds,
        why training stopped and the slices trained on with the interpolated shape as their label.

    Raises:
        InputError: no corrected slice, no structure on them for a new model, only foreground, labels on another
            grid, slice indices outside the volume, or LoRA asked for without a guide.
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
    train_set = slices_of(image, labels, model.config, axis=axis, indices=slices, name="correction")
    if fresh:
        model.set_output_prior(float((train_set.labels > 0).float().mean()))  # quiet where it has learned nothing
        seed_tokenbook(model, train_set)
    beside, core = interpolated_neighbours(labels, slices, axis_index, image.geometry.spacing[::-1],
                                            settings.interpolated_reach)
    if beside:
        interpolated = slices_of(image, core, model.config, axis=axis, indices=beside, name="interpolated")
        interpolated.labels[interpolated.labels == 0] = IGNORE  # only the sure inside is known
        train_set = SliceSet.concat([train_set, interpolated])
        train_set.draws = [settings.corrected_weight] * len(slices) + [1] * len(beside)
    before = learned_state(model)
    config = settings.train_config(batch_size=min(settings.batch_size, max(1, len(train_set))))
    result = train(model, train_set, None, config, progress=progress, cancel=cancel)
    kept = model
    if result.stopped == "cancelled" and not settings.keep_on_cancel:
        model.load_state_dict(before, strict=False)
        kept = None
    return RefineResult(kept, slices, result.steps, time.perf_counter() - start, result.stopped,
                        settings=asdict(settings), interpolated=beside)


def next_version_path(folder, stem):
    """``folder/stem-v001``, ``-v002``, …: the first version number not used yet."""
    folder = Path(folder)
    stem = re.sub(r"-v\d{3}$", "", stem)
    used = [int(m.group(1)) for p in folder.glob(f"{stem}-v*") if (m := re.fullmatch(re.escape(stem) + r"-v(\d{3})", p.name))]
    return folder / f"{stem}-v{max(used, default=0) + 1:03d}"


def save_refined(result, out, parent=None, volume=None, axis="axial"):
    """Save a refine result as a new bundle recording its parent, the volume, slices, settings and time."""
    provenance = {"kind": "refine", "parent": None if parent is None else str(Path(parent).resolve()),
                  "volume": volume, "axis": axis, "slices": result.slices,
                  "settings": result.settings, "steps": result.steps, "seconds": round(result.seconds, 3),
                  "stopped": result.stopped, "interpolated": result.interpolated}
    result.bundle = save_bundle(result.model, out, provenance=provenance)
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


def load_starting_model(bundle, guide=None, device="cpu"):
    """``none`` or None -> None (start from nothing); otherwise the bundle's model."""
    if bundle is None or str(bundle).lower() == "none":
        return None
    return load_bundle(bundle, guide=guide, device=device)
