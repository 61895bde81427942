"""Slice-by-slice segmentation of a whole volume (or one 2D image) in its exact geometry."""

import time
from contextlib import nullcontext

import numpy as np
import torch

from .arguments import auto_or_count
from .errors import InputError
from .imageio import read_image, write_images
from .jobs import SegmentationResult
from .runtime import resolve_device
from .slicing import VolumeSlicer


def resolve_guide_stride(model, slicer, guide_stride):
    """The guide stride to use: ``"auto"`` (see ``VolumeSlicer.auto_guide_stride``) or an int >= 1;
    always 1 for models without a TokenBook guide mask (unguided, SegDINO)."""
    if model.tokenbook is None:
        return 1
    stride = auto_or_count(guide_stride, "guide stride", " (1 = the guide on every slice)")
    return slicer.auto_guide_stride(model.guide.patch_size) if stride is None else stride


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


def segment_volume(model, image, axis: str = "axial", slices=None, batch_size="auto", device="auto",
                   progress=None, cancel=None, guide_stride="auto") -> SegmentationResult:
    """Segment ``image`` slice by slice with ``model``, in the image's exact geometry.

    Memory stays bounded: only one batch of slices is on the device at a time. A model with a ``region``
    (refined from a few corrected slices) runs only on its box and slice range; the other slices asked for are
    processed as empty.

    Args:
        model: a GuiDINOModel (``bundle.load_bundle``, a refine's result).
        image: the ImageData to segment (a volume, or one 2D image).
        axis: the anatomical axis to cut slices along (``"axial"``, ``"coronal"``, ``"sagittal"``).
        slices: indices along ``axis`` to segment (None: all); the others stay 0, ``processed`` False there.
        batch_size: slices per batch, or ``"auto"`` (``AUTO_BATCH_SIZE`` for the device).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: ``progress(done, total)`` after each batch.
        cancel: a ``threading.Event``; set, the run stops between batches, keeping what was done.
        guide_stride: run the guide on every n-th slice and interpolate it between (``"auto"``: from the slice
            spacing, see ``VolumeSlicer.auto_guide_stride``; 1: every slice).

    Returns:
        A SegmentationResult: labels, foreground probability and guide on the input grid, which slices were
        processed, and whether the run was cancelled.

    Raises:
        InputError: slice indices outside the volume, a bad batch size or stride, or a model whose probabilities
            are not finite (nothing is written then).
    """
    start = time.perf_counter()
    device = resolve_device(device)
    batch_size = resolve_batch_size(batch_size, device)
    model.to(device, memory_format=torch.channels_last).eval()  # faster convolutions on CPU and GPU
    slicer = VolumeSlicer(image, axis, model.config)
    asked = slicer.check_indices(slices)
    inside = slicer.inside(asked)  # a model with a region holds nothing outside its slices: those stay empty
    todo = asked[inside]
    stride = resolve_guide_stride(model, slicer, guide_stride)
    sparse_guide = SparseGuide(model, slicer, stride, batch_size, device, todo) if stride > 1 else None
    grid = image.voxels.shape[:3]
    labels = np.zeros(grid, np.uint8)
    probability = np.zeros(grid, np.float32)
    guide = np.zeros(grid, np.float32) if model.tokenbook is not None else None
    processed = np.zeros(slicer.count, bool)
    processed[asked[~inside]] = True
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
        if not torch.isfinite(probs).all():
            raise InputError("the model gave NaN or infinite probabilities (its weights or this volume's intensities "
                             "overflow 32-bit floats); nothing was written: check the volume, retrain or roll back")
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
            progress(int(processed[asked].sum()), len(asked))
    return SegmentationResult(labels, probability, guide, image.geometry, image.is_2d, slicer.axis, processed,
                              time.perf_counter() - start, cancelled, stride, model.config.region)


def segment_file(model, input_path, output_path, guide_output=None, probability_output=None, **options):
    """Read a volume or image, segment it (``segment_volume`` options) and write the results (all, or none)."""
    if guide_output is not None and model.tokenbook is None:
        raise InputError("--guide-output: this model has no guide mask (an unguided or SegDINO model)")
    image = read_image(input_path)
    result = segment_volume(model, image, **options)
    outputs = {output_path: result.labels, guide_output: result.guide, probability_output: result.probability}
    write_images({path: array for path, array in outputs.items() if path is not None}, image.geometry, image.is_2d)
    return result
