"""Training of a GuiDINOModel on SliceSets: augmentation, poly schedule, best-on-validation, cancel, resume."""

import math
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..bundle import build_model, save_bundle
from ..guides import load_guide
from ..lora import has_lora
from ..networks import count_parameters
from ..errors import InputError
from ..outputs import check_new_folder, check_outputs
from ..runtime import resolve_device, seed_everything
from .augment import AugmentConfig, augment_batch
from .datasets import load_training_data, model_config_for
from .losses import GuiDINOLoss, guide_target
from .settings import TrainConfig

@dataclass
class TrainResult:
    best_val_dice: Optional[float]
    steps: int
    seconds: float
    history: list = field(default_factory=list)
    stopped: str = "finished"  # finished | cancelled | time budget | early stopping

    def to_dict(self):
        return asdict(self)


def learned_state(model):
    """Everything training changes: TokenBook, network and LoRA adapter weights (copied)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("guide.") or "lora_" in k}


def _set_trainable(model, parts):
    for p in model.parameters():
        p.requires_grad_(False)
    groups = {"network": model.network, "tokenbook": model.tokenbook}
    for part in parts:
        if part == "lora":
            if model.guide is not None and has_lora(model.guide):
                for name, p in model.guide.named_parameters():
                    if "lora_" in name:
                        p.requires_grad_(True)
        elif groups[part] is not None:
            groups[part].requires_grad_(True)


def _optimizer(model, config):
    lora, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (lora if "lora_" in name else rest).append(p)
    if not lora and not rest:
        raise ValueError(f"nothing to train: the model has no trainable {', '.join(config.parts)}")
    if config.optimizer == "sgd":
        lr, wd = config.lr or 1e-2, 3e-5 if config.weight_decay is None else config.weight_decay
        groups = [{"params": rest, "lr": lr}, {"params": lora, "lr": config.lora_lr}]
        return torch.optim.SGD([g for g in groups if g["params"]], momentum=0.99, nesterov=True, weight_decay=wd)
    lr, wd = config.lr or 1e-4, 1e-4 if config.weight_decay is None else config.weight_decay
    groups = [{"params": rest, "lr": lr}, {"params": lora, "lr": config.lora_lr}]
    fused = (lora + rest)[0].device.type in ("cpu", "cuda") or None  # one kernel for all: 17 -> 6 ms a step, CPU
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=wd, fused=fused)


@torch.no_grad()
def compute_guide_features(model, images, device, batch_size=32):
    """The frozen guide's features for every image, kept on ``device`` in float16."""
    out = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    for first in range(0, len(images), batch_size):
        with autocast:
            feats = model.guide_features(images[first:first + batch_size].to(device).float())
        out.append([f.half() for f in feats] if isinstance(feats, list) else feats.half())
    if isinstance(out[0], list):
        return [torch.cat([o[i] for o in out]) for i in range(len(out[0]))]
    return torch.cat(out)


def _index_features(features, index):
    if features is None:
        return None
    return [f[index].float() for f in features] if isinstance(features, list) else features[index].float()


@torch.no_grad()
def validation_dice(model, val_set, device, batch_size=16, features=None):
    """Mean per-slice Dice of the foreground at the model size (empty truth and prediction score 1)."""
    from monai.metrics import compute_dice  # slow import: on first use

    model.eval()
    scores = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    for first in range(0, len(val_set), batch_size):
        index = slice(first, first + batch_size)
        images = val_set.images[index].to(device).float().contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(images, _index_features(features, index)).logits.float()
        labels = val_set.labels[index].to(device).long()
        if logits.shape[1] == 1:
            pred, truth = (logits >= 0), (labels > 0)[:, None]
        else:
            classes = logits.shape[1]
            pred = torch.nn.functional.one_hot(logits.argmax(1), classes).permute(0, 3, 1, 2)[:, 1:]
            truth = torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2)[:, 1:]
        dice = compute_dice(pred.float(), truth.float(), include_background=True, ignore_empty=False)
        scores.append(dice.nanmean(dim=1))
    return float(torch.cat(scores).mean())


def train(model, train_set, val_set=None, config=None, progress=None, cancel=None, checkpoint=None, resume=False):
    """Train ``model`` in place on ``train_set``; keep the best weights on ``val_set``.

    ``progress(dict)`` gets step, total, epoch, loss, val_dice, seconds, lr_factor (the learning rate's fraction
    of its start) after each validation. The poly schedule runs to whichever ends first, ``total`` steps or the
    time budget (not before ``min_steps``), so a run the clock stops ends annealed too.
    ``cancel`` (threading.Event) stops after the current step; the best weights so far are kept.
    ``checkpoint``: a file rewritten at each validation; with ``resume=True`` training continues from it.
    Returns a TrainResult; the model ends holding the best weights (the last ones without validation).
    """
    config = config or TrainConfig()
    start = time.perf_counter()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    order_rng = np.random.default_rng(config.seed)
    model.to(device, memory_format=torch.channels_last)  # faster convolutions (a third, 2-core CPU, 128 px)
    _set_trainable(model, config.parts)
    optimizer = _optimizer(model, config)
    epoch = train_set.epoch()
    steps_per_epoch = max(1, math.ceil(len(epoch) / config.batch_size))
    total = config.steps or config.epochs * steps_per_epoch
    budget, floor = config.time_budget, min(config.min_steps, total)

    def remaining(step):  # the poly schedule runs on whichever ends first, the steps or the time budget ...
        done = step / total
        if budget is not None:  # ... but the clock ends nothing before ``min_steps``
            clock = (time.perf_counter() - start) / budget
            done = max(done, min(clock, step / floor) if floor else clock)
        return max(0.0, 1 - done) ** config.poly_power

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, remaining)
    loss_fn = GuiDINOLoss(guide_weight=config.guide_weight, boundary_weight=config.boundary_weight)
    augment = None
    if config.augment:
        augment = AugmentConfig() if config.photometric else AugmentConfig().geometric()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    validate_every = config.validate_every or steps_per_epoch

    cached = model.guide is not None and not model.guide_is_trainable and config.cache_guide
    train_features = compute_guide_features(model, train_set.images, device) if cached else None
    val_features = compute_guide_features(model, val_set.images, device) if cached and val_set else None

    step, best, best_state, history, stale = 0, None, None, [], 0
    order = np.empty(0, int)
    run = _run_identity(config, train_set, val_set, total)
    if resume:
        saved = _load_checkpoint(checkpoint, device, run)
        model.load_state_dict(saved["state"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, best, best_state, history, stale = (saved[k] for k in ("step", "best", "best_state", "history", "stale"))
        order = saved["order"]
        order_rng.bit_generator.state = saved["order_rng"]
        generator.set_state(saved["generator"].to(generator.get_state().device))
        torch.set_rng_state(saved["torch_rng"])
    stopped, running, seen = "finished", torch.zeros((), device=device), 0
    while step < total:
        if cancel is not None and cancel.is_set():
            stopped = "cancelled"
            break
        if len(order) < config.batch_size:
            order = np.concatenate([order, epoch[order_rng.permutation(len(epoch))]])
        index, order = order[:config.batch_size], order[config.batch_size:]
        images = train_set.images[index].to(device).float()
        labels = train_set.labels[index].to(device).long()
        features = _index_features(train_features, index)
        if augment is not None and features is None:
            images, labels = augment_batch(images, labels, augment, generator)
        elif augment is not None:
            images, labels, features = augment_batch(images, labels, augment, generator, features=features)
        model.train()
        with autocast:
            out = model(images.contiguous(memory_format=torch.channels_last), features)
            loss, _ = loss_fn(out.logits, labels, out.guide_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        running += loss.detach().float()
        seen += 1
        out_of_time = budget is not None and time.perf_counter() - start > budget and step >= floor
        if step % validate_every == 0 or step == total or out_of_time:  # the last step is always validated
            val = validation_dice(model, val_set, device, features=val_features) if val_set else None
            entry = {"step": step, "total": total, "epoch": step / steps_per_epoch, "loss": float(running / seen),
                     "val_dice": val, "seconds": time.perf_counter() - start,
                     "lr_factor": scheduler.get_last_lr()[0] / scheduler.base_lrs[0]}
            history.append(entry)
            running, seen = torch.zeros((), device=device), 0
            if val is not None and (best is None or val > best):
                best, best_state, stale = val, learned_state(model), 0
            elif val is not None and best > 0:  # a model that has found nothing yet is not stale: it has not begun
                stale += 1
            if checkpoint:  # everything the next step depends on: a resumed run ends where this one would
                _save_checkpoint(checkpoint, {
                    "run": run, "state": learned_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "best": best, "best_state": best_state,
                    "history": history, "stale": stale, "order": order, "order_rng": order_rng.bit_generator.state,
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state()})
            if progress is not None:
                progress(entry)
            if config.patience is not None and stale >= config.patience:
                stopped = "early stopping"
                break
        if out_of_time and step < total:
            stopped = "time budget"
            break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return TrainResult(best, step, time.perf_counter() - start, history, stopped)


def _run_identity(config, train_set, val_set, total):
    """What a checkpoint must match to be resumed: the settings that shape the steps, and the data."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("device", "time_budget")}
    identity = {"settings": settings, "total": total, "train": list(train_set.names),
                "val": list(val_set.names) if val_set is not None else []}
    return identity if train_set.draws is None else {**identity, "draws": list(train_set.draws)}


def _save_checkpoint(path, content):
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        torch.save(content, partial)
        partial.replace(path)  # atomic: the checkpoint is the old one or the new one, never half
    finally:
        partial.unlink(missing_ok=True)


def _load_checkpoint(path, device, run):
    if not path:
        raise InputError("--resume needs --checkpoint FILE: the training state to continue from")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--resume: no checkpoint at {path}; run without --resume to start the training, "
                         "or give the checkpoint file it wrote")
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(saved, dict) or "order_rng" not in saved:
            raise ValueError("not a GuiDINO training checkpoint (or one written by an older GuiDINO)")
    except Exception as error:
        raise InputError(f"--resume: {path} cannot be read ({str(error).splitlines()[0] if str(error) else error}); "
                         "start again without --resume") from None
    if saved["run"] != run:
        raise InputError(f"--resume: {path} belongs to another training (other data or settings); resume with "
                         "the same data and options, or start again without --resume")
    return saved


def seed_tokenbook(model, slices, count=64):
    """Initialise the TokenBook's prototypes from labelled training tokens (no-op without one)."""
    if model.tokenbook is None or len(slices) == 0:
        return
    index = np.linspace(0, len(slices) - 1, min(count, len(slices))).astype(int)
    tokens = compute_guide_features(model, slices.images[index], model.tokenbook.prototypes.device).float()
    target = guide_target(slices.labels[index].long().to(tokens.device), tokens.shape[-2:])
    model.tokenbook.initialize_from(tokens.cpu(), target.cpu())


def train_bundle(model, train_set, val_set, out, train_config, provenance=None, progress=None, cancel=None,
                 checkpoint=None, resume=False):
    """Train ``model`` and save it as a new bundle at ``out``; returns (bundle path, TrainResult).

    ``checkpoint``: a file rewritten at each validation; ``resume=True`` continues from it.
    """
    model.to(resolve_device(train_config.device))
    seed_tokenbook(model, train_set)
    result = train(model, train_set, val_set, train_config, progress=progress, cancel=cancel, checkpoint=checkpoint,
                   resume=resume)
    guide = model.guide
    trainable, total = count_parameters(model)
    metrics = {"val_dice_at_model_size": result.best_val_dice, "steps": result.steps,
               "epochs": round(result.steps * train_config.batch_size / max(1, len(train_set)), 2),
               "train_seconds": round(result.seconds, 2), "stopped": result.stopped,
               "parameters": {"trainable": trainable, "total": total},
               "guide_pretrained": None if guide is None else guide.pretrained}
    provenance = {**(provenance or {}), "train_slices": len(train_set), "val_slices": len(val_set) if val_set else 0,
                  "train_config": asdict(train_config), "result": result.to_dict(),
                  "machine": {"python": platform.python_version(), "torch": torch.__version__,
                              "device": str(train_config.device), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    return save_bundle(model, out, metrics=metrics, provenance=provenance), result


def train_on_folder(data, out, network="wnet", guide=None, lora=False, size=256, widths=None, window=None,
                    classes=2, epochs=100, steps=None,
                    max_images=None, device="auto", batch_size=4, optimizer="adamw", lr=None, seed=0,
                    progress=None, cancel=None, checkpoint=None, resume=False, overwrite=False):
    """``guidino train``: train on a dataset folder and write a bundle (``overwrite``: an existing
    ``checkpoint`` file may be replaced when not resuming from it)."""
    if not Path(data).is_dir():
        raise InputError(f"--data {data}: not a folder; give a dataset folder (<split>/images and <split>/masks, or "
                         "volumes named X_image.nrrd with X_label.nrrd)")
    guide_folder = [guide] if guide is not None and Path(str(guide)).expanduser().exists() else []
    check_new_folder(out, "--out", inputs=[data], kept=guide_folder)  # before any work: a model is never replaced
    check_outputs({} if resume else {"--checkpoint": checkpoint}, inputs=[data], overwrite=overwrite)
    if lora and guide is not None and str(guide).lower() == "none":
        raise InputError("--lora adapts the guide, and --guide none has none: give a guide, or drop --lora")
    train_config = TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size, optimizer=optimizer, lr=lr,
                               seed=seed, device=device)
    guide_model = load_guide(guide)
    config = model_config_for(data, network, guided=guide_model is not None, lora=lora, size=size, widths=widths,
                              window=window, classes=classes)
    train_set, val_set = load_training_data(data, config, max_images)
    seed_everything(seed)  # before the model is built: the seed fixes its initial weights too
    model = build_model(config, guide_model)
    return train_bundle(model, train_set, val_set, out, train_config, {"data": str(Path(data).resolve())},
                        progress, cancel, checkpoint=checkpoint, resume=resume)
