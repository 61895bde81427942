"""Volumes and 2D images in and out of the engine, in their exact geometry (spacing, origin, direction)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .axes import slice_axis
from .errors import InputError
from .geometry import Geometry
from .outputs import write_all


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
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown format"
        raise InputError(f"{path}: cannot be read as an image ({reason}); use NRRD, NIfTI, MHA, DICOM, PNG or JPEG") from None
    return image_data_from_sitk(image, name=str(path), constant_ok=labels)


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


def check_voxels(voxels, name="input", constant_ok=False):
    """Refuse empty, NaN / infinite and (unless ``constant_ok``: labels) constant voxel arrays; return the array."""
    if voxels.size == 0:
        raise InputError(f"{name}: the image is empty (no voxels)")
    if np.issubdtype(voxels.dtype, np.floating) and not np.isfinite(voxels).all():
        count = int((~np.isfinite(voxels)).sum())
        raise InputError(f"{name}: {count} voxels are NaN or infinite; replace them (e.g. with the minimum) first")
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
