"""What a NIfTI header says about the voxel grid beyond what ITK reads: its qform and sform, and pixdim.

ITK (and so SimpleITK, Slicer and GuiDINO) places a NIfTI volume by its sform when that is set, else by its qform.
When a file sets both and they disagree, or gives a pixdim of 0, the volume may not lie where its maker meant:
``geometry_warnings`` says so, and reading goes on as ITK reads. No torch.
"""

import gzip
import struct
from pathlib import Path

import numpy as np

HEADER_BYTES = 348
TOLERANCE_MM = 1e-3


def geometry_warnings(path):
    """Warnings (one line each) about a NIfTI file's qform, sform and pixdim; [] for other files or clean headers."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return []
    try:
        with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as file:
            header = file.read(HEADER_BYTES)
    except (OSError, EOFError):
        return []
    if len(header) < HEADER_BYTES:
        return []
    order = "<" if struct.unpack_from("<i", header, 0)[0] == HEADER_BYTES else ">"
    pixdim = np.array(struct.unpack_from(order + "8f", header, 76), dtype=float)
    qform_code, sform_code = struct.unpack_from(order + "2h", header, 252)
    warnings = []
    if (pixdim[1:4] == 0).any():
        warnings.append(f"{path}: pixdim {tuple(pixdim[1:4].tolist())} holds a 0; the voxel spacing was taken from "
                        "the header's orientation matrices: check the volume's size in mm")
    if qform_code > 0 and sform_code > 0:
        gap = float(np.abs(_qform(header, order, pixdim) - _sform(header, order)).max())
        if gap > TOLERANCE_MM:
            warnings.append(f"{path}: its qform and sform place the volume up to {gap:.3g} mm apart; GuiDINO, like "
                            "ITK and Slicer, uses the sform: check that the volume lies where you expect")
    return warnings


def _sform(header, order):
    return np.array(struct.unpack_from(order + "12f", header, 280), dtype=float).reshape(3, 4)


def _qform(header, order, pixdim):
    """The qform as a 3x4 matrix (NIfTI-1: a unit quaternion, the pixdim scales, qfac and the offset)."""
    b, c, d, x, y, z = struct.unpack_from(order + "6f", header, 256)
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    scales = np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
    return np.column_stack([rotation * scales, [x, y, z]])
