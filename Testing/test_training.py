"""Training learns for real, keeps the guide frozen, caches guide tokens, cancels and resumes."""

import threading

import pytest
import torch
from conftest import SHARED_DATA, synthetic_slices

from guidino.bundle import build_model
from guidino.model import ModelConfig
from guidino.training.datasets import SliceSet, load_image_folder
from guidino.training.settings import TrainConfig
from guidino.training.trainer import compute_guide_features, train, validation_dice


SMALL = [8, 16, 32, 64, 128]  # light widths keep CPU tests fast


def _sets():
    images, labels = synthetic_slices(count=12, size=64)
    data = SliceSet(images.half(), labels, [f"disc{i}" for i in range(12)])
    return data.subset(range(8)), data.subset(range(8, 12))


def test_guided_training_learns_and_keeps_the_guide_frozen(tiny_guide):
    train_set, val_set = _sets()
    torch.manual_seed(0)
    model = build_model(ModelConfig(network="unet", input_size=64, widths=SMALL), tiny_guide)
    frozen = {k: v.clone() for k, v in model.guide.state_dict().items()}
    result = train(model, train_set, val_set, TrainConfig(steps=120, batch_size=4, lr=2e-3, device="cpu",
                                                          validate_every=40))
    assert validation_dice(model, train_set, torch.device("cpu")) > 0.9
    assert result.best_val_dice > 0.85 and result.stopped == "finished" and result.steps == 120
    assert [h["step"] for h in result.history] == [40, 80, 120]
    for k, v in model.guide.state_dict().items():
        assert torch.equal(v, frozen[k]), f"guide weight {k} changed"
    assert not model.guide.backbone.training


def test_cached_guide_features_match_the_guide(tiny_guide):
    train_set, _ = _sets()
    model = build_model(ModelConfig(network="wnet", input_size=64), tiny_guide).eval()
    images = train_set.images[:3].float()
    cached = compute_guide_features(model, images, torch.device("cpu"))
    assert cached.dtype == torch.float16
    with torch.no_grad():
        direct = model(images).logits
        from_cache = model(images, cached[:3].float()).logits
    torch.testing.assert_close(from_cache, direct, atol=2e-2, rtol=0)


def test_cancel_keeps_the_best_weights(tiny_guide):
    train_set, val_set = _sets()
    model = build_model(ModelConfig(network="unet", input_size=64, widths=SMALL), tiny_guide)
    cancel, seen = threading.Event(), []

    def progress(entry):
        seen.append(entry["step"])
        cancel.set()

    result = train(model, train_set, val_set, TrainConfig(steps=50, batch_size=4, device="cpu", validate_every=5),
                   progress=progress, cancel=cancel)
    assert result.stopped == "cancelled" and result.steps == 5 and seen == [5]
    assert validation_dice(model, val_set, torch.device("cpu")) == pytest.approx(result.best_val_dice)


def _curve(result):
    return [(h["step"], h["loss"], h["val_dice"]) for h in result.history]


def test_resume_ends_where_the_uninterrupted_run_ends(tmp_path):
    train_set, val_set = _sets()
    config = TrainConfig(steps=20, batch_size=3, device="cpu", validate_every=5)  # 8 slices: batches straddle epochs

    def fresh():
        torch.manual_seed(0)
        return build_model(ModelConfig(network="unet", input_size=64, guided=False, widths=SMALL))

    whole_model = fresh()
    whole = train(whole_model, train_set, val_set, config)
    checkpoint = tmp_path / "train.ckpt"
    cancel = threading.Event()
    first = train(fresh(), train_set, val_set, config, progress=lambda e: e["step"] >= 10 and cancel.set(),
                  cancel=cancel, checkpoint=checkpoint)
    assert first.steps == 10 and checkpoint.exists()
    resumed_model = fresh()
    torch.manual_seed(123)  # whatever the caller's generators hold: the checkpoint restores them
    resumed = train(resumed_model, train_set, val_set, config, checkpoint=checkpoint, resume=True)
    assert resumed.steps == 20 and [h["step"] for h in resumed.history] == [5, 10, 15, 20]
    assert _curve(resumed) == _curve(whole)
    for key, value in whole_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_resume_refuses_a_missing_corrupt_or_foreign_checkpoint(tmp_path):
    from guidino.errors import InputError

    train_set, val_set = _sets()
    model = build_model(ModelConfig(network="unet", input_size=64, guided=False, widths=SMALL))
    config = TrainConfig(steps=4, batch_size=4, device="cpu", validate_every=2)
    with pytest.raises(InputError, match="no checkpoint at .*missing.ckpt"):
        train(model, train_set, val_set, config, checkpoint=tmp_path / "missing.ckpt", resume=True)
    with pytest.raises(InputError, match="needs --checkpoint"):
        train(model, train_set, val_set, config, resume=True)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(InputError, match="corrupt.ckpt cannot be read"):
        train(model, train_set, val_set, config, checkpoint=corrupt, resume=True)
    checkpoint = tmp_path / "train.ckpt"
    train(model, train_set, val_set, config, checkpoint=checkpoint)
    with pytest.raises(InputError, match="another training"):
        train(model, train_set, val_set, TrainConfig(steps=6, batch_size=4, device="cpu", validate_every=2),
              checkpoint=checkpoint, resume=True)
    assert not list(tmp_path.glob(".*partial*"))  # no half-written checkpoint left behind


def test_one_seed_fixes_the_whole_training(disc_dataset, tmp_path):
    from guidino.bundle import load_bundle
    from guidino.training.trainer import train_on_folder

    options = dict(network="unet", guide="none", size=64, widths=SMALL, steps=6, device="cpu", seed=3)
    runs = []
    for name in ("a", "b"):
        torch.manual_seed(len(name) * 1000 + ord(name))  # other global state before each run
        bundle, result = train_on_folder(disc_dataset, tmp_path / name, **options)
        runs.append((load_bundle(bundle), result))
    (first, a), (second, b) = runs
    assert _curve(a) == _curve(b)
    for key, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key], value, rtol=0, atol=0, msg=key)
    other, _ = train_on_folder(disc_dataset, tmp_path / "c", **{**options, "seed": 4})
    assert any(not torch.equal(v, load_bundle(other).state_dict()[k]) for k, v in first.state_dict().items())


def test_time_budget_stops_training_after_a_validated_step():
    train_set, val_set = _sets()
    model = build_model(ModelConfig(network="unet", input_size=64, guided=False, widths=SMALL))
    result = train(model, train_set, val_set, TrainConfig(steps=100_000, batch_size=4, device="cpu",
                                                          validate_every=50_000, time_budget=1.0))
    assert result.stopped == "time budget" and 0 < result.steps < 100_000 and result.seconds >= 1.0
    assert [h["step"] for h in result.history] == [result.steps]  # the steps since the last validation count
    assert validation_dice(model, val_set, torch.device("cpu")) == pytest.approx(result.best_val_dice)
    assert result.history[-1]["lr_factor"] < 0.05  # the schedule followed the clock: it ends annealed


def test_the_clock_stops_nothing_before_min_steps():
    train_set, _ = _sets()
    model = build_model(ModelConfig(network="unet", input_size=64, guided=False, widths=SMALL))
    result = train(model, train_set, None, TrainConfig(steps=1000, batch_size=4, device="cpu", time_budget=0.001,
                                                       min_steps=7))
    assert result.stopped == "time budget" and result.steps == 7  # a slow machine takes longer, never less
    assert result.history[-1]["lr_factor"] < 0.05  # and the schedule ran to the floor: it ends annealed
    result = train(model, train_set, None, TrainConfig(steps=1000, batch_size=4, device="cpu", time_budget=0.001))
    assert result.steps == 1  # without a floor the clock ends it at the first step


def test_real_kvasir_images_are_learned(tiny_guide):
    if not (SHARED_DATA / "kvasir-seg").is_dir():
        pytest.skip(f"Kvasir-SEG not found in {SHARED_DATA}")
    config = ModelConfig(network="unet", in_channels=3, input_size=64, widths=SMALL,
                         normalization={"mode": "fixed", "low": 0, "high": 255})
    data = load_image_folder(SHARED_DATA / "kvasir-seg", "train", config, max_images=6)
    torch.manual_seed(0)
    model = build_model(config, tiny_guide)
    train(model, data, None, TrainConfig(steps=200, batch_size=6, lr=2e-3, augment=False, device="cpu"))
    assert validation_dice(model, data, torch.device("cpu")) > 0.9


def test_labels_become_classes():
    import numpy as np

    from guidino.errors import InputError
    from guidino.training.datasets import class_labels

    labels = np.array([[0, 1, 7], [8, 9, 0]])
    np.testing.assert_array_equal(class_labels(labels, 2), [[0, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(class_labels(np.array([0, 1, 2]), 3), [0, 1, 2])
    with pytest.raises(InputError, match="relabel them 0..2"):
        class_labels(labels, 3)


def test_multiclass_training_learns(tiny_guide):
    images, discs = synthetic_slices(count=8, size=64)
    labels = discs.clone()
    labels[:, :, 32:] *= 2  # the right half of each disc is class 2
    data = SliceSet(images.half(), labels, [str(i) for i in range(8)])
    torch.manual_seed(0)
    model = build_model(ModelConfig(network="wnet", input_size=64, num_classes=3, widths=SMALL), tiny_guide)
    train(model, data, None, TrainConfig(steps=120, batch_size=4, lr=3e-3, augment=False, device="cpu"))
    assert model.predict(data.images.float())[0].shape[1] == 3
    assert validation_dice(model, data, torch.device("cpu")) > 0.8


def test_train_on_a_volume_folder_with_classes(tmp_path):
    import numpy as np
    import SimpleITK as sitk
    from conftest import synthetic_volume

    from guidino.bundle import load_bundle
    from guidino.errors import InputError
    from guidino.training.trainer import train_on_folder

    data = tmp_path / "data"  # the bundles go beside the dataset, never into it
    data.mkdir()
    image, labels = synthetic_volume(shape=(8, 48, 40))
    classes = sitk.GetArrayFromImage(labels).astype(np.uint8)
    classes[:, :, 20:] *= 2  # right half of the blob is class 2
    label_image = sitk.GetImageFromArray(classes)
    label_image.CopyInformation(image)
    sitk.WriteImage(image, str(data / "case_image.nrrd"))
    sitk.WriteImage(label_image, str(data / "case_label.nrrd"))
    options = dict(network="unet", guide="none", size=64, widths=SMALL, steps=3, device="cpu")
    bundle, result = train_on_folder(data, tmp_path / "three", classes=3, **options)
    model = load_bundle(bundle)
    assert model.config.num_classes == 3 and result.steps == 3
    assert model.predict(torch.rand(1, 1, 64, 64))[0].shape[1] == 3
    binary, _ = train_on_folder(data, tmp_path / "binary", **options)  # default: any label > 0 is the target
    assert load_bundle(binary).config.num_classes == 2

    classes[classes == 2] = 7  # a label value a 3-class model cannot hold
    label_image = sitk.GetImageFromArray(classes)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(data / "case_label.nrrd"))
    with pytest.raises(InputError, match="relabel them 0..2"):
        train_on_folder(data, tmp_path / "bad", classes=3, **options)


def test_early_stopping_waits_until_the_model_has_found_something(tiny_guide):
    """A model that starts quiet (predicting nothing) scores 0 on the held-out slices at first; those validations
    are not 'no improvement': stopping then would keep a model that never began."""
    train_set, val_set = _sets()
    torch.manual_seed(0)
    model = build_model(ModelConfig(network="unet", input_size=64, widths=SMALL), tiny_guide)
    model.set_output_prior(0.01)
    result = train(model, train_set, val_set, TrainConfig(steps=80, batch_size=4, lr=5e-3, device="cpu",
                                                          validate_every=2, patience=2))
    zeros = [h["step"] for h in result.history if h["val_dice"] == 0]
    assert zeros and len(zeros) >= 3  # it scored nothing for several validations and went on
    assert result.best_val_dice > 0


def test_an_epoch_draws_each_slice_as_often_as_its_draws_say(tiny_guide):
    """``SliceSet.draws`` weighs slices by how often training draws them: the same discs labelled twice, once
    right and once empty, teach whichever copy is drawn."""
    images, labels = synthetic_slices(count=4, size=64)
    right = SliceSet(images.half(), labels, [f"disc{i}" for i in range(4)])
    empty = SliceSet(images.half(), torch.zeros_like(labels), [f"empty{i}" for i in range(4)])
    both = SliceSet.concat([right, empty])
    assert both.draws is None and list(both.epoch()) == list(range(8))
    weighted = SliceSet.concat([SliceSet(right.images, right.labels, right.names, [3, 1, 0, 2]), empty])
    assert weighted.draws == [3, 1, 0, 2, 1, 1, 1, 1]
    assert list(weighted.epoch()) == [0, 0, 0, 1, 3, 3, 4, 5, 6, 7]
    assert weighted.subset([3, 4]).draws == [2, 1] and both.subset([0]).draws is None
    scores = []
    for draws in ([1] * 4 + [0] * 4, [0] * 4 + [1] * 4):
        both.draws = draws
        torch.manual_seed(0)
        model = build_model(ModelConfig(network="unet", input_size=64, widths=SMALL), tiny_guide)
        train(model, both, None, TrainConfig(steps=60, batch_size=4, lr=3e-3, augment=False, device="cpu"))
        scores.append(validation_dice(model, right, torch.device("cpu")))
    assert scores[0] > 0.8 > 0.2 > scores[1], scores
