"""Cutting a volume into model-ready slices along one axis, and putting per-slice results back."""

import numpy as np
import torch
import torch.nn.functional as F

from .arguments import slice_indices
from .errors import InputError
from .imageio import image_slice_axis


class IntensityNormalizer:
    """Maps raw intensities to [0, 1] with per-volume statistics.

    Modes: ``percentile`` (robust: low/high percentiles of the volume), ``window`` (CT window:
    center/width), ``fixed`` (low/high given, e.g. 0/255 for 8-bit photographs).
    """

    def __init__(self, spec, voxels):
        mode = spec.get("mode", "percentile")
        if mode == "percentile":
            sample = voxels.reshape(-1)
            if sample.size > 2_000_000:
                sample = sample[:: sample.size // 1_000_000]
            self.low, self.high = (float(v) for v in np.percentile(sample, [spec.get("low", 0.5), spec.get("high", 99.5)]))
        elif mode == "window":
            self.low = float(spec["center"]) - float(spec["width"]) / 2
            self.high = float(spec["center"]) + float(spec["width"]) / 2
        elif mode == "fixed":
            self.low, self.high = float(spec["low"]), float(spec["high"])
        else:
            raise ValueError(f"unknown normalization mode {mode!r}: use percentile, window or fixed")

    def __call__(self, tensor):
        scale = 1.0 / (self.high - self.low) if self.high > self.low else 0.0
        return ((tensor.float() - self.low) * scale).clamp_(0.0, 1.0)


def letterbox_size(shape, pixel_spacing, size):
    """(h, w) inside a size x size square preserving the slice's physical aspect ratio."""
    extent = np.asarray(shape, dtype=float) * np.asarray(pixel_spacing, dtype=float)
    scale = size / extent.max()
    return tuple(int(max(1, min(size, round(e * scale)))) for e in extent)


def to_model_input(slices, fitted, size):
    """(B, C, h, w) -> (B, C, size, size): resize to ``fitted`` and pad at the bottom/right with 0."""
    resized = F.interpolate(slices, size=fitted, mode="bilinear", align_corners=False, antialias=True)
    return F.pad(resized, (0, size - fitted[1], 0, size - fitted[0]))


def labels_to_model_input(labels, fitted, size):
    """(B, h, w) integer labels -> (B, size, size) with nearest-neighbour resizing and 0 padding."""
    resized = F.interpolate(labels[:, None].float(), size=fitted, mode="nearest-exact")[:, 0]
    return F.pad(resized, (0, size - fitted[1], 0, size - fitted[0])).to(labels.dtype)


def from_model_output(maps, fitted, shape):
    """Inverse of ``to_model_input`` for (B, C, size, size) maps: crop, resize back to the slice shape."""
    return F.interpolate(maps[..., : fitted[0], : fitted[1]], size=tuple(shape), mode="bilinear", align_corners=False)


GUIDE_SAMPLES_PER_PATCH = 4


class VolumeSlicer:
    """Cuts a volume into model-ready slices along one axis and puts per-slice results back.

    Training, inference and refinement all go through it, so they see identical preprocessing:
    per-volume intensity normalisation, physical-aspect letterboxing to the model size. A model with
    a ``region`` (refined from a few corrected slices) sees only that box of each slice, and only the
    slices of its range hold anything (``inside``).
    """

    def __init__(self, image, axis, config):
        self.image = image
        self.config = config
        if image.channels != config.in_channels and not (image.channels == 1 and config.in_channels == 3):
            raise InputError(f"the model expects {config.in_channels}-channel images, the input has {image.channels}")
        self.axis = image_slice_axis(image, axis)
        self.axis_name = axis
        self.count = image.voxels.shape[self.axis]
        plane = tuple(np.delete(image.voxels.shape[:3], self.axis))
        self.range, self.box = self._view(config.region, image.voxels.shape[:3], plane)
        self.shape = (self.box[0].stop - self.box[0].start, self.box[1].stop - self.box[1].start)
        spacing = np.asarray(image.geometry.spacing[::-1], dtype=float)  # numpy axis order
        self.slice_spacing = float(spacing[self.axis])
        self.pixel_spacing = tuple(np.delete(spacing, self.axis))
        self.fitted = letterbox_size(self.shape, self.pixel_spacing, config.input_size)
        self.normalize = IntensityNormalizer(config.normalization, image.voxels)

    def _view(self, region, grid, plane):
        """What the model sees: (first, last) slice, and the (row slice, column slice) of each slice: the whole
        volume, or its region's slice range and box."""
        if region is None:
            return (0, self.count - 1), (slice(0, plane[0]), slice(0, plane[1]))
        if tuple(region["grid"]) != tuple(grid) or region["array_axis"] != self.axis:
            raise InputError(f"this model was refined from corrected slices of one volume ({region['axis']} slices of "
                             f"a {'x'.join(map(str, region['grid']))} grid) and segments only that volume along that "
                             f"axis; this is a {'x'.join(map(str, grid))} grid cut along {self.axis_name}: refine a "
                             "model from this volume's corrections, or use a model trained on whole slices")
        return tuple(region["slices"]), (slice(*region["rows"]), slice(*region["cols"]))

    def inside(self, index):
        """Which of slices ``index`` lie in the model's slice range (all of them without a region)."""
        index = np.asarray(index)
        return (index >= self.range[0]) & (index <= self.range[1])

    def auto_guide_stride(self, patch_size):
        """Slices between guide evaluations so the guide is sampled through the volume at least
        ``GUIDE_SAMPLES_PER_PATCH`` times per guide-patch width (in mm); 1 for 2D images."""
        if self.image.is_2d:
            return 1
        extent = max(n * s for n, s in zip(self.shape, self.pixel_spacing))
        patch_mm = patch_size * extent / self.config.input_size
        return max(1, int(patch_mm / GUIDE_SAMPLES_PER_PATCH / self.slice_spacing))

    def check_indices(self, indices):
        if indices is None:
            return np.arange(self.count)
        return np.asarray(slice_indices(indices, self.count, self.axis_name), dtype=int)

    def take(self, voxels, index):
        """Slices ``index`` of a (D, H, W[, C]) array along the axis, as a (B, h, w[, C]) tensor."""
        cut = np.moveaxis(np.take(voxels, index, axis=self.axis), self.axis, 0)[:, self.box[0], self.box[1]]
        return torch.from_numpy(np.ascontiguousarray(cut))

    def images(self, index, device="cpu"):
        """(B, C, S, S) model input in [0, 1] for slices ``index``."""
        batch = self.take(self.image.voxels, index).to(device)
        batch = batch.permute(0, 3, 1, 2) if batch.ndim == 4 else batch.unsqueeze(1)
        batch = self.normalize(batch)
        if self.config.in_channels == 3 and batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        return to_model_input(batch, self.fitted, self.config.input_size)

    def labels(self, label_voxels, index):
        """(B, S, S) integer labels at the model size for slices ``index`` of a label volume."""
        return labels_to_model_input(self.take(label_voxels, index).long(), self.fitted, self.config.input_size)

    def restore(self, maps):
        """(B, C, S, S) model-size maps back to (B, C, h, w) at the native shape of the slice (or its box)."""
        return from_model_output(maps, self.fitted, self.shape)

    def put(self, volume, values, index):
        """Write (B, h, w) values into ``volume`` (D, H, W) at slices ``index`` (into the box with a region)."""
        values = values.cpu().numpy() if values.dtype == torch.uint8 else values.float().cpu().numpy()
        np.moveaxis(volume, self.axis, 0)[index, self.box[0], self.box[1]] = values.astype(volume.dtype, copy=False)
