"""Volumes and 2D images in and out of the engine, in their exact geometry (spacing, origin, direction)."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .axes import slice_axis
from .errors import GeometryWarning, InputError
from .geometry import Geometry
from .niftiheader import geometry_warnings
from .outputs import write_all


VOLUME_FORMATS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")  # hold a 3D result with its geometry
IMAGE_FORMATS = VOLUME_FORMATS + (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # and 2D ones


def image_format(path):
    """The suffix of ``path`` among ``IMAGE_FORMATS`` (".nii.gz" whole), or None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in IMAGE_FORMATS if name.endswith(suffix)), None)


@dataclass
class ImageData:
    """A volume or 2D image as the engine sees it: (D, H, W) or (D, H, W, 3) voxels plus geometry."""

    voxels: np.ndarray
    geometry: Geometry
    is_2d: bool = False

    @property
    def channels(self):
        return 3 if self.voxels.ndim == 4 else 1


def read_image(path, labels=False):
    """Read any SimpleITK-readable volume or 2D image (a DICOM series folder too) as ImageData.

    ``labels``: a label image, which may hold one value only (a slice or an image without the target).
    """
    path = Path(path)
    try:
        exists, is_link, is_dir = path.exists(), path.is_symlink(), path.is_dir()
        size = path.stat().st_size if exists and not is_dir else None
    except OSError as error:  # a symbolic link loop, a folder that cannot be read
        raise InputError(f"{path}: cannot be opened ({error.strerror or error})") from None
    if not exists:
        raise InputError(f"{path}: a symbolic link that leads nowhere (a loop or a missing target)" if is_link
                         else f"{path}: no such file or folder")
    if size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); it was not written completely: give the image again")
    try:
        if is_dir:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"{path}: a folder with no DICOM series in it; give a volume file or a DICOM folder")
            image = sitk.ReadImage(files)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(_unreadable(path, str(error))) from None
    for message in geometry_warnings(path):
        warnings.warn(message, GeometryWarning, stacklevel=2)
    return image_data_from_sitk(image, name=str(path), constant_ok=labels)


def _unreadable(path, message):
    """One line on why SimpleITK could not read ``path``: a broken geometry in its header, a damaged file of a
    format GuiDINO reads, or a format it does not."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown format"
    if "determinant is 0" in message or "Bad direction" in message:
        return (f"{path}: the direction matrix in its header is degenerate (determinant 0); fix the header's "
                "orientation (space directions) and save it again")
    if "change spacing" in message:
        return (f"{path}: a voxel spacing of 0 or less in its header; fix the spacing (in Slicer: Volumes > Volume "
                "Information) and save it again")
    if "space vector" in message or "space directions" in message:
        return f"{path}: the space directions in its header cannot be read ({reason}); fix the header and save again"
    suffix = image_format(path)
    if suffix is not None:  # a format GuiDINO reads: the file itself is damaged
        return f"{path}: this {suffix} file cannot be read ({reason}); it may be truncated or damaged: save it again"
    return f"{path}: cannot be read as an image ({reason}); use NRRD, NIfTI, MHA, DICOM, PNG or JPEG"


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


def image_data_from_sitk(image, name="input", constant_ok=False):
    """Check and convert a SimpleITK image: 2D (grey or RGB) or 3D scalar (``constant_ok``: see check_voxels)."""
    dim, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    check_shape(name, dim, components)
    check_geometry(name, image.GetSpacing(), image.GetDirection())
    voxels = check_voxels(sitk.GetArrayFromImage(image), name, constant_ok)
    if dim == 2:
        if components == 4:
            voxels = voxels[..., :3]  # drop alpha
        voxels = voxels[None]
        geometry = Geometry(tuple(image.GetSpacing()) + (1.0,), tuple(image.GetOrigin()) + (0.0,),
                            _embed_direction_2d(image.GetDirection()))
    else:
        geometry = Geometry.from_sitk(image)
    return ImageData(voxels, geometry, is_2d=dim == 2)


def read_labels(path, like=None):
    """Read a label image as integers; 8-bit masks stored as 0/255 become 0/1."""
    data = read_image(path, labels=True)
    labels = data.voxels
    if labels.ndim == 4:
        labels = labels[..., 0]
    if np.issubdtype(labels.dtype, np.floating):
        fractional = labels[labels != np.rint(labels)]
        if fractional.size:
            raise InputError(f"{path}: {fractional.size} label voxels are not whole numbers (e.g. {fractional[0]:g}); "
                             "labels are whole numbers, 0 = background: threshold the mask (e.g. > 0.5) first")
    labels = labels.astype(np.int64)
    if labels.max() == 255 and set(np.unique(labels)) <= {0, 255}:
        labels = (labels > 0).astype(np.int64)
    if like is not None:
        if labels.shape[:3] != like.voxels.shape[:3]:
            raise InputError(f"{path}: labels of shape {labels.shape[:3]} do not match the image {like.voxels.shape[:3]}")
        if not data.geometry.is_close(like.geometry, tol=1e-3):
            raise InputError(f"{path}: labels do not share the image's geometry (spacing/origin/direction); "
                             "resample the labels onto the image first")
    return labels


def check_geometry(name, spacing, direction):
    """Refuse a voxel spacing that is not a positive finite number and a direction matrix that is not a rotation
    (degenerate or scaled): lengths, Dice in mm and the slicing axis would mean nothing."""
    spacing = np.asarray(spacing, dtype=float)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise InputError(f"{name}: voxel spacing {tuple(spacing.tolist())} must be positive numbers (mm); fix the "
                         "file's header (in Slicer: Volumes > Volume Information) and save it again")
    size = int(round(np.sqrt(len(direction))))
    matrix = np.asarray(direction, dtype=float).reshape(size, size)
    if not np.isfinite(matrix).all() or not np.allclose(matrix.T @ matrix, np.eye(size), atol=1e-3):
        raise InputError(f"{name}: its direction matrix {matrix.round(4).tolist()} is not a rotation (degenerate or "
                         "scaled axes); fix the file's orientation header and save it again")


FLOAT32_LIMIT = float(np.finfo(np.float32).max)  # the models compute in 32-bit floats


def check_voxels(voxels, name="input", constant_ok=False):
    """Refuse empty, NaN / infinite, beyond 32-bit float and (unless ``constant_ok``: labels) constant voxel
    arrays; return the array."""
    if voxels.size == 0:
        raise InputError(f"{name}: the image is empty (no voxels)")
    if np.issubdtype(voxels.dtype, np.floating):
        if not np.isfinite(voxels).all():
            count = int((~np.isfinite(voxels)).sum())
            raise InputError(f"{name}: {count} voxels are NaN or infinite; replace them (e.g. with the minimum) first")
        largest = float(np.abs(voxels).max())
        if largest > FLOAT32_LIMIT:
            raise InputError(f"{name}: values up to {largest:.3g} lie beyond 32-bit floats (±{FLOAT32_LIMIT:.3g}), "
                             "which GuiDINO computes in; rescale the volume (e.g. to its physical units) first")
    if not constant_ok and voxels.min() == voxels.max():
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


def image_slice_axis(image, axis):
    """The numpy axis an ImageData is sliced along: 0 for a 2D image, else the anatomical ``axis``."""
    return 0 if image.is_2d else slice_axis(image.geometry.direction, axis)


def check_image_outputs(outputs, input_path):
    """Refuse, before the work, image outputs whose format cannot hold the result: an unknown suffix, or a 2D
    format (PNG, JPEG...) for the result of a 3D input. ``outputs``: {flag: path or None}."""
    dimension = _dimension(input_path)
    for flag, path in outputs.items():
        if path is None:
            continue
        suffix = image_format(path)
        if suffix is None:
            raise InputError(f"{flag} {path}: GuiDINO writes {', '.join(IMAGE_FORMATS)} files; give one of these "
                             "suffixes")
        if dimension == 3 and suffix not in VOLUME_FORMATS:
            raise InputError(f"{flag} {path}: a {suffix} file holds one 2D image, and {Path(input_path).name} is a 3D "
                             f"volume; use {', '.join(VOLUME_FORMATS)}")


def _dimension(path):
    """The image's dimension from the file's header (a folder is a DICOM series: 3); None when the header cannot
    be read (the reading refuses it later, with its reason)."""
    path = Path(path)
    if path.is_dir():
        return 3
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return reader.GetDimension()
    except (RuntimeError, OSError):
        return None


def write_image(array, geometry, path, is_2d=False):
    """Write an engine array with the input's geometry (2D PNG/JPEG masks are scaled 0/255), atomically."""
    write_images({path: array}, geometry, is_2d)


def write_images(arrays, geometry, is_2d=False):
    """Write several arrays ({path: array}) with one geometry: all of them, or none (see ``outputs.write_all``)."""
    def writer(array, path):
        if is_2d and Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
            array = (np.clip(array, 0, 1) * 255).astype(np.uint8) if array.dtype != np.uint8 or array.max() <= 1 \
                else array
        image = to_sitk(array, geometry, is_2d)
        return lambda temporary: sitk.WriteImage(image, str(temporary), True)

    write_all({Path(path): writer(array, path) for path, array in arrays.items()})
