"""What the ``guidino`` commands do, as plain functions (the CLI and the benchmarks call these)."""

import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from guidino.bundle import build_model, save_bundle
from guidino.guide import GuideGenerator
from guidino.training.losses import guide_target
from guidino.model import ModelConfig
from guidino.networks import count_parameters
from guidino.volume import read_image, read_labels, resolve_device

from .datasets import (PHOTO_NORMALIZATION, SliceSet, check_labels, folder_pairs, is_image_folder, load_image_folder,
                       slices_of, volume_label_pairs)
from .trainer import TrainConfig, compute_guide_features, train


def load_guide(source):
    """``none`` -> None (unguided); otherwise the guide from a hub id, folder or .pth (default: DINOv3 ViT-S/16)."""
    if source is not None and str(source).lower() == "none":
        return None
    return GuideGenerator.load(source)


def model_config_for(data, network="wnet", guided=True, lora=False, size=256, widths=None, window=None,
                     classes=2):
    """The ModelConfig that suits a dataset folder: channels and intensity normalisation from its images.

    ``window``: (center, width) of a CT window, instead of the per-volume robust percentiles.
    ``classes``: 2 (binary: any label > 0 is the target) or C, with labels 0..C-1.
    """
    if is_image_folder(data):
        first = read_image(folder_pairs(data, "train")[0][0])
        normalization = PHOTO_NORMALIZATION if first.voxels.dtype == np.uint8 else {"mode": "percentile", "low": 0.5, "high": 99.5}
        in_channels = first.channels
    else:
        normalization, in_channels = {"mode": "percentile", "low": 0.5, "high": 99.5}, 1
    if window is not None:
        normalization = {"mode": "window", "center": float(window[0]), "width": float(window[1])}
    return ModelConfig(network=network, in_channels=in_channels, num_classes=classes, input_size=size, guided=guided,
                       widths=widths,
                       lora_rank=8 if lora else 0, normalization=normalization)


def load_training_data(data, config, max_images=None, axis="axial"):
    """(train, val) SliceSets: a 2D folder's train/ and val/ splits, or a folder of labelled volumes.

    For volumes, the last volume is the validation set when there are two or more; with one,
    every fifth slice is held out.
    """
    if is_image_folder(data):
        return load_image_folder(data, "train", config, max_images), load_image_folder(data, "val", config)
    sets = []
    for image_path, label_path in volume_label_pairs(data):
        image = read_image(image_path)
        labels = check_labels(read_labels(label_path, like=image), str(label_path))
        sets.append(slices_of(image, labels, config, axis=axis, name=image_path.name))
    if len(sets) >= 2:
        return SliceSet.concat(sets[:-1]), sets[-1]
    everything = sets[0]
    held_out = set(range(2, len(everything), 5))
    return (everything.subset(i for i in range(len(everything)) if i not in held_out),
            everything.subset(sorted(held_out)))


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
                    progress=None, cancel=None, checkpoint=None, resume=False):
    """``guidino train``: train on a dataset folder and write a bundle."""
    guide_model = load_guide(guide)
    config = model_config_for(data, network, guided=guide_model is not None, lora=lora, size=size, widths=widths,
                              window=window, classes=classes)
    train_set, val_set = load_training_data(data, config, max_images)
    model = build_model(config, guide_model)
    train_config = TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size, optimizer=optimizer, lr=lr,
                               seed=seed, device=device)
    return train_bundle(model, train_set, val_set, out, train_config, {"data": str(Path(data).resolve())},
                        progress, cancel, checkpoint=checkpoint, resume=resume)
