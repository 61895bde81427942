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
    huge = sitk.GetImageFromArray(sitk.GetArrayFromImage(image).astype(np.float64) * 1e297)  # up to about 1e300
    huge.CopyInformation(image)
    sitk.WriteImage(huge, str(root / "huge.nrrd"))
    half = sitk.GetImageFromArray(sitk.GetArrayFromImage(labels).astype(np.float32) * 0.5)  # a resampled mask
    half.CopyInformation(labels)
    sitk.WriteImage(half, str(root / "half-labels.nrrd"))
    (root / "notes.txt").write_text("the user's notes")
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


def _segment_with(bundle):
    return ["segment", "--model", "{" + bundle + "}", "--input", "{u}/volume.nrrd", "--output", "{o}/s.nrrd"]


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
    ("a float64 volume beyond 32-bit floats (refine from nothing)", [
        "refine", "--model", "none", "--volume", "{u}/huge.nrrd", "--labels", "{u}/labels.nrrd", "--slices", "3",
        "--out", "{o}/r", "--guide", "none", "--steps", 1], 1, "beyond 32-bit floats .*rescale the volume"),
    ("a float64 volume beyond 32-bit floats (segment)", ["segment", "--model", "{u}/bundle", "--input",
                                                         "{u}/huge.nrrd", "--output", "{o}/s.nrrd"], 1,
     "beyond 32-bit floats"),
    ("output onto the user's label map", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd",
                                          "--output", "{u}/labels.nrrd"], 1,
     "already exists and may be yours: .*--overwrite"),
    ("guide output onto an existing file", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd",
                                            "--output", "{o}/s.nrrd", "--guide-output", "{u}/empty-labels.nrrd"], 1,
     "already exists"),
    ("evaluate json onto the user's notes", ["evaluate", "--model", "{u}/bundle", "--data", "{u}/data", "--json",
                                             "{u}/notes.txt"], 1, "already exists and may be yours"),
    ("refine into the bundle", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd", "--labels",
                                "{u}/labels.nrrd", "--slices", "3", "--out", "{u}/bundle/v2"], 1,
     "must stay as it is"),
    ("refine into the guide", ["refine", "--model", "{u}/bundle", "--volume", "{u}/volume.nrrd", "--labels",
                               "{u}/labels.nrrd", "--slices", "3", "--out", "{g}/v2"], 1, "must stay as it is"),
    ("train into the dataset", ["train", "--data", "{u}/data", "--out", "{u}/data/model", "--guide", "none",
                                "--steps", 1], 1, "is an input of this command .*or inside it"),
    ("a 2D format for a 3D result", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                                     "{o}/s.png"], 1, "a .png file holds one 2D image, and volume.nrrd is a 3D volume"),
    ("an unknown output format", ["segment", "--model", "{u}/bundle", "--input", "{u}/volume.nrrd", "--output",
                                  "{o}/s.xyz"], 1, "GuiDINO writes .nrrd, .* files; give one of these suffixes"),
    ("labels that are not whole numbers", ["refine", "--model", "none", "--volume", "{u}/volume.nrrd", "--labels",
                                           "{u}/half-labels.nrrd", "--slices", "3", "--out", "{o}/r", "--guide",
                                           "none", "--steps", 1], 1, "are not whole numbers \\(e.g. 0.5\\)"),
    ("a window without its width", ["train", "--data", "{u}/data", "--out", "{o}/m", "--window", "40"], 2,
     "window must be CENTER,WIDTH with a width > 0, e.g. 40,400, got '40'"),
    ("a window of negative width", ["train", "--data", "{u}/data", "--out", "{o}/m", "--window", "40,-400"], 2,
     "window must be CENTER,WIDTH with a width > 0"),
    ("a bundle whose normalisation is inverted", ["segment", "--model", "{inverted}", "--input", "{u}/volume.nrrd",
                                                  "--output", "{o}/s.nrrd"], 1,
     "fixed normalization needs low < high, got low 255, high 0"),
    ("train on a dataset with only val/", ["train", "--data", "{valonly}", "--out", "{o}/m", "--guide", "none",
                                           "--steps", 1], 1, "has no train/ split \\(it has val/\\): add train/images"),
    ("evaluate a dataset with only val/", ["evaluate", "--model", "{u}/bundle", "--data", "{valonly}", "--split",
                                           "val", "--device", "cpu"], 0, "val: n=2"),
    ("train --data on a file", ["train", "--data", "{u}/volume.nrrd", "--out", "{o}/m", "--guide", "none",
                                "--steps", 1], 1, "--data .*volume.nrrd: not a folder"),
    ("bundle widths written as text", _segment_with("widths-text"), 1,
     "config.json is corrupt \\(widths must be a list of whole numbers"),
    ("bundle input size negative", _segment_with("size-negative"), 1,
     "input_size must be a whole number >= 32, got -64"),
    ("bundle input size as text", _segment_with("size-text"), 1,
     "input_size must be a whole number >= 32, got '64'"),
    ("bundle classes edited", _segment_with("classes-3"), 1,
     "its weights do not fit its config.json \\(size mismatch for .*\\): the config was edited"),
    ("bundle channels 0", _segment_with("channels-0"), 1,
     "in_channels must be a whole number >= 1, got 0"),
    ("bundle weights changed after saving", _segment_with("reweighted"), 1,
     "model.safetensors was changed after the bundle was saved"),
    ("a guide given as the model", ["segment", "--model", "{g}", "--input", "{u}/volume.nrrd", "--output",
                                    "{o}/s.nrrd"], 1,
     "is a guide \\(a dinov3_vit vision transformer\\), not a GuiDINO model bundle"),
    ("a bundle given as the guide", ["segment", "--model", "{u}/bundle", "--guide", "{u}/bundle", "--input",
                                     "{u}/volume.nrrd", "--output", "{o}/s.nrrd"], 1,
     "is a GuiDINO model bundle, not a guide: give it with --model"),
    ("a guide whose config was edited", ["segment", "--model", "{u}/bundle", "--guide", "{wideguide}", "--input",
                                         "{u}/volume.nrrd", "--output", "{o}/s.nrrd"], 1,
     "Cannot load the guide from .*wide-guide: .*its config.json and weights do not belong together"),
    ("a degenerate direction", ["segment", "--model", "{u}/bundle", "--input", "{flat}", "--output", "{o}/s.nrrd"],
     1, "the direction matrix in its header is degenerate \\(determinant 0\\)"),
    ("zero spacing", ["segment", "--model", "{u}/bundle", "--input", "{zerospacing}", "--output", "{o}/s.nrrd"], 1,
     "a voxel spacing of 0 or less in its header"),
    ("NaN spacing", ["segment", "--model", "{u}/bundle", "--input", "{nanspacing}", "--output", "{o}/s.nrrd"], 1,
     "the space directions in its header cannot be read"),
    ("a truncated NRRD", ["segment", "--model", "{u}/bundle", "--input", "{truncated}", "--output", "{o}/s.nrrd"], 1,
     "this .nrrd file cannot be read .*it may be truncated or damaged"),
    ("widths with an empty entry", ["train", "--data", "{u}/data", "--out", "{o}/m", "--widths", "8,,16"], 2,
     "widths must be one or more whole numbers separated by single commas, got '8,,16'"),
    ("a mask without its image", ["train", "--data", "{orphan}", "--out", "{o}/m", "--guide", "none", "--steps", 1],
     1, "1 masks have no image \\(e.g. lost.png\\)"),
    ("a NIfTI whose qform and sform disagree", ["segment", "--model", "{u}/bundle", "--input", "{apart}",
                                                "--output", "{o}/s.nrrd", "--device", "cpu"], 0,
     "guidino segment: warning: .*apart.nii: its qform and sform place the volume up to 10 mm apart; .*uses the sform"),
    ("an all-background correction from nothing", ["refine", "--model", "none", "--volume", "{u}/volume.nrrd",
                                                   "--labels", "{u}/empty-labels.nrrd", "--slices", "0,1", "--out",
                                                   "{o}/r", "--guide", "none"], 1, "contain no target"),
]


EDITED_BUNDLES = [("widths-text", "widths", "8,16,32"), ("size-negative", "input_size", -64),
                  ("size-text", "input_size", "64"), ("classes-3", "num_classes", 3), ("channels-0", "in_channels", 0)]


def _derived(user, tmp_path):
    """Inputs made per case from the user's files (never the user's files themselves)."""
    import re
    import shutil
    import struct

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
    shutil.copytree(user / "bundle", tmp_path / "inverted")
    inverted = json.loads((user / "bundle" / "config.json").read_text())
    inverted["model"]["normalization"] = {"mode": "fixed", "low": 255, "high": 0}
    (tmp_path / "inverted" / "config.json").write_text(json.dumps(inverted))
    places["inverted"] = tmp_path / "inverted"
    shutil.copytree(user / "data" / "val", tmp_path / "valonly" / "val")
    places["valonly"] = tmp_path / "valonly"
    for name, key, value in EDITED_BUNDLES:  # config.json edited by hand after saving
        shutil.copytree(user / "bundle", tmp_path / name)
        edited = json.loads((user / "bundle" / "config.json").read_text())
        edited["model"][key] = value
        (tmp_path / name / "config.json").write_text(json.dumps(edited))
        places[name] = tmp_path / name
    shutil.copytree(user / "bundle", tmp_path / "reweighted")
    with open(tmp_path / "reweighted" / "model.safetensors", "r+b") as weights:  # one byte of a weight changed
        weights.seek(-1, os.SEEK_END)
        last = weights.read(1)
        weights.seek(-1, os.SEEK_END)
        weights.write(bytes([last[0] ^ 1]))
    places["reweighted"] = tmp_path / "reweighted"
    shutil.copytree(places["g"], tmp_path / "wide-guide")
    guide_config = json.loads((places["g"] / "config.json").read_text())
    guide_config["hidden_size"] = guide_config["hidden_size"] * 2
    (tmp_path / "wide-guide" / "config.json").write_text(json.dumps(guide_config))
    places["wideguide"] = tmp_path / "wide-guide"
    header = (user / "volume.nrrd").read_bytes()
    for name, directions in (("flat", b"(1,0,0) (0,1,0) (1,1,0)"), ("zerospacing", b"(1,0,0) (0,0,0) (0,0,2)"),
                             ("nanspacing", b"(nan,0,0) (0,1,0) (0,0,2)")):
        (tmp_path / f"{name}.nrrd").write_bytes(re.sub(rb"space directions: [^\n]*", b"space directions: " + directions,
                                                       header, count=1))
        places[name] = tmp_path / f"{name}.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(user / "volume.nrrd")), str(tmp_path / "apart.nii"))
    nifti = bytearray((tmp_path / "apart.nii").read_bytes())
    nifti[292:296] = struct.pack("<f", struct.unpack_from("<f", nifti, 292)[0] + 10.0)  # the sform 10 mm off in x
    (tmp_path / "apart.nii").write_bytes(bytes(nifti))
    places["apart"] = tmp_path / "apart.nii"
    (tmp_path / "truncated.nrrd").write_bytes(header[: len(header) // 2])
    places["truncated"] = tmp_path / "truncated.nrrd"
    shutil.copytree(user / "data", tmp_path / "orphan")
    shutil.copy(user / "data" / "train" / "masks" / "c1.png", tmp_path / "orphan" / "train" / "masks" / "lost.png")
    places["orphan"] = tmp_path / "orphan"
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
        ("a negative interpolated reach", lambda: RefineSettings(interpolated_reach=-1),
         "interpolated reach must be a whole number >= 0"),
        ("corrections weighed as nothing", lambda: RefineSettings(corrected_weight=0),
         "corrected weight must be a whole number >= 1"),
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


def test_a_model_with_non_finite_weights_is_never_saved_loaded_or_used(user, tmp_path):
    """A diverged training (NaN or infinite weights) saves nothing; such a bundle is refused when loaded, and
    such a model writes no NaN probability map."""
    import safetensors.torch
    import torch

    from guidino.bundle import BundleError, load_bundle, save_bundle
    from guidino.errors import InputError
    from guidino.imageio import read_image
    from guidino.inference import segment_volume

    model = load_bundle(user / "bundle")
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")
    with pytest.raises(BundleError, match="hold NaN or infinite values .*nothing was saved"):
        save_bundle(model, tmp_path / "diverged")
    assert not (tmp_path / "diverged").exists() and not list(tmp_path.glob(".partial-*"))
    _record(True, 0)
    with pytest.raises(InputError, match="NaN or infinite probabilities"):
        segment_volume(model, read_image(user / "volume.nrrd"), device="cpu")
    _record(True, 0)

    import shutil

    shutil.copytree(user / "bundle", tmp_path / "nan-bundle")
    weights = safetensors.torch.load_file(str(tmp_path / "nan-bundle" / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("inf"))
    safetensors.torch.save_file(weights, str(tmp_path / "nan-bundle" / "model.safetensors"))
    config = json.loads((tmp_path / "nan-bundle" / "config.json").read_text())
    del config["weights_sha256"]  # as a bundle of an earlier GuiDINO (the checksum would refuse it first)
    (tmp_path / "nan-bundle" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="nan-bundle: 1 of .* weight tensors hold NaN or infinite values"):
        load_bundle(tmp_path / "nan-bundle")
    _record(True, 0)


def test_a_bundle_trained_with_a_relative_guide_path_works_from_another_folder(user, tmp_path, capsys, monkeypatch,
                                                                               tiny_guide_dir):
    """The bundle records where its guide is as an absolute path: a relative one meant another folder (or a hub
    id) from anywhere else."""
    import shutil

    shutil.copytree(tiny_guide_dir, tmp_path / "work" / "guide")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("GUIDINO_GUIDE", raising=False)
    code, text = _cli(capsys, "train", "--data", user / "data", "--out", "model", "--guide", "guide", "--steps", 1,
                      "--size", 64, "--widths", "8,16,32", "--device", "cpu")
    assert code == 0, text
    recorded = json.loads((tmp_path / "work" / "model" / "config.json").read_text())["guide"]["source"]
    assert recorded == str((tmp_path / "work" / "guide").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, text = _cli(capsys, "segment", "--model", tmp_path / "work" / "model", "--input", user / "volume.nrrd",
                      "--output", "s.nrrd", "--device", "cpu")
    assert code == 0 and (tmp_path / "elsewhere" / "s.nrrd").is_file(), text
    _record(False, 0)


def test_what_a_killed_write_left_is_removed_by_the_next_write(user, tmp_path, capsys):
    """kill -9 while writing leaves a hidden temporary beside the output; the next command writing in that folder
    removes the temporaries of processes that no longer run (and keeps a running one's)."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".partial-{dead.pid}-s.nrrd"
    stale.write_bytes(b"half a volume")
    alive = tmp_path / f".partial-{os.getppid()}-other.nrrd"
    alive.write_bytes(b"being written")
    code, text = _cli(capsys, "segment", "--model", user / "bundle", "--input", user / "volume.nrrd", "--output",
                      tmp_path / "s.nrrd", "--device", "cpu")
    assert code == 0, text
    assert not stale.exists() and alive.exists() and (tmp_path / "s.nrrd").is_file()
    _record(False, 0)


@pytest.mark.parametrize("existing", [False, True], ids=["new outputs", "outputs replaced with --overwrite"])
def test_a_failure_between_the_renames_leaves_all_outputs_or_none(tmp_path, monkeypatch, existing):
    """The second of three renames fails (a crash there, injected): the first output is taken back, so the
    folder holds what it held before, and no temporary."""
    from guidino import outputs
    from guidino.errors import InputError

    targets = [tmp_path / name for name in ("labels.nrrd", "guide.nrrd", "probability.nrrd")]
    if existing:
        for target in targets:
            target.write_text(f"earlier {target.name}")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    real, calls = os.replace, []

    def failing_replace(source, destination):
        if Path(source).name.startswith(".partial-") and Path(destination) in targets:
            calls.append(destination)
            if len(calls) == 2:
                raise OSError(5, "Input/output error")
        return real(source, destination)

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(InputError, match="cannot write .*guide.nrrd: Input/output error"):
        outputs.write_all({t: (lambda temporary, t=t: Path(temporary).write_text(f"new {t.name}")) for t in targets})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    _record(True, 0)
