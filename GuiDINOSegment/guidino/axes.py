"""Slicing directions and which voxel axis each one steps through: the one rule, without torch.

Arrays are indexed (k, j, i) = (slice, row, column), as SimpleITK's and Slicer's arrays are. A
volume is cut along the voxel axis whose direction is closest to the anatomical axis's normal
(axial slices are stacked along S, coronal along A/P, sagittal along L/R), whatever the volume's
orientation on disk.
"""

import numpy as np

from .errors import InputError

AXES = ("axial", "coronal", "sagittal")
# The patient axis each slicing direction is normal to, as a component index: the same in LPS and RAS
# (the two differ only in the signs of L/R and A/P).
AXIS_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}


def check_axis(axis):
    """``axis`` when it is one of ``AXES``; a clear error otherwise."""
    if axis not in AXES:
        raise InputError(f"unknown axis {axis!r}: choose one of {', '.join(AXES)}")
    return axis


def slice_axis(voxel_axes, axis):
    """The numpy axis (0, 1, 2 of a (k, j, i) array) that slicing along ``axis`` steps through.

    ``voxel_axes``: a 3x3 matrix whose columns are the i, j, k voxel axes in patient space (LPS or
    RAS, scaled by the spacing or not): a direction matrix, or the upper 3x3 of an IJK-to-RAS matrix.
    """
    columns = np.asarray(voxel_axes, dtype=float).reshape(3, 3)
    directions = columns / np.linalg.norm(columns, axis=0)
    return 2 - int(np.argmax(np.abs(directions[AXIS_NORMAL[check_axis(axis)], :])))


def numpy_axes(voxel_axes):
    """{axis name: the numpy axis slicing along it steps through} for every anatomical axis."""
    return {axis: slice_axis(voxel_axes, axis) for axis in AXES}
