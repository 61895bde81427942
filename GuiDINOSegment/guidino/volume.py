"""Slice-by-slice segmentation of a whole volume (or one 2D image) in its exact geometry."""

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .geometry import Geometry

AXES = ("axial", "coronal", "sagittal")
# The LPS axis each slicing direction is normal to: axial slices are stacked along S, etc.
_AXIS_NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}


class InputError(ValueError):
    """Input the engine cannot use; the message names the problem and the fix."""


@dataclass
class ImageData:
    """A volume or 2D image as the engine sees it: (D, H, W) or (D, H, W, 3) voxels plus geometry."""

    voxels: np.ndarray
    geometry: Geometry
    is_2d: bool = False

    @property
    def channels(self):
        return 3 if self.voxels.ndim == 4 else 1


def read_image(path):
    """Read any SimpleITK-readable volume or 2D image (a DICOM series folder too) as ImageData."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"{path}: a folder with no DICOM series in it; give a volume file or a DICOM folder")
            image = sitk.ReadImage(files)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown format"
        raise InputError(f"{path}: cannot be read as an image ({reason}); use NRRD, NIfTI, MHA, DICOM, PNG or JPEG") from None
    return image_data_from_sitk(image, name=str(path))


def check_shape(name, dim, components):
    """Refuse 4D, vector and odd-channel images, with the fix in the message."""
    if dim == 4:
        raise InputError(f"{name}: a 4D image (time series or multi-volume); extract one 3D volume first")
    if dim not in (2, 3):
        raise InputError(f"{name}: a {dim}D image; GuiDINO segments 3D volumes and 2D images")
    if dim == 3 and components != 1:
        raise InputError(f"{name}: a vector volume with {components} components per voxel; convert it to a scalar "
                         "volume first (in Slicer: Vector to Scalar Volume)")
    if dim == 2 and components not in (1, 3, 4):
        raise InputError(f"{name}: a 2D image with {components} channels; give a grey or RGB image")


def image_data_from_sitk(image, name="input"):
    """Check and convert a SimpleITK image: 2D (grey or RGB) or 3D scalar."""
    dim, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    check_shape(name, dim, components)
    voxels = check_voxels(sitk.GetArrayFromImage(image), name)
    if dim == 2:
        if components == 4:
            voxels = voxels[..., :3]  # drop alpha
        voxels = voxels[None]
        geometry = Geometry(tuple(image.GetSpacing()) + (1.0,), tuple(image.GetOrigin()) + (0.0,),
                            _embed_direction_2d(image.GetDirection()))
    else:
        geometry = Geometry.from_sitk(image)
    return ImageData(check_voxels(voxels, name), geometry, is_2d=dim == 2)


def read_labels(path, like=None):
    """Read a label image as integers; 8-bit masks stored as 0/255 become 0/1."""
    data = read_image(path)
    labels = data.voxels
    if labels.ndim == 4:
        labels = labels[..., 0]
    labels = np.rint(labels).astype(np.int64) if np.issubdtype(labels.dtype, np.floating) else labels.astype(np.int64)
    if labels.max() == 255 and set(np.unique(labels)) <= {0, 255}:
        labels = (labels > 0).astype(np.int64)
    if like is not None:
        if labels.shape[:3] != like.voxels.shape[:3]:
            raise InputError(f"{path}: labels of shape {labels.shape[:3]} do not match the image {like.voxels.shape[:3]}")
        if not data.geometry.is_close(like.geometry, tol=1e-3):
            raise InputError(f"{path}: labels do not share the image's geometry (spacing/origin/direction); "
                             "resample the labels onto the image first")
    return labels


def check_voxels(voxels, name="input"):
    """Refuse empty, NaN / infinite and constant voxel arrays with a clear message; return the array."""
    if voxels.size == 0:
        raise InputError(f"{name}: the image is empty (no voxels)")
    if np.issubdtype(voxels.dtype, np.floating) and not np.isfinite(voxels).all():
        count = int((~np.isfinite(voxels)).sum())
        raise InputError(f"{name}: {count} voxels are NaN or infinite; replace them (e.g. with the minimum) first")
    if voxels.min() == voxels.max():
        raise InputError(f"{name}: every voxel has the value {voxels.flat[0]}, so there is nothing to segment; "
                         "check that the right volume was loaded")
    return voxels


def _embed_direction_2d(direction):
    d = np.eye(3)
    d[:2, :2] = np.reshape(direction, (2, 2))
    return tuple(d.flatten().tolist())


def to_sitk(array, geometry, is_2d=False):
    """A SimpleITK image of ``array`` (D, H, W) with the given geometry (2D when ``is_2d``)."""
    if is_2d:
        image = sitk.GetImageFromArray(array[0])
        image.SetSpacing(geometry.spacing[:2])
        image.SetOrigin(geometry.origin[:2])
        image.SetDirection(tuple(np.reshape(geometry.direction, (3, 3))[:2, :2].flatten().tolist()))
        return image
    return geometry.apply_to(sitk.GetImageFromArray(array))


def slice_axis(geometry, axis):
    """The numpy axis (0, 1, 2 of a (k, j, i) array) whose voxel direction is closest to ``axis``'s normal."""
    if axis not in AXES:
        raise InputError(f"unknown axis {axis!r}: choose one of {', '.join(AXES)}")
    direction = np.reshape(geometry.direction, (3, 3))
    voxel_axis = int(np.argmax(np.abs(direction[_AXIS_NORMAL[axis], :])))  # i=0, j=1, k=2
    return 2 - voxel_axis


def image_slice_axis(image, axis):
    """The numpy axis an ImageData is sliced along: 0 for a 2D image, else the anatomical ``axis``."""
    return 0 if image.is_2d else slice_axis(image.geometry, axis)


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


@dataclass
class SegmentationResult:
    labels: np.ndarray  # uint8 (D, H, W), input geometry
    probability: np.ndarray  # float32 foreground probability
    guide: Optional[np.ndarray]  # float32 guide in [0, 1] resampled to the input grid, None if unguided
    geometry: Geometry
    is_2d: bool
    axis: int  # numpy axis the slices were taken along
    processed: np.ndarray  # bool per slice along ``axis``: which slices were segmented
    seconds: float
    cancelled: bool = False
    guide_stride: int = 1  # the guide ran on every n-th slice, interpolated between


def resolve_device(device="auto"):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError("a GPU was asked for but torch sees none; use --device cpu (or auto)")
    return torch.device("cuda" if device == "gpu" else device)


GUIDE_SAMPLES_PER_PATCH = 4


class VolumeSlicer:
    """Cuts a volume into model-ready slices along one axis and puts per-slice results back.

    Training, inference and refinement all go through it, so they see identical preprocessing:
    per-volume intensity normalisation, physical-aspect letterboxing to the model size.
    """

    def __init__(self, image, axis, config):
        self.image = image
        self.config = config
        if image.channels != config.in_channels and not (image.channels == 1 and config.in_channels == 3):
            raise InputError(f"the model expects {config.in_channels}-channel images, the input has {image.channels}")
        self.axis = image_slice_axis(image, axis)
        self.axis_name = axis
        self.count = image.voxels.shape[self.axis]
        self.shape = tuple(np.delete(image.voxels.shape[:3], self.axis))
        spacing = np.asarray(image.geometry.spacing[::-1], dtype=float)  # numpy axis order
        self.slice_spacing = float(spacing[self.axis])
        self.pixel_spacing = tuple(np.delete(spacing, self.axis))
        self.fitted = letterbox_size(self.shape, self.pixel_spacing, config.input_size)
        self.normalize = IntensityNormalizer(config.normalization, image.voxels)

    def auto_guide_stride(self, patch_size):
        """Slices between guide evaluations so the guide is sampled through the volume at least
        ``GUIDE_SAMPLES_PER_PATCH`` times per guide-patch width (in mm); 1 for 2D images."""
        if self.image.is_2d:
            return 1
        extent = max(n * s for n, s in zip(self.shape, self.pixel_spacing))
        patch_mm = patch_size * extent / self.config.input_size
        return max(1, int(patch_mm / GUIDE_SAMPLES_PER_PATCH / self.slice_spacing))

    def check_indices(self, indices):
        indices = np.arange(self.count) if indices is None else np.unique(np.asarray(list(indices), dtype=int))
        if indices.size and (indices.min() < 0 or indices.max() >= self.count):
            raise InputError(f"slice indices must be in 0..{self.count - 1} along the {self.axis_name} axis")
        return indices

    def take(self, voxels, index):
        """Slices ``index`` of a (D, H, W[, C]) array along the axis, as a (B, h, w[, C]) tensor."""
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.take(voxels, index, axis=self.axis), self.axis, 0)))

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
        """(B, C, S, S) model-size maps back to (B, C, h, w) at the slice's native shape."""
        return from_model_output(maps, self.fitted, self.shape)

    def put(self, volume, values, index):
        """Write (B, h, w) values into ``volume`` (D, H, W) at slices ``index``."""
        values = values.cpu().numpy() if values.dtype == torch.uint8 else values.float().cpu().numpy()
        np.moveaxis(volume, self.axis, 0)[index] = values.astype(volume.dtype, copy=False)


def resolve_guide_stride(model, slicer, guide_stride):
    """The guide stride to use: ``"auto"`` (see ``VolumeSlicer.auto_guide_stride``) or an int >= 1;
    always 1 for models without a TokenBook guide mask (unguided, SegDINO)."""
    if model.tokenbook is None:
        return 1
    stride = auto_or_count(guide_stride, "guide stride", " (1 = the guide on every slice)")
    return slicer.auto_guide_stride(model.guide.patch_size) if stride is None else stride


def auto_or_count(value, name, hint=""):
    """``None`` for ``"auto"``, else ``value`` as an int >= 1 (digit strings accepted); else a clear InputError."""
    if value == "auto":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be 'auto' or a whole number >= 1{hint}, got {value!r}")
    return value


class SparseGuide:
    """The guide computed on every ``stride``-th slice (and the last) and interpolated linearly between.

    The guide is a coarse map (one value per 16-pixel patch); sampling it more finely through the
    volume than across it adds cost, not information. Slices must be asked for in increasing order.
    """

    def __init__(self, model, slicer, stride, batch_size, device, todo):
        self.model, self.slicer, self.stride = model, slicer, stride
        self.batch_size, self.device = batch_size, device
        self.anchors = sorted(set(np.concatenate(self._bounds(todo)).tolist()))
        self.cache = {}

    def _bounds(self, index):
        low = (np.asarray(index) // self.stride) * self.stride
        return low, np.minimum(low + self.stride, self.slicer.count - 1)

    def __call__(self, index):
        """Guide probabilities (B, 1, h, w) at the token grid for slices ``index``."""
        low, high = self._bounds(index)
        for old in [k for k in self.cache if k < low.min()]:
            del self.cache[old]
        while not all(k in self.cache for k in (*low.tolist(), *high.tolist())):
            first = next(i for i, k in enumerate(self.anchors) if k >= low.min() and k not in self.cache)
            batch = self.anchors[first:first + self.batch_size]  # whole batches: the guide is slow on small ones
            self.cache.update(zip(batch, self.model.guide_probabilities(self.slicer.images(batch, self.device))))
        weight = torch.as_tensor((index - low) / np.maximum(high - low, 1), dtype=torch.float32, device=self.device)
        weight = weight[:, None, None, None]
        below = torch.stack([self.cache[k] for k in low.tolist()]).float()
        above = torch.stack([self.cache[k] for k in high.tolist()]).float()
        return (1 - weight) * below + weight * above


# Slices per batch for ``batch_size="auto"``. CPU: 4 keeps the largest activations of the 256-px
# networks under glibc's 32 MiB mmap cap, measured fastest (BENCHMARKS.md, section 2). CUDA: large
# batches keep the GPU busy; memory stays small (one batch of model-size slices).
AUTO_BATCH_SIZE = {"cpu": 4, "cuda": 64}


def resolve_batch_size(batch_size, device):
    """Slices per batch: ``"auto"`` (``AUTO_BATCH_SIZE`` for the device type) or an int >= 1."""
    count = auto_or_count(batch_size, "batch size")
    return AUTO_BATCH_SIZE.get(torch.device(device).type, AUTO_BATCH_SIZE["cpu"]) if count is None else count


def segment_volume(model, image, axis="axial", slices=None, batch_size="auto", device="auto",
                   progress=None, cancel=None, guide_stride="auto"):
    """Segment ``image`` (ImageData) slice by slice with ``model`` (GuiDINOModel).

    ``slices``: indices along the chosen axis to segment (None = all); the others stay 0 and
    ``processed`` is False there. ``progress(done, total)`` is called after each batch;
    ``cancel`` (a ``threading.Event``) stops between batches, keeping what was done.
    ``guide_stride``: run the guide on every n-th slice and interpolate it between (``"auto"``:
    from the slice spacing, see ``VolumeSlicer.auto_guide_stride``); 1 runs it on every slice.
    ``batch_size``: slices per batch (``"auto"``: see ``AUTO_BATCH_SIZE``). Memory stays bounded:
    only one batch of slices is on the device at a time.
    """
    start = time.perf_counter()
    device = resolve_device(device)
    batch_size = resolve_batch_size(batch_size, device)
    model.to(device, memory_format=torch.channels_last).eval()  # faster convolutions on CPU and GPU
    slicer = VolumeSlicer(image, axis, model.config)
    todo = slicer.check_indices(slices)
    stride = resolve_guide_stride(model, slicer, guide_stride)
    sparse_guide = SparseGuide(model, slicer, stride, batch_size, device, todo) if stride > 1 else None
    grid = image.voxels.shape[:3]
    labels = np.zeros(grid, np.uint8)
    probability = np.zeros(grid, np.float32)
    guide = np.zeros(grid, np.float32) if model.tokenbook is not None else None
    processed = np.zeros(slicer.count, bool)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    cancelled = False
    for first in range(0, len(todo), batch_size):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        index = todo[first:first + batch_size]
        with autocast:
            images = slicer.images(index, device).contiguous(memory_format=torch.channels_last)
            probs, guide_map = model.predict(images, None if sparse_guide is None else sparse_guide(index))
        probs = slicer.restore(probs)
        if probs.shape[1] == 1:
            foreground, predicted = probs[:, 0], (probs[:, 0] >= 0.5).to(torch.uint8)
        else:
            foreground, predicted = 1.0 - probs[:, 0], probs.argmax(1).to(torch.uint8)
        slicer.put(labels, predicted, index)
        slicer.put(probability, foreground, index)
        if guide is not None:
            slicer.put(guide, slicer.restore(guide_map)[:, 0], index)
        processed[index] = True
        if progress is not None:
            progress(int(processed.sum()), len(todo))
    return SegmentationResult(labels, probability, guide, image.geometry, image.is_2d, slicer.axis, processed,
                              time.perf_counter() - start, cancelled, stride)


def write_image(array, geometry, path, is_2d=False):
    """Write an engine array with the input's geometry (2D PNG/JPEG masks are scaled 0/255)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_2d and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8) if array.dtype != np.uint8 or array.max() <= 1 else array
    sitk.WriteImage(to_sitk(array, geometry, is_2d), str(path), True)


def segment_file(model, input_path, output_path, guide_output=None, probability_output=None, **options):
    """Read a volume or image, segment it (``segment_volume`` options) and write the results."""
    image = read_image(input_path)
    result = segment_volume(model, image, **options)
    write_image(result.labels, image.geometry, output_path, image.is_2d)
    if guide_output is not None:
        if result.guide is None:
            raise InputError("--guide-output: this model has no guide (an unguided baseline)")
        write_image(result.guide, image.geometry, guide_output, image.is_2d)
    if probability_output is not None:
        write_image(result.probability, image.geometry, probability_output, image.is_2d)
    return result
