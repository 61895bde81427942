"""Slice-by-slice inference: exact geometry, three axes, bounded work, cancel, and clear errors on bad input."""

import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import oblique_image, synthetic_volume

from guidino.bundle import build_model
from guidino.geometry import Geometry
from guidino.model import ModelConfig
from guidino.axes import slice_axis
from guidino.errors import InputError
from guidino.imageio import image_data_from_sitk, read_image
from guidino.inference import resolve_batch_size, segment_file, segment_volume
from guidino.slicing import VolumeSlicer


@pytest.fixture
def model(tiny_guide):
    torch.manual_seed(0)
    return build_model(ModelConfig(network="unet", input_size=64), tiny_guide).eval()


@pytest.fixture
def volume_file(tmp_path):
    image, labels = synthetic_volume()
    path = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def test_outputs_keep_the_input_geometry_exactly(model, volume_file, tmp_path):
    outputs = {name: tmp_path / f"{name}.nrrd" for name in ("labels", "guide", "probability")}
    segment_file(model, volume_file, outputs["labels"], guide_output=outputs["guide"],
                 probability_output=outputs["probability"], device="cpu")
    source = sitk.ReadImage(str(volume_file))
    for name, path in outputs.items():
        written = sitk.ReadImage(str(path))
        assert written.GetSize() == source.GetSize(), name
        assert Geometry.from_sitk(written).is_close(Geometry.from_sitk(source), tol=1e-9), name
    guide = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["guide"])))
    assert 0 <= guide.min() and guide.max() <= 1 and guide.std() > 0


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_every_axis_segments_every_slice(model, volume_file, axis):
    image = read_image(volume_file)
    result = segment_volume(model, image, axis=axis, batch_size=5, device="cpu")
    assert result.labels.shape == image.voxels.shape
    assert result.processed.all() and len(result.processed) == image.voxels.shape[result.axis]
    # each slice's result is the model's prediction for that slice alone
    slicer = VolumeSlicer(image, axis, model.config)
    k = slicer.count // 2
    probs, _ = model.predict(slicer.images([k]))
    expected = slicer.restore(probs)[0, 0].numpy()
    np.testing.assert_allclose(np.take(result.probability, k, axis=result.axis), expected, atol=1e-5)


def test_axis_follows_anatomy_not_array_order():
    # voxel axis i points superior, j anterior-posterior, k left-right: axial slices are taken along i
    image = sitk.GetImageFromArray(np.arange(120, dtype=np.int16).reshape(6, 5, 4))
    image.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    geometry = image_data_from_sitk(image).geometry
    assert slice_axis(geometry.direction, "axial") == 2  # numpy axis of i
    assert slice_axis(geometry.direction, "sagittal") == 0  # numpy axis of k
    assert slice_axis(geometry.direction, "coronal") == 1
    with pytest.raises(InputError, match="unknown axis"):
        slice_axis(geometry.direction, "oblique")


def test_letterbox_keeps_physical_aspect(model):
    image = sitk.GetImageFromArray(np.arange(2400, dtype=np.int16).reshape(3, 40, 20))
    image.SetSpacing((2.0, 1.0, 1.0))  # 20 columns of 2 mm = 40 mm, 40 rows of 1 mm: square
    slicer = VolumeSlicer(image_data_from_sitk(image), "axial", model.config)
    assert slicer.fitted == (64, 64)


def test_selected_slices_only_and_cancel_keeps_processed(model, volume_file):
    image = read_image(volume_file)
    result = segment_volume(model, image, slices=[2, 5], device="cpu")
    assert result.processed.nonzero()[0].tolist() == [2, 5]
    untouched = [k for k in range(image.voxels.shape[0]) if k not in (2, 5)]
    assert not result.probability[untouched].any()

    cancel, calls = threading.Event(), []

    def progress(done, total):
        calls.append((done, total))
        cancel.set()

    result = segment_volume(model, image, batch_size=4, device="cpu", progress=progress, cancel=cancel)
    assert result.cancelled and calls == [(4, image.voxels.shape[0])]
    assert result.processed.sum() == 4 and result.probability[4:].max() == 0 and result.probability[:4].max() > 0


def test_2d_rgb_image(tmp_path, tiny_guide):
    model = build_model(ModelConfig(network="wnet", in_channels=3, input_size=64,
                                    normalization={"mode": "fixed", "low": 0, "high": 255}), tiny_guide)
    rgb = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    out = tmp_path / "mask.png"
    segment_file(model, path, out, device="cpu")
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == (70, 50) and mask.GetNumberOfComponentsPerPixel() == 1
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 255}


def test_bad_inputs_are_refused_clearly(tmp_path, model):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.nrrd")
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="cannot be read"):
        read_image(junk)
    with pytest.raises(InputError, match="4D"):
        image_data_from_sitk(sitk.Image([3, 3, 3, 2], sitk.sitkFloat32))
    with pytest.raises(InputError, match="vector volume"):
        image_data_from_sitk(sitk.Image([3, 3, 3], sitk.sitkVectorFloat32, 3))
    nan = sitk.GetArrayFromImage(oblique_image()).astype(np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        image_data_from_sitk(sitk.GetImageFromArray(nan))
    with pytest.raises(InputError, match="nothing to segment"):
        image_data_from_sitk(sitk.Image([4, 4, 4], sitk.sitkInt16))
    with pytest.raises(InputError, match="slice indices"):
        segment_volume(model, image_data_from_sitk(oblique_image()), slices=[99], device="cpu")
    rgb_model = build_model(ModelConfig(network="unet", in_channels=3, input_size=64, guided=False))
    grey = image_data_from_sitk(oblique_image())
    assert segment_volume(rgb_model, grey, device="cpu").processed.all()  # grey goes to 3 channels


def test_intensity_normalisation_modes():
    from guidino.slicing import IntensityNormalizer

    voxels = np.arange(-1000, 1001, dtype=np.int16)
    window = IntensityNormalizer({"mode": "window", "center": 40, "width": 400}, voxels)
    np.testing.assert_allclose(window(torch.tensor([-500, -160, 40, 240, 900])).numpy(), [0, 0, 0.5, 1, 1])
    robust = IntensityNormalizer({"mode": "percentile", "low": 1, "high": 99}, voxels)
    assert robust.low == pytest.approx(-980) and robust.high == pytest.approx(980)
    with pytest.raises(ValueError, match="unknown normalization"):
        IntensityNormalizer({"mode": "zscore"}, voxels)


def test_precomputed_guide_gives_the_same_prediction(model):
    images = torch.rand(3, 1, 64, 64)
    probs, guide = model.predict(images)
    gate = model.guide_probabilities(images)
    assert gate.shape == (3, 1, 4, 4)
    again, guide_again = model.predict(images, guide=gate)
    torch.testing.assert_close(again, probs)
    torch.testing.assert_close(guide_again, guide)


def _guide_slice(result, k):
    return np.take(result.guide, k, axis=result.axis)


def test_guide_stride_runs_the_guide_on_anchor_slices_and_interpolates_between(model, volume_file):
    image = read_image(volume_file)  # 12 axial slices
    every = segment_volume(model, image, batch_size=5, device="cpu", guide_stride=1)
    sparse = segment_volume(model, image, batch_size=5, device="cpu", guide_stride=4)
    assert every.guide_stride == 1 and sparse.guide_stride == 4
    for anchor in (0, 4, 8, 11):  # every 4th slice and the last one
        np.testing.assert_allclose(_guide_slice(sparse, anchor), _guide_slice(every, anchor), atol=1e-6)
        np.testing.assert_array_equal(np.take(sparse.labels, anchor, axis=sparse.axis),
                                      np.take(every.labels, anchor, axis=every.axis))
    for k, low, high, weight in ((2, 0, 4, 0.5), (5, 4, 8, 0.25), (10, 8, 11, 2 / 3)):
        expected = (1 - weight) * _guide_slice(every, low) + weight * _guide_slice(every, high)
        np.testing.assert_allclose(_guide_slice(sparse, k), expected, atol=1e-5)
    assert not np.allclose(_guide_slice(sparse, 2), _guide_slice(every, 2), atol=1e-4)  # really interpolated
    # a subset of slices needs only the anchors around it
    subset = segment_volume(model, image, slices=[6, 5], device="cpu", guide_stride=4)
    np.testing.assert_allclose(_guide_slice(subset, 5), _guide_slice(sparse, 5), atol=1e-6)
    assert subset.processed.nonzero()[0].tolist() == [5, 6]


def test_auto_guide_stride_follows_the_slice_spacing(model, tiny_guide):
    image = sitk.GetImageFromArray(np.arange(10 * 128 * 128, dtype=np.int32).reshape(10, 128, 128))
    image.SetSpacing((0.8, 0.8, 1.5))  # in plane 102.4 mm -> 64 px: a 16 px patch covers 25.6 mm
    slicer = VolumeSlicer(image_data_from_sitk(image), "axial", model.config)
    assert slicer.auto_guide_stride(16) == 4  # 25.6 mm / 4 samples per patch = 6.4 mm = 4 slices of 1.5 mm
    image.SetSpacing((0.8, 0.8, 5.0))
    assert VolumeSlicer(image_data_from_sitk(image), "axial", model.config).auto_guide_stride(16) == 1
    # across the slices the in-plane spacing is what counts: sagittal slices are 0.8 mm apart
    assert VolumeSlicer(image_data_from_sitk(image), "sagittal", model.config).auto_guide_stride(16) >= 2
    unguided = build_model(ModelConfig(network="unet", input_size=64, guided=False))
    assert segment_volume(unguided, image_data_from_sitk(image), device="cpu", guide_stride=3).guide_stride == 1


@pytest.mark.parametrize("bad", [0, -2, "0", "two", 2.5, True])
def test_bad_guide_stride_is_refused(model, volume_file, bad):
    with pytest.raises(InputError, match="guide stride must be 'auto' or a whole number"):
        segment_volume(model, read_image(volume_file), device="cpu", guide_stride=bad)


def test_multiclass_models_are_also_scored_per_class(tiny_guide, tmp_path):
    from guidino.evaluation import evaluate_pairs
    from guidino.metrics import case_metrics

    torch.manual_seed(0)
    model = build_model(ModelConfig(network="unet", input_size=64, num_classes=3), tiny_guide).eval()
    with torch.no_grad():  # predict class 1 everywhere: per-class scores that differ and catch mixed-up classes
        model.network.head.weight.zero_()
        model.network.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    image, blob = synthetic_volume()
    labels = sitk.GetArrayFromImage(blob).astype(np.uint8)
    labels[:, :, 20:] *= 2  # the right half of the blob is class 2
    written = sitk.GetImageFromArray(labels)
    written.CopyInformation(blob)
    pair = (tmp_path / "case_image.nrrd", tmp_path / "case_label.nrrd")
    sitk.WriteImage(image, str(pair[0]))
    sitk.WriteImage(written, str(pair[1]))
    summary = evaluate_pairs(model, [pair], device="cpu")
    pred = segment_volume(model, read_image(pair[0]), device="cpu").labels
    spacing = image.GetSpacing()[::-1]
    assert sorted(summary["classes"]) == ["1", "2"] and sorted(summary["cases"][0]["classes"]) == ["1", "2"]
    assert (pred == 1).all()
    for value in (1, 2):
        expected = case_metrics(pred == value, labels == value, spacing=spacing)
        assert summary["cases"][0]["classes"][str(value)] == expected
        assert summary["classes"][str(value)] == {"n": 1, **expected}
    assert 0 < summary["classes"]["1"]["dice"] < summary["dice"] < 1 and summary["classes"]["2"]["dice"] == 0
    assert summary["dice"] == case_metrics(pred > 0, labels > 0, spacing=spacing)["dice"]  # foreground as a whole
    binary = build_model(ModelConfig(network="unet", input_size=64), tiny_guide).eval()
    assert "classes" not in evaluate_pairs(binary, [pair], device="cpu")


def test_auto_batch_size_is_four_slices_on_the_cpu_and_gives_the_same_labels(model, volume_file):
    image = read_image(volume_file)
    done = []
    auto = segment_volume(model, image, device="cpu", progress=lambda n, total: done.append(n))
    count = image.voxels.shape[0]
    assert done == [*range(4, count, 4), count]
    one = segment_volume(model, image, device="cpu", batch_size=1)
    np.testing.assert_array_equal(auto.labels, one.labels)
    assert resolve_batch_size("auto", "cuda") == 64 and resolve_batch_size("12", "cpu") == 12


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, False])
def test_bad_batch_size_is_refused(model, volume_file, bad):
    with pytest.raises(InputError, match="batch size must be 'auto' or a whole number"):
        segment_volume(model, read_image(volume_file), device="cpu", batch_size=bad)


def test_evaluation_uses_the_guide_stride_it_is_given(model, tmp_path):
    from guidino.evaluation import evaluate_pairs

    image, labels = synthetic_volume()
    for volume in (image, labels):
        volume.SetSpacing((0.8, 0.8, 0.5))  # thin slices: "auto" resolves to a stride > 1
    pair = (tmp_path / "case_image.nrrd", tmp_path / "case_label.nrrd")
    sitk.WriteImage(image, str(pair[0]))
    sitk.WriteImage(labels, str(pair[1]))
    every = evaluate_pairs(model, [pair], device="cpu", guide_stride=1)
    sparse = evaluate_pairs(model, [pair], device="cpu", guide_stride=4)
    auto = evaluate_pairs(model, [pair], device="cpu")
    assert [every["guide_stride"], sparse["guide_stride"], auto["guide_stride"]] == [1, 4, "auto"]
    resolved = VolumeSlicer(read_image(pair[0]), "axial", model.config).auto_guide_stride(model.guide.patch_size)
    assert resolved > 1
    assert [r["cases"][0]["guide_stride"] for r in (every, sparse, auto)] == [1, 4, resolved]
    expected = segment_volume(model, read_image(pair[0]), device="cpu", guide_stride=4).labels > 0
    truth = sitk.GetArrayFromImage(labels) > 0
    dice = 2 * (expected & truth).sum() / (expected.sum() + truth.sum())
    assert sparse["dice"] == pytest.approx(dice, abs=1e-6)
