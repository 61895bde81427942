"""The headless harness keeps medical geometry exactly: file -> MRML -> numpy -> MRML -> file."""

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
from conftest import oblique_image

from guidino.geometry import Geometry


def _ijk_to_ras(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def test_oblique_volume_round_trip(headless_slicer, oblique_volume_file, tmp_path):
    original = sitk.ReadImage(str(oblique_volume_file))
    node = headless_slicer.load_volume(oblique_volume_file)

    # file -> MRML: voxels and geometry as SimpleITK reads them (LPS on disk, RAS in MRML)
    voxels = slicer.util.arrayFromVolume(node).copy()
    np.testing.assert_array_equal(voxels, sitk.GetArrayFromImage(original))
    np.testing.assert_allclose(_ijk_to_ras(node), Geometry.from_sitk(original).ijk_to_ras(), atol=1e-9)

    # numpy -> a new MRML node with that geometry
    copy = headless_slicer.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "copy")
    copy.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(_ijk_to_ras(node)))
    slicer.util.updateVolumeFromArray(copy, voxels)

    # MRML -> file -> SimpleITK
    out = tmp_path / "copy.nrrd"
    headless_slicer.save_volume(copy, out)
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))
    assert Geometry.from_sitk(back).is_close(Geometry.from_sitk(original), tol=1e-9)
    assert back.GetSpacing() != (1.0, 1.0, 1.0)
    assert not np.allclose(np.reshape(back.GetDirection(), (3, 3)), np.eye(3))


def test_geometry_matrix_conversion_is_exact():
    geometry = Geometry.from_sitk(oblique_image())
    assert Geometry.from_ijk_to_ras(geometry.ijk_to_ras()).is_close(geometry, tol=1e-12)
    image = geometry.apply_to(sitk.Image(3, 4, 5, sitk.sitkUInt8))
    assert Geometry.from_sitk(image).is_close(geometry, tol=1e-12)


def test_segmentation_saves_and_reloads_with_geometry(headless_slicer, oblique_volume_file, tmp_path):
    volume = headless_slicer.load_volume(oblique_volume_file)
    segmentation = headless_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("tumour", "tumour")
    labels = (slicer.util.arrayFromVolume(volume) > 700).astype(np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(labels, segmentation, segment_id, volume)

    path = tmp_path / "result.seg.nrrd"
    headless_slicer.save_segmentation(segmentation, path)
    reloaded = headless_slicer.load_segmentation(path)
    reloaded_id = reloaded.GetSegmentation().GetSegmentIdBySegmentName("tumour")
    back = slicer.util.arrayFromSegmentBinaryLabelmap(reloaded, reloaded_id, volume)
    np.testing.assert_array_equal(back, labels)

    on_disk = sitk.ReadImage(str(path))
    assert Geometry.from_sitk(on_disk).is_close(Geometry.from_sitk(sitk.ReadImage(str(oblique_volume_file))), tol=1e-6)
