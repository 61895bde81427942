"""Which voxels a prediction may write: the one write rule of every run (no torch, no MRML).

A prediction covers the slices it processed; the user's slices (reviewed, or edited) are protected.
The Slicer Logic applies it to the panel's result and to the Segment Editor effect's preview alike.
"""

import numpy as np


def slice_mask(shape, axis, indices):
    """A boolean voxel mask of ``shape`` selecting slices ``indices`` along numpy axis ``axis``."""
    mask = np.zeros(shape, bool)
    np.moveaxis(mask, axis, 0)[np.asarray(list(indices), dtype=int)] = True
    return mask


def merge_prediction(current, predicted, writable):
    """The segment after a write (0/1 uint8): ``predicted`` (any label > 0) where ``writable``, else ``current``."""
    current, predicted = np.asarray(current), np.asarray(predicted)
    if current.shape != predicted.shape or np.shape(writable) != current.shape:
        raise ValueError(f"the prediction {predicted.shape}, the segment {current.shape} and the writable mask "
                         f"{np.shape(writable)} have different grids")
    return np.where(writable, predicted > 0, current > 0).astype(np.uint8)
