"""Bad input, as a hostile new user gives it: every case ends in a clear refusal (or, where the input is in
fact fine, in success), never in a traceback, and no file the user made changes.

The command line runs in-process (``guidino.cli.main``), as a subprocess would run it; the Logic cases use a
real headless MRML scene. ``GUIDINO_BAD_INPUT_REPORT=FILE`` writes the totals as JSON (RELIABILITY.md).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import synthetic_volume

from guidino.cli import main

TOTALS = {"cases": 0, "clear_refusals": 0, "accepted": 0, "tracebacks": 0, "user_files_changed": 0}


@pytest.fixture(scope="module")
def user(tmp_path_factory, tiny_guide_dir):
    """A user's folder: a volume, its labels, a 2D dataset, a model bundle and the guide it uses."""
    from conftest import synthetic_slices

    from guidino.bundle import build_model, save_bundle
    from guidino.model import ModelConfig

    root = tmp_path_factory.mktemp("user")
    image, labels = synthetic_volume(shape=(8, 40, 36))
    sitk.WriteImage(image, str(root / "volume.nrrd"))
    sitk.WriteImage(labels, str(root / "labels.nrrd"))
    empty = sitk.GetImageFromArray(np.zeros((8, 40, 36), np.uint8))
    empty.CopyInformation(labels)
    sitk.WriteImage(empty, str(root / "empty-labels.nrrd"))
    for split, count in (("train", 6), ("val", 2)):
        images, masks = synthetic_slices(count=count, size=48, seed=len(split))
        for folder in ("images", "masks"):
            (root / "data" / split / folder).mkdir(parents=True)
        for i in range(count):
            sitk.WriteImage(sitk.GetImageFromArray((images[i, 0].numpy() * 255).astype(np.uint8)),
                            str(root / "data" / split / "images" / f"c{i}.png"))
            mask = masks[i].numpy().astype(np.uint8) * 255
            if split == "train" and i == 0:
                mask[:] = 0  # an image without the target: a normal negative example
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / "data" / split / "masks" / f"c{i}.png"))
    model = build_model(ModelConfig(network="unet", input_size=64, widths=[8, 16, 32]), str(tiny_guide_dir))
    save_bundle(model, root / "bundle")
    (root / "zero.nrrd").write_bytes(b"")
    os.symlink(root / "loop-b.nrrd", root / "loop-a.nrrd")
    os.symlink(root / "loop-a.nrrd", root / "loop-b.nrrd")
    nan = sitk.GetImageFromArray(np.where(np.arange(8 * 40 * 36).reshape(8, 40, 36) == 5, np.nan, 1.0))
    sitk.WriteImage(nan, str(root / "nan.nrrd"))
    return root


def _checksums(*folders):
    sums = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def _cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse refuses arguments with exit status 2
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out + out.err


def _record(refused, changed):
    TOTALS["cases"] += 1
    TOTALS["clear_refusals" if refused else "accepted"] += 1
    TOTALS["user_files_changed"] += changed
    report = os.environ.get("GUIDINO_BAD_INPUT_REPORT")
    if report:
        Path(report).write_text(json.dumps(TOTALS, indent=2))


# (name, arguments with {u} the user's folder and {o} an empty output folder, expected exit, message pattern)
CLI_CASES = [
    ("output is the input", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                             "{u}/volume.nrrd"], 1, "is an input of this command"),
    ("guide output is the output", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                                    "{o}/s.nrrd", "--guide-output", "{o}/s.nrrd"], 1, "are the same file"),
    ("output inside the bundle", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                                  "{u}/bundle/s.nrrd"], 1, "must stay as it is"),
    ("output inside the guide", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                                 "{g}/s.nrrd"], 1, "must stay as it is"),
    ("output is a folder", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output", "{o}"], 1,
     "is a folder"),
    ("probability output under a file", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd",
                                         "--output", "{o}/s.nrrd", "--probability-output", "{o}/s.nrrd/p.nrrd"], 1,
     "one inside the other"),
    ("evaluate json onto a dataset file", ["evaluate", "--model", "{u}/bundle", "--data", "{u}/data", "--json",
                                           "{u}/data/val/masks/c0.png"], 1, "is an input of this command"),
    ("tiny guide onto a bundle", ["make-tiny-guide", "{u}/bundle"], 1, "already exists"),
    ("tiny guide onto the guide a bundle uses", ["make-tiny-guide", "{g}"], 1, "already exists"),
    ("train onto an existing bundle", ["train", "--data", "{u}/data", "--out", "{u}/bundle", "--guide", "none",
                                       "--steps", 1], 1, "already exists: a saved model is never replaced"),
    ("refine onto an existing bundle", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd", "--labels",
                                        "{u}/labels.nrrd", "--slices", "3", "--out", "{u}/bundle"], 1,
     "already exists"),
    ("refine a slice that does not exist", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd",
                                            "--labels", "{u}/labels.nrrd", "--slices", "3,99", "--out", "{o}/r"], 1,
     "slice 99 does not exist: slice indices are 0..7 along the axial axis"),
    ("batch size 0 (train)", ["train", "--data", "{u}/data", "--out", "{o}/m", "--batch-size", 0], 2,
     "batch size must be a whole number >= 1"),
    ("batch size 0 (segment)", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                                "{o}/s.nrrd", "--batch-size", 0], 2, "batch size must be 'auto' or a whole number"),
    ("guide stride 0", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output", "{o}/s.nrrd",
                        "--guide-stride", 0], 2, "guide stride must be 'auto' or a whole number >= 1"),
    ("steps -5", ["train", "--data", "{u}/data", "--out", "{o}/m", "--steps", -5], 2,
     "steps must be a whole number >= 1, got -5"),
    ("steps 0", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd", "--labels", "{u}/labels.nrrd",
                 "--slices", 3, "--out", "{o}/r", "--steps", 0], 2, "steps must be a whole number >= 1"),
    ("time budget -1", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd", "--labels",
                        "{u}/labels.nrrd", "--slices", 3, "--out", "{o}/r", "--time-budget", -1], 2,
     "time budget must be a number of seconds >= 0"),
    ("rounds 0", ["simulate", "--volume", "{u}/volume.nrrd", "--label", "{u}/labels.nrrd", "--rounds", 0], 2,
     "rounds must be a whole number >= 1"),
    ("slices not numbers", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd", "--labels",
                            "{u}/labels.nrrd", "--slices", "3,x", "--out", "{o}/r"], 2, "slices must be a whole number"),
    ("lora without a guide (train)", ["train", "--data", "{u}/data", "--out", "{o}/m", "--guide", "none", "--lora",
                                      "--steps", 1], 1, "--lora adapts the guide"),
    ("lora without a guide (refine)", ["refine", "--model", "none", "--guide", "none", "--lora", "--volume",
                                       "{u}/volume.nrrd", "--labels", "{u}/labels.nrrd", "--slices", 3, "--out",
                                       "{o}/r", "--steps", 1], 1, "LoRA adapts the guide"),
    ("resume without a checkpoint file", ["train", "--data", "{u}/data", "--out", "{o}/m", "--guide", "none",
                                          "--steps", 1, "--checkpoint", "{o}/none.ckpt", "--resume"], 1,
     "no checkpoint at"),
    ("resume from a corrupt checkpoint", ["train", "--data", "{u}/data", "--out", "{o}/m", "--guide", "none",
                                          "--steps", 1, "--checkpoint", "{u}/zero.nrrd", "--resume"], 1,
     "cannot be read"),
    ("a zero-byte volume", ["segment", "--model", "{u}/bundle", "--input", "{u}/zero.nrrd", "--output",
                            "{o}/s.nrrd"], 1, "the file is empty \\(0 bytes\\)"),
    ("a symbolic link loop", ["segment", "--model", "{u}/bundle", "--input", "{u}/loop-a.nrrd", "--output",
                              "{o}/s.nrrd"], 1, "loop-a.nrrd: a symbolic link loop"),
    ("a NaN volume", ["segment", "--model", "{u}/bundle", "--input", "{u}/nan.nrrd", "--output", "{o}/s.nrrd"], 1,
     "NaN or infinite"),
    ("a missing bundle", ["segment", "--model", "{u}/no-bundle", "--input", "{u}/volume.nrrd", "--output",
                          "{o}/s.nrrd"], 1, "not found"),
    ("a bundle whose guide is null", ["segment", "--model", "{nullguide}", "--input", "{u}/volume.nrrd", "--output",
                                      "{o}/s.nrrd"], 1, "names no guide"),
    ("a corrupt bundle", ["segment", "--model", "{corrupt}", "--input", "{u}/volume.nrrd", "--output", "{o}/s.nrrd"],
     1, "model.safetensors is corrupt"),
    ("mixed 8- and 16-bit images", ["train", "--data", "{mixed}", "--out", "{o}/m", "--guide", "none", "--steps", 1,
                                    "--size", 64], 1, "do not fit the dataset's range 0..255"),
    ("no target in the whole dataset", ["train", "--data", "{nothing}", "--out", "{o}/m", "--guide", "none",
                                        "--steps", 1, "--size", 64], 1, "the labels are all background"),
    ("one image without the target", ["train", "--data", "{u}/data", "--out", "{o}/m", "--guide", "none",
                                      "--steps", 1, "--size", 64, "--widths", "8,16,32"], 0, "saved"),
    ("an all-background correction of an existing model", ["refine", "--model", "{u}/bundle", "--volume",
                                                           "{u}/volume.nrrd", "--labels", "{u}/empty-labels.nrrd",
                                                           "--slices", "0,1", "--out", "{o}/r", "--steps", 1,
                                                           "--device", "cpu"], 0, "saved"),
    ("an all-background correction from nothing", ["refine", "--model", "none", "--volume", "{u}/volume.nrrd",
                                                   "--labels", "{u}/empty-labels.nrrd", "--slices", "0,1", "--out",
                                                   "{o}/r", "--guide", "none"], 1, "contain no target"),
]


def _derived(user, tmp_path):
    """Inputs made per case from the user's files (never the user's files themselves)."""
    import shutil

    places = {"u": user, "o": tmp_path / "out"}
    places["o"].mkdir()
    config = json.loads((user / "bundle" / "config.json").read_text())
    places["g"] = Path(config["guide"]["source"])
    shutil.copytree(user / "bundle", tmp_path / "null-guide")
    config["guide"] = None
    (tmp_path / "null-guide" / "config.json").write_text(json.dumps(config))
    places["nullguide"] = tmp_path / "null-guide"
    shutil.copytree(user / "bundle", tmp_path / "corrupt")
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"not safetensors")
    places["corrupt"] = tmp_path / "corrupt"
    for name, change in (("mixed", "16bit"), ("nothing", "empty")):
        shutil.copytree(user / "data", tmp_path / name)
        if change == "16bit":
            sitk.WriteImage(sitk.GetImageFromArray((np.arange(48 * 48).reshape(48, 48) * 4).astype(np.uint16)),
                            str(tmp_path / name / "train" / "images" / "c3.png"))
        else:
            for mask in (tmp_path / name).rglob("masks/*.png"):
                sitk.WriteImage(sitk.GetImageFromArray(np.zeros((48, 48), np.uint8)), str(mask))
        places[name] = tmp_path / name
    return places


@pytest.mark.parametrize("name, arguments, code, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_the_command_line_refuses_bad_input_clearly(name, arguments, code, message, user, tmp_path, capsys,
                                                    monkeypatch, tiny_guide_dir):
    import re

    monkeypatch.setenv("GUIDINO_GUIDE", str(tiny_guide_dir))
    places = _derived(user, tmp_path)
    before = _checksums(user, places["g"])
    got, text = _cli(capsys, *[str(a).format(**places) for a in arguments])
    changed = sum(1 for path, digest in _checksums(user, places["g"]).items() if before.get(path) != digest)
    _record(got != 0, changed)
    assert "Traceback" not in text
    assert got == code, text
    assert re.search(message, text), text
    if got:  # one line says what is wrong (argparse prints its usage before it)
        assert len([line for line in text.splitlines() if re.match(r"guidino [\w-]+: error: ", line)]) == 1, text
        assert re.match(r"guidino [\w-]+: error: ", text.strip().splitlines()[-1]), text
    assert changed == 0 and set(_checksums(user, places["g"])) == set(before)
    assert not list((tmp_path / "out").glob(".partial-*"))


def test_a_full_disk_while_saving_leaves_no_bundle_and_no_temporary(user, tmp_path, monkeypatch, tiny_guide_dir):
    import errno

    import safetensors.torch

    from guidino.bundle import BundleError, load_bundle, save_bundle

    model = load_bundle(user / "bundle")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(BundleError, match="cannot write the model bundle .*: No space left on device"):
        save_bundle(model, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    _record(True, 0)


def test_a_failed_write_keeps_the_file_that_was_there(tmp_path, monkeypatch):
    from guidino.errors import InputError
    from guidino.outputs import write_all

    target = tmp_path / "result.json"
    target.write_text("the user's earlier result")

    def half_then_full(temporary):
        Path(temporary).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="cannot write .*result.json: No space left on device"):
        write_all({target: half_then_full})
    assert target.read_text() == "the user's earlier result" and list(tmp_path.iterdir()) == [target]
    _record(True, 0)


# -- the Logic -------------------------------------------------------------------------------------------
@pytest.fixture
def scene(headless_slicer, user):
    volume = headless_slicer.load_volume(user / "volume.nrrd")
    segmentation = headless_slicer.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    return headless_slicer, volume, segmentation


def _logic_cases(app, volume, segmentation, user, tmp_path):
    import slicer

    from GuiDINOSegmentLib import GuiDINOSegmentLogic
    from GuiDINOTrainLib import GuiDINOTrainLogic
    from guidino.training.settings import RefineSettings

    logic = GuiDINOSegmentLogic()
    segment = logic.process(volume, segmentation, model=str(user / "bundle"), device="cpu").segmentId
    train = GuiDINOTrainLogic(logic, modelsFolder=tmp_path / "models")
    vector = app.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    nan = app.load_volume(user / "nan.nrrd")
    return [
        ("mark a slice that does not exist", lambda: logic.markSliceReviewed(segmentation, segment, 999),
         "slice 999 does not exist: slice indices are 0..7 along the axial axis"),
        ("mark along an unknown axis", lambda: logic.markSliceReviewed(segmentation, segment, 1, axis="oblique"),
         "unknown axis 'oblique'"),
        ("mark a segment that does not exist", lambda: logic.markSliceReviewed(segmentation, "nope", 1),
         "has no segment 'nope'"),
        ("no input volume", lambda: logic.process(None, segmentation, model=str(user / "bundle")),
         "no input volume"),
        ("no output segmentation", lambda: logic.process(volume, None, model=str(user / "bundle")),
         "no output segmentation"),
        ("a vector volume", lambda: logic.process(vector, segmentation, model=str(user / "bundle")),
         "not a scalar volume|vector volume|no voxels"),
        ("a NaN volume", lambda: logic.process(nan, app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode"),
                                               model=str(user / "bundle")), "NaN or infinite"),
        ("a slice range out of the volume", lambda: logic.process(volume, segmentation, model=str(user / "bundle"),
                                                                  sliceRange=(5, 20)), "slice 8 does not exist"),
        ("an empty slice range", lambda: logic.process(volume, segmentation, model=str(user / "bundle"),
                                                       sliceRange=(5, 3)), "first <= last"),
        ("a missing bundle", lambda: logic.process(volume, segmentation, model=str(tmp_path / "none")), "not found"),
        ("no bundle at all", lambda: GuiDINOSegmentLogic().process(volume, app.scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode")), "no model bundle chosen"),
        ("refine without corrections", lambda: train.refineFromCorrections(volume, segmentation, segment,
                                                                            model=str(user / "bundle")),
         "no corrections yet"),
        ("a negative time budget", lambda: train.refineFromCorrections(volume, segmentation, segment,
                                                                        timeBudgetSeconds=-1),
         "time budget must be a number of seconds >= 0"),
        ("nothing to train", lambda: RefineSettings(train=""), "parts to train must be among"),
        ("roll back to a folder that is no version", lambda: train.rollback(volume, segmentation, segment,
                                                                             tmp_path / "models"),
         "is not a model version"),
        ("a segmentation bound to another geometry", lambda: logic.process(
            _other_volume(app, tmp_path), segmentation, model=str(user / "bundle")), "bound to another geometry"),
    ], slicer


def _other_volume(app, tmp_path):
    image, _ = synthetic_volume(shape=(5, 20, 18), seed=3)
    sitk.WriteImage(image, str(tmp_path / "other.nrrd"))
    return app.load_volume(tmp_path / "other.nrrd")


def test_the_logic_refuses_bad_input_clearly(scene, user, tmp_path, tiny_guide_dir, monkeypatch):
    import re

    from guidino.errors import InputError

    monkeypatch.setenv("GUIDINO_GUIDE", str(tiny_guide_dir))
    app, volume, segmentation = scene
    cases, slicer = _logic_cases(app, volume, segmentation, user, tmp_path)
    segmentId = segmentation.GetSegmentation().GetNthSegmentID(0)
    before_user = _checksums(user)
    before_segment = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume).copy()
    problems = []
    for name, run, message in cases:
        try:
            run()
            problems.append(f"{name}: accepted")
        except (InputError, ValueError, RuntimeError) as error:  # the engine's and Logic's clear errors
            if not re.search(message, str(error)) or "\n" in str(error).strip():
                problems.append(f"{name}: {error!r}")
        now = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume)
        changed = int(not np.array_equal(now, before_segment)) + sum(
            1 for path, digest in _checksums(user).items() if before_user.get(path) != digest)
        _record(True, changed)
        if changed:
            problems.append(f"{name}: changed the user's segment or files")
    assert not problems, problems
