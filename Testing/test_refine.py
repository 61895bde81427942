"""Refine from corrections (engine side): clear refusals, versioned bundles, and a robot user that learns."""

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import synthetic_volume
from test_cli import guidino

from guidino.bundle import load_bundle, read_bundle_config
from guidino.errors import InputError
from guidino.imageio import image_data_from_sitk
from guidino.bundlefiles import list_versions
from guidino.training.protocols import simulate
from guidino.training.refine import interpolated_neighbours, next_version_path, refine_model, save_refined
from guidino.training.settings import REFINE_TIME_BUDGET, RefineSettings, TrainConfig

LIGHT = {"network": "unet", "input_size": 64, "widths": [8, 16, 32, 64, 128]}


@pytest.fixture
def volume():
    image, labels = synthetic_volume(shape=(12, 48, 40))
    return image_data_from_sitk(image), sitk.GetArrayFromImage(labels)


def _settings(**kw):
    return RefineSettings(**{"steps": 40, "time_budget": None, "device": "cpu", "new_model": dict(LIGHT), **kw})


def test_no_or_useless_corrections_are_refused(volume, tiny_guide_dir):
    image, labels = volume
    with pytest.raises(InputError, match="no corrected slices"):
        refine_model(image, labels, [], guide=str(tiny_guide_dir), settings=_settings())
    with pytest.raises(InputError, match="contain no target"):
        refine_model(image, labels, [0], guide=str(tiny_guide_dir), settings=_settings())  # slice 0 is background
    with pytest.raises(InputError, match="all foreground"):
        refine_model(image, np.ones_like(labels), [5], guide=str(tiny_guide_dir), settings=_settings())


def test_each_refine_is_a_new_version_with_its_parent(volume, tiny_guide_dir, tmp_path):
    image, labels = volume
    first = refine_model(image, labels, [3, 4, 6, 8, 9], guide=str(tiny_guide_dir), settings=_settings())
    # every corrected slice is trained on: none is kept aside for an early stop decided on one slice
    assert first.steps == _settings().steps and first.stopped != "early stopping"
    v1 = save_refined(first, next_version_path(tmp_path, "volume"), volume="volume.nrrd")
    assert v1.name == "volume-v001"

    parent_state = {k: v.clone() for k, v in first.model.learned_state_dict().items()}
    second = refine_model(image, labels, [4, 6, 8, 10], model=load_bundle(v1),
                          settings=_settings(steps=10, interpolated_reach=1))
    v2 = save_refined(second, next_version_path(tmp_path, v1.name), parent=v1, volume="volume.nrrd")
    assert v2.name == "volume-v002"
    provenance = read_bundle_config(v2)["provenance"]
    assert provenance["parent"] == str(v1.resolve()) and provenance["slices"] == [4, 6, 8, 10]
    # the slices between the corrected ones were trained on too, labelled by interpolation, and recorded
    beside = interpolated_neighbours(labels, [4, 6, 8, 10], 0, image.geometry.spacing[::-1], 1)[0]
    assert beside and second.interpolated == beside == provenance["interpolated"]
    alone = refine_model(image, labels, [4, 6, 8, 10], model=load_bundle(v1), settings=_settings(steps=2))
    assert alone.interpolated == []  # off by default
    assert [v["path"] for v in list_versions(tmp_path)] == [v1, v2]
    # the parent model in memory and on disk is untouched by the second round
    for k, v in load_bundle(v1).learned_state_dict().items():
        assert np.array_equal(v.numpy(), parent_state[k].numpy())


def test_cancel_can_discard_or_keep(volume, tiny_guide_dir):
    image, labels = volume
    cancel = threading.Event()
    cancel.set()
    kept = refine_model(image, labels, [5, 6], guide=str(tiny_guide_dir), settings=_settings(), cancel=cancel)
    assert kept.stopped == "cancelled" and kept.model is not None and kept.steps == 0
    dropped = refine_model(image, labels, [5, 6], guide=str(tiny_guide_dir),
                           settings=_settings(keep_on_cancel=False), cancel=cancel)
    assert dropped.model is None


def two_structures(shape=(14, 48, 40), seed=0):
    """A large bright disc in the first slices, a smaller, dimmer square in the last: one slice cannot teach both."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    disc = (k >= 1) & (k <= 6) & (((j - 24) / 14.0) ** 2 + ((i - 20) / 12.0) ** 2 <= 1)
    square = (k >= 8) & (k <= 12) & (np.abs(j - 20) <= 6) & (np.abs(i - 24) <= 6)
    voxels = (200 + 600 * disc + 250 * square + rng.normal(0, 30, shape)).astype(np.int16)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image_data_from_sitk(image), (disc | square).astype(np.uint8)


def test_robot_user_improves_unreviewed_slices(tiny_guide_dir):
    image, labels = two_structures()
    summary = simulate(image, labels, rounds=5, guide=str(tiny_guide_dir), settings=_settings(steps=60),
                       device="cpu")
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5]
    assert len(rounds[-1]["corrected_slices"]) == 5
    first_pick = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    assert rounds[0]["corrected_slices"] == [first_pick]  # starts from the slice with the largest true area
    assert rounds[-1]["dice_unreviewed"] > rounds[0]["dice_unreviewed"] + 0.1, rounds
    assert all(r["refine_seconds"] > 0 and r["segment_seconds"] > 0 for r in rounds)
    assert summary["warm_up_seconds"] >= 0 and "monai.losses" in sys.modules  # MONAI imported before round 1


def test_a_refine_round_stops_at_its_time_budget(volume, tiny_guide_dir):
    assert RefineSettings().time_budget == REFINE_TIME_BUDGET == 20.0  # the default: a round stays interactive
    # one volume, one set of intensities: a round varies shapes only (guidino train keeps the full recipe)
    assert RefineSettings().train_config().photometric is False and TrainConfig().photometric is True
    image, labels = volume
    result = refine_model(image, labels, [4, 6], guide=str(tiny_guide_dir),
                          settings=_settings(steps=100_000, time_budget=1.0))
    assert result.stopped == "time budget" and 0 < result.steps < 100_000 and result.model is not None


def test_simulate_and_refine_commands(tmp_path, tiny_guide_dir):
    image, labels = synthetic_volume(shape=(10, 40, 32))
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    sitk.WriteImage(labels, str(tmp_path / "v-label.nrrd"))
    light = ["--size", 64, "--widths", "8,16,32,64,128", "--device", "cpu"]
    simulate = ["simulate", "--volume", tmp_path / "v.nrrd", "--label", tmp_path / "v-label.nrrd", "--guide",
                tiny_guide_dir, "--rounds", 2, "--steps", 10, "--json", tmp_path / "sim.json",
                "--save-rounds", tmp_path / "rounds", *light]
    run = guidino(*simulate)
    assert run.returncode == 0, run.stderr
    rounds = json.loads((tmp_path / "sim.json").read_text())["rounds"]
    assert [set(r) >= {"round", "corrected_slices", "dice_all", "dice_unreviewed", "refine_seconds",
                       "segment_seconds"} for r in rounds] == [True, True]
    truth = sitk.GetArrayFromImage(labels) > 0
    for r in rounds:  # each round's model labels and the segment as written, in the volume's geometry
        predicted, segment = (sitk.ReadImage(str(tmp_path / "rounds" / f"round-{r['round']}-{kind}.nrrd"))
                              for kind in ("prediction", "segment"))
        for saved in (predicted, segment):
            for read in ("GetSpacing", "GetOrigin", "GetDirection"):
                assert np.allclose(getattr(saved, read)(), getattr(image, read)(), atol=1e-6), read
        segment = sitk.GetArrayFromImage(segment)
        assert np.array_equal(segment[r["corrected_slices"]], truth[r["corrected_slices"]])
        assert abs(2 * (segment & truth).sum() / (segment.sum() + truth.sum()) - r["dice_all"]) < 1e-6
        assert not sitk.GetArrayFromImage(predicted)[r["corrected_slices"]].any()  # not segmented: corrected
    again = guidino(*simulate, "--overwrite")  # the JSON may be replaced; the saved rounds never are
    assert again.returncode == 1 and "--save-rounds" in again.stderr and "never replaced" in again.stderr
    run = guidino("refine", "--model", "none", "--volume", tmp_path / "v.nrrd", "--labels", tmp_path / "v-label.nrrd",
                  "--slices", "4,5", "--out", tmp_path / "refined", "--guide", tiny_guide_dir, "--steps", 5,
                  "--batch-size", 1, "--photometric", "--seed", 7, *light)
    assert run.returncode == 0, run.stderr
    provenance = read_bundle_config(tmp_path / "refined")["provenance"]
    assert provenance["slices"] == [4, 5]
    assert provenance["settings"]["batch_size"] == 1 and provenance["settings"]["photometric"] is True
    assert provenance["settings"]["seed"] == 7


def _save_versions(folder, guide_dir, count, queue):
    from guidino.bundle import build_model
    from guidino.model import ModelConfig
    from guidino.training.refine import RefineResult, save_version

    model = build_model(ModelConfig(**LIGHT), guide_dir)
    for _ in range(count):
        result = RefineResult(model, [1], 0, 0.0, "finished")
        queue.put(str(save_version(result, folder, "volume")))


def test_saves_at_once_take_distinct_version_numbers(tmp_path, tiny_guide_dir):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_save_versions, args=(tmp_path, str(tiny_guide_dir), 3, queue))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    saved = [queue.get(timeout=300) for _ in range(9)]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(set(saved)) == 9 and {Path(p).name for p in saved} == {f"volume-v{n:03d}" for n in range(1, 10)}
    assert [v["path"].name for v in list_versions(tmp_path)] and not list(tmp_path.glob(".*"))


def test_what_a_killed_save_left_is_no_version_and_is_cleaned_up(tmp_path, tiny_guide_dir):
    import shutil
    import subprocess

    from guidino.bundle import build_model, save_bundle
    from guidino.model import ModelConfig

    model = build_model(ModelConfig(**LIGHT), str(tiny_guide_dir))
    first = save_bundle(model, tmp_path / "volume-v001")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs
    leftover = tmp_path / f".partial-{dead.pid}-volume-v002"
    shutil.copytree(first, leftover)  # a save killed just before its rename
    assert [v["path"] for v in list_versions(tmp_path)] == [first]
    save_bundle(model, tmp_path / "volume-v002")
    assert not leftover.exists() and [v["path"].name for v in list_versions(tmp_path)] == ["volume-v001", "volume-v002"]


def test_the_slices_beside_the_corrections_are_labelled_where_the_interpolated_shape_is_sure():
    """The neighbours trained on besides the corrected slices lie within the reach of one and strictly between two
    that hold the structure (nothing bounds the shape beyond the first or the last), and what is known of them is
    the interpolated shape deeper inside than the write's tolerance there: a core of it, nothing outside it."""
    from guidino.fusion import contour_tolerance
    from guidino.interpolation import interpolate_shape

    labels = np.zeros((16, 20, 24), np.uint8)
    labels[2, 5:11, 6:14] = 1
    labels[6, 4:12, 8:18] = 1
    labels[12, 6:9, 10:13] = 1
    spacing = (2.0, 0.8, 0.8)
    indices, shape = interpolated_neighbours(labels, [12, 2, 6], 0, spacing, reach=1)
    assert indices == [3, 5, 7]  # not 11: next to slice 12's 3 x 3 pixels (2.4 mm) nothing lies 2 mm inside
    interpolated = interpolate_shape(labels, [2, 6, 12], 0, spacing, extrapolate=False)
    for k in indices:  # one slice (2 mm) from a corrected slice: 1 + 0.5 * 2 = 2 mm deep
        assert contour_tolerance(2.0) == 2.0
        assert np.array_equal(shape[k], interpolated.distance[k] < -2.0)
        assert shape[k].sum() < interpolated.mask()[k].sum()  # a core: the contour's band is not known
    assert all(shape[k].any() for k in (3, 5, 7))
    assert not shape[11].any()
    assert not shape[[0, 1, 13, 14, 15]].any()
    assert interpolated_neighbours(labels, [2, 6, 12], 0, spacing, reach=2)[0] == [3, 5, 7]  # 4, 8, 10: no core
    # thinner slices (1 mm): further neighbours hold a core, but not slice 9, 3 mm from both 6 and 12 (2.5 mm deep)
    assert interpolated_neighbours(labels, [2, 6, 12], 0, (1.0, 0.8, 0.8), reach=3)[0] == [3, 4, 5, 7, 8, 10, 11]
    assert interpolated_neighbours(labels, [2, 6, 12], 0, spacing, reach=0) == ([], None)  # the rule off
    assert interpolated_neighbours(labels, [6], 0, spacing, reach=1) == ([], None)  # one slice bounds nothing
    assert interpolated_neighbours(labels, [5, 6], 0, spacing, reach=1)[0] == []  # adjacent: nothing between
    # a corrected slice without the structure bounds no neighbour: the taper toward it is a guess, not evidence
    assert interpolated_neighbours(labels, [2, 6, 12, 14], 0, spacing, reach=1)[0] == [3, 5, 7]
    assert interpolated_neighbours(labels, [0, 2, 6], 0, spacing, reach=1)[0] == [3, 5]
    assert interpolated_neighbours(labels, [0, 6, 9], 0, spacing, reach=1) == ([], None)
    # along another array axis: the same slices, moved
    moved, _ = interpolated_neighbours(np.moveaxis(labels, 0, 2), [2, 6, 12], 2, spacing[1:] + spacing[:1], reach=1)
    assert moved == [3, 5, 7]

