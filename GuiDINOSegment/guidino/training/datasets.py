"""Training data as model-ready slices: 2D image folders (Kvasir-SEG layout) and labelled volumes."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InputError
from ..imageio import read_image, read_labels
from ..model import ModelConfig
from ..slicing import VolumeSlicer

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd")
PHOTO_NORMALIZATION = {"mode": "fixed", "low": 0.0, "high": 255.0}


@dataclass
class SliceSet:
    """N slices at the model size: images (N, C, S, S) float16 in [0, 1], labels (N, S, S) uint8; ``draws``: how
    many times each training epoch draws each slice (None: once each)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list
    draws: Optional[list] = None

    def __len__(self):
        return len(self.names)

    def epoch(self):
        """The slice indices one training epoch draws (each ``draws`` times), in order."""
        return np.repeat(np.arange(len(self)), 1 if self.draws is None else self.draws)

    def subset(self, index):
        index = list(index)
        return SliceSet(self.images[index], self.labels[index], [self.names[i] for i in index],
                        None if self.draws is None else [self.draws[i] for i in index])

    @classmethod
    def concat(cls, sets):
        draws = None if all(s.draws is None for s in sets) else [d for s in sets for d in (s.draws or [1] * len(s))]
        return cls(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]),
                   [n for s in sets for n in s.names], draws)


def check_labels(labels, name="labels", allow_empty=False):
    """Refuse label arrays a segmentation cannot learn from, with the fix in the message."""
    if labels.size == 0:
        raise InputError(f"{name}: the label image is empty (no voxels)")
    if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
        raise InputError(f"{name}: the labels contain NaN values; labels must be integers (0 = background)")
    foreground = np.count_nonzero(labels)
    if foreground == 0 and not allow_empty:
        raise InputError(f"{name}: the labels are all background; label the target in at least one slice")
    if foreground == labels.size:
        raise InputError(f"{name}: the labels are all foreground; label the background too (0 = background)")
    return labels


def folder_pairs(root, split):
    """(image, mask) path pairs of ``root/split/images`` and ``root/split/masks`` with the same stems."""
    base = Path(root) / split
    images_dir, masks_dir = base / "images", base / "masks"
    if not base.is_dir() and is_image_folder(root):
        found = sorted(p.parent.name for p in Path(root).glob("*/images") if p.is_dir())
        raise InputError(f"{root} has no {split}/ split (it has {', '.join(found)}/): add {split}/images and "
                         f"{split}/masks" + (", or give --split " + found[0] if split != "train" else ""))
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise InputError(f"{base}: expected folders images/ and masks/ (Kvasir-SEG layout: <split>/images, <split>/masks)")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs, unmatched = [], []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        (pairs.append((image, masks[image.stem])) if image.stem in masks else unmatched.append(image.name))
    if unmatched:
        raise InputError(f"{masks_dir}: no mask for {len(unmatched)} images (e.g. {unmatched[0]}); masks need the image's stem")
    orphans = sorted(set(masks) - {image.stem for image, _ in pairs})
    if orphans:
        raise InputError(f"{masks_dir}: {len(orphans)} masks have no image (e.g. {masks[orphans[0]].name}); each mask "
                         f"needs an image of the same stem in {images_dir}: add it, or remove the mask")
    if not pairs:
        raise InputError(f"{images_dir}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return pairs


def class_labels(labels, num_classes, name="labels"):
    """Labels as class indices: any value > 0 is foreground for a binary model; 0..C-1 otherwise."""
    if num_classes == 2:
        return (labels > 0).astype(np.uint8)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(f"{name}: label values {sorted(np.unique(labels).tolist())[:8]} do not fit a {num_classes}-class "
                         f"model; relabel them 0..{num_classes - 1} (0 = background)")
    return labels.astype(np.uint8)


def slices_of(image, labels, config, axis="axial", indices=None, name="volume"):
    """Slices ``indices`` (None = all) of a volume and its label volume as a SliceSet."""
    slicer = VolumeSlicer(image, axis, config)
    index = slicer.check_indices(indices)
    images = slicer.images(index).to(torch.float16)
    labels = class_labels(np.asarray(labels), config.num_classes, name)
    return SliceSet(images, slicer.labels(labels, index).to(torch.uint8), [f"{name}[{i}]" for i in index])


def load_image_folder(root, split, config, max_images=None):
    """A 2D dataset split (photographs or grey images with masks) as a SliceSet at the model size."""
    pairs = folder_pairs(root, split)[:max_images]
    sets = []
    for image_path, mask_path in pairs:
        image = read_image(image_path)
        check_fixed_range(image, config, image_path)
        labels = read_labels(mask_path)  # an image without the target (an empty mask) is a valid example
        if labels.shape[1:3] != image.voxels.shape[1:3]:
            raise InputError(f"{mask_path}: mask size {labels.shape[1:3]} differs from its image {image.voxels.shape[1:3]}")
        sets.append(slices_of(image, labels, config, name=image_path.stem))
    data = SliceSet.concat(sets)
    check_labels(data.labels.numpy(), f"{Path(root) / split}/masks")  # refused only without any target at all
    return data


def check_fixed_range(image, config, path):
    """Refuse an image whose values do not fit a fixed intensity range (taken from the dataset's first image)."""
    spec = config.normalization
    if spec.get("mode") == "fixed" and (image.voxels.min() < spec["low"] or image.voxels.max() > spec["high"]):
        raise InputError(f"{path}: values {image.voxels.min()}..{image.voxels.max()} do not fit the dataset's "
                         f"range {spec['low']:g}..{spec['high']:g} (8-bit, from its first image): give images of "
                         "one bit depth")


def volume_label_pairs(root):
    """(volume, label) pairs in a folder of volumes: ``X_image.ext`` with ``X_label.ext`` (or ``X-label.ext``)."""
    root = Path(root)
    files = [p for p in sorted(root.iterdir()) if p.name.lower().endswith(VOLUME_SUFFIXES)]
    pairs = []
    for path in files:
        stem = path.name
        for suffix in VOLUME_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem, ext = stem[: -len(suffix)], stem[-len(suffix):]
                break
        if "label" in stem:
            continue
        base = stem[: -len("_image")] if stem.endswith("_image") else stem
        for candidate in (f"{base}_label{ext}", f"{base}-label{ext}", f"{stem}_label{ext}", f"{stem}-label{ext}"):
            if (root / candidate).exists():
                pairs.append((path, root / candidate))
                break
    if not pairs:
        raise InputError(f"{root}: no volume/label pairs (name them X_image.nrrd + X_label.nrrd, or X.nrrd + X-label.nrrd)")
    return pairs


def is_image_folder(root):
    """Whether ``root`` is a 2D dataset in the Kvasir-SEG layout: any ``<split>/images`` folder."""
    root = Path(root)
    return root.is_dir() and any(p.is_dir() for p in root.glob("*/images"))


def photo_like(image_path):
    """True for 8-bit photographs (RGB or grey JPEG/PNG), which use a fixed 0..255 normalisation."""
    return read_image(image_path).voxels.dtype == np.uint8


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
        labels = check_labels(read_labels(label_path, like=image), str(label_path), allow_empty=True)
        sets.append(slices_of(image, labels, config, axis=axis, name=image_path.name))
    check_labels(np.concatenate([s.labels.numpy().ravel() for s in sets]), f"the labels in {data}")
    if len(sets) >= 2:
        return SliceSet.concat(sets[:-1]), sets[-1]
    everything = sets[0]
    held_out = set(range(2, len(everything), 5))
    return (everything.subset(i for i in range(len(everything)) if i not in held_out),
            everything.subset(sorted(held_out)))
