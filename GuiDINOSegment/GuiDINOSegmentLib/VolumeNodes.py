"""MRML nodes <-> the engine's arrays: a volume node's voxels and geometry, a segmentation's grid. No torch.

Main thread only (MRML). The engine (``guidino``) never sees a node: it gets ``ImageData`` and arrays.
"""

import numpy as np
import slicer
import vtk

from guidino.axes import slice_axis
from guidino.errors import InputError
from guidino.geometry import Geometry
from guidino.imageio import ImageData, check_shape, check_voxels


def volumeGeometry(volumeNode):
    return Geometry.from_ijk_to_ras(ijkToRasNode(volumeNode))


def imageDataFromVolume(volumeNode, copy=False):
    """The engine's ImageData of a scalar volume node; InputError if unusable. Main thread only.

    The voxels are shared with the node unless ``copy`` (a job that computes while the scene changes).
    """
    if volumeNode is None:
        raise InputError("no input volume: select the scalar volume to segment")
    name = volumeNode.GetName()
    if volumeNode.IsA("vtkMRMLMultiVolumeNode") or _isSequenceItem(volumeNode):
        check_shape(name, 4, 1)
    image = volumeNode.GetImageData() if volumeNode.IsA("vtkMRMLVolumeNode") else None
    components = image.GetNumberOfScalarComponents() if image is not None else 1
    check_shape(name, 3, 3 if volumeNode.IsA("vtkMRMLTensorVolumeNode") else components)
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{name}: a {volumeNode.GetClassName()} is not a scalar volume; select a scalar volume")
    if image is None or 0 in image.GetDimensions():
        raise InputError(f"{name}: the volume has no voxels; load its image data first")
    voxels = check_voxels(slicer.util.arrayFromVolume(volumeNode), name)
    return ImageData(voxels.copy() if copy else voxels, volumeGeometry(volumeNode))


def _isSequenceItem(volumeNode):
    nodeId = volumeNode.GetID()  # None outside a scene: vtkMRMLSequenceBrowserNode.IsProxyNodeID would crash on it
    return bool(nodeId) and volumeNode.GetScene() is not None and any(
        browser.IsProxyNodeID(nodeId) for browser in slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode"))


def checkSegmentation(segmentationNode, volumeNode):
    """Refuse a segmentation that cannot hold ``volumeNode``'s voxels; bind an unbound one to its geometry."""
    if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
        raise InputError("no output segmentation: select or create a segmentation")
    names = f"{segmentationNode.GetName()} and {volumeNode.GetName()}"
    if segmentationNode.GetTransformNodeID() != volumeNode.GetTransformNodeID():
        raise InputError(f"{names} are under different transforms: put both under the same transform "
                         "(or none) in the Transforms or Data module")
    fits = fitsGrid(segmentationNode, volumeNode)
    if fits is None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        return
    if not fits:
        raise InputError(f"{segmentationNode.GetName()} is bound to another geometry than {volumeNode.GetName()}: "
                         "segment into a new segmentation, or set its geometry from this volume "
                         "(Segment Editor > Specify geometry)")
    role = segmentationNode.GetReferenceImageGeometryReferenceRole()
    if segmentationNode.GetNodeReference(role) is None:  # e.g. loaded from a file: remember the volume it fits
        segmentationNode.SetNodeReferenceID(role, volumeNode.GetID())


def fitsGrid(segmentationNode, volumeNode):
    """Whether the segmentation's reference geometry is ``volumeNode``'s grid (extent and IJK-to-RAS); None when
    the segmentation is bound to no geometry yet."""
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    serialized = segmentationNode.GetSegmentation().GetConversionParameter(parameter)
    if not serialized:
        return None
    image = volumeNode.GetImageData()
    if image is None:
        return False
    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, matrix, extent)
    return tuple(extent) == tuple(image.GetExtent()) and bool(np.allclose(
        slicer.util.arrayFromVTKMatrix(matrix), volumeGeometry(volumeNode).ijk_to_ras(), atol=1e-4))


def gridVolume(segmentationNode):
    """The volume whose grid a segmentation's edits are measured on: the volume it is bound to, else a visible
    scalar volume of its scene with its reference geometry (a segmentation loaded from a file); None if none."""
    node = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
    if node is not None:
        return node
    scene = segmentationNode.GetScene()
    if scene is None:
        return None
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for n in range(volumes.GetNumberOfItems()):
        volume = volumes.GetItemAsObject(n)
        if not volume.GetHideFromEditors() and volume.GetTransformNodeID() == segmentationNode.GetTransformNodeID() \
                and fitsGrid(segmentationNode, volume):
            return volume
    return None


def segmentMask(segmentationNode, segmentId, volumeNode):
    """The segment as a boolean array on ``volumeNode``'s grid, read from the segment's own labelmap when that lies
    on the volume's grid (the usual case: no temporary node, no resampling, only its extent is read); else
    through ``slicer.util.arrayFromSegmentBinaryLabelmap`` (which exports through a temporary labelmap node)."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    labelmap = segment.GetRepresentation(name) if segment is not None else None
    shape = tuple(volumeNode.GetImageData().GetDimensions()[::-1])
    shift = _gridShift(labelmap, volumeNode) if labelmap is not None and \
        segmentationNode.GetTransformNodeID() == volumeNode.GetTransformNodeID() else None
    if shift is None:
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0
    mask = np.zeros(shape, bool)
    extent = labelmap.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4] or labelmap.GetPointData() is None \
            or labelmap.GetPointData().GetScalars() is None:
        return mask  # an empty segment
    values = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentationNode, segmentId)
    low = [extent[2 * a] + shift[a] for a in range(3)]  # i, j, k on the volume's grid
    source, target = [], []
    for axis in (2, 1, 0):  # numpy order: k, j, i
        first, last = low[axis], low[axis] + values.shape[2 - axis]
        begin, end = max(first, 0), min(last, shape[2 - axis])
        if begin >= end:
            return mask  # the labelmap lies outside the volume
        source.append(slice(begin - first, end - first))
        target.append(slice(begin, end))
    mask[tuple(target)] = values[tuple(source)] == segment.GetLabelValue()
    return mask


def _gridShift(labelmap, volumeNode):
    """(di, dj, dk) when the labelmap's voxels are the volume's voxels shifted by whole indices; else None."""
    image, volume = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(image)
    volumeNode.GetIJKToRASMatrix(volume)
    image, volume = slicer.util.arrayFromVTKMatrix(image), slicer.util.arrayFromVTKMatrix(volume)
    if not np.allclose(image[:3, :3], volume[:3, :3], rtol=1e-6, atol=1e-6):
        return None
    shift = np.linalg.solve(volume[:3, :3], image[:3, 3] - volume[:3, 3])
    if not np.allclose(shift, np.round(shift), atol=1e-3):
        return None
    return [int(v) for v in np.round(shift)]


def sliceIndices(sliceRange):
    """None (all slices), an index, or an inclusive (first, last) range -> the engine's slice list."""
    if sliceRange is None:
        return None
    if isinstance(sliceRange, (int, np.integer)):
        return [int(sliceRange)]
    first, last = (int(i) for i in sliceRange)
    if first > last:
        raise InputError(f"slice range ({first}, {last}) is empty: give (first, last) with first <= last")
    return list(range(first, last + 1))


def matchGrid(node, like, fill, dtype):
    """Give ``node`` the grid and transform of ``like`` (refilling it with ``fill`` if they differed); its array."""
    matrix = vtk.vtkMatrix4x4()
    like.GetIJKToRASMatrix(matrix)
    shape = slicer.util.arrayFromVolume(like).shape
    if node.GetImageData() is None or slicer.util.arrayFromVolume(node).shape != shape \
            or not volumeGeometry(node).is_close(volumeGeometry(like), tol=1e-6):
        node.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(node, np.full(shape, fill, dtype))
    node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
    return slicer.util.arrayFromVolume(node)



def sliceCentre(volumeNode, arrayAxis, index):
    """The world position (RAS, the volume's parent transforms applied) of the centre of slice ``index`` along
    numpy axis ``arrayAxis`` of the volume's voxel array (k, j, i)."""
    dimensions = volumeNode.GetImageData().GetDimensions()
    ijk = [(n - 1) / 2.0 for n in dimensions]
    ijk[2 - int(arrayAxis)] = float(index)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    point = matrix.MultiplyPoint([*ijk, 1.0])[:3]
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:
        toWorld = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(toWorld)
        point = toWorld.TransformPoint(point)
    return tuple(float(v) for v in point)


# -- a volume's grid in world coordinates, and labelmaps on it (the widgets' views and previews) -----
def _worldFromLocalNode(node):
    """4x4 numpy matrix from the node's local coordinates to world RAS (its parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(node.GetParentTransformNode(), None, matrix):
        raise ValueError(f"{node.GetName()} is under a non-linear transform: harden the transform first "
                         "(Data module: right-click the transform > Harden transform).")
    return slicer.util.arrayFromVTKMatrix(matrix)


def ijkToRasNode(volumeNode):
    """4x4 numpy matrix from the volume's voxel IJK to its own RAS (before its parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def worldRasToIjkNode(volumeNode):
    """4x4 numpy matrix from world RAS (what slice views show) to the volume's voxel IJK."""
    return np.linalg.inv(_worldFromLocalNode(volumeNode) @ ijkToRasNode(volumeNode))


def numpyAxisNode(volumeNode, axis):
    """The numpy axis of the volume's (k, j, i) array that slicing along ``axis`` steps through."""
    return slice_axis(ijkToRasNode(volumeNode)[:3, :3], axis)


def sliceCountNode(volumeNode, axis):
    """Number of slices of the volume along ``axis``."""
    dims = volumeNode.GetImageData().GetDimensions()  # i, j, k
    return int(dims[::-1][numpyAxisNode(volumeNode, axis)])


def orientedImageFromArrayNode(array, volumeNode, segmentationNode=None):
    """A uint8 ``vtkOrientedImageData`` of a (k, j, i) array on the volume's grid.

    Its image-to-world matrix is in the segmentation's coordinates (the volume's and the
    segmentation's parent transforms are taken into account), as segment labelmaps are.
    """
    from vtk.util import numpy_support

    voxels = np.ascontiguousarray(array, dtype=np.uint8)
    extent = volumeNode.GetImageData().GetExtent()
    if voxels.shape != (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1):
        raise ValueError(f"An array of shape {voxels.shape} does not fit {volumeNode.GetName()}.")
    image = slicer.vtkOrientedImageData()
    image.SetExtent(extent)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels.ravel(), deep=True,
                                                                array_type=vtk.VTK_UNSIGNED_CHAR))
    toSegmentation = np.eye(4)
    if segmentationNode is not None:
        toSegmentation = np.linalg.inv(_worldFromLocalNode(segmentationNode)) @ _worldFromLocalNode(volumeNode)
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(toSegmentation @ ijkToRasNode(volumeNode)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, value)
    image.SetImageToWorldMatrix(matrix)
    return image


def arrayFromOrientedImage(image):
    """The (k, j, i) numpy copy of a ``vtkOrientedImageData``'s scalars."""
    from vtk.util import numpy_support

    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape).copy()


def resampleToReference(image, reference):
    """``image`` (a labelmap) on ``reference``'s grid, nearest neighbour; ``image`` itself when they match."""
    if reference is None or slicer.vtkOrientedImageDataResample.DoGeometriesMatch(image, reference):
        return image
    output = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, reference, output, False):
        raise RuntimeError("Could not resample the GuiDINO preview onto the segmentation's grid.")
    return output
