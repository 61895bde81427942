"""The ``guidino`` command line, run as users and scripts run it."""

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk
from conftest import synthetic_volume

from guidino.geometry import Geometry


def guidino(*args, env=None):
    return subprocess.run([sys.executable, "-m", "guidino.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)


def test_train_segment_evaluate(tmp_path, disc_dataset, tiny_guide_dir):
    bundle = tmp_path / "model"
    run = guidino("train", "--data", disc_dataset, "--out", bundle, "--network", "wnet", "--guide", tiny_guide_dir,
                  "--size", 64, "--widths", "8,16,32,64,128", "--steps", 30, "--device", "cpu")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["parameters"]["total"] > metrics["parameters"]["trainable"] > 0  # the guide is frozen
    assert metrics["epochs"] == pytest.approx(30 * 4 / 8)  # 30 steps of batch 4 over 8 training images

    report = tmp_path / "val.json"
    run = guidino("evaluate", "--model", bundle, "--data", disc_dataset, "--split", "val", "--json", report)
    assert run.returncode == 0, run.stderr
    summary = json.loads(report.read_text())
    assert summary["n"] == 3 and len(summary["cases"]) == 3
    assert 0 <= summary["dice"] <= 1 and 0 <= summary["iou"] <= 1 and summary["hd95"] >= 0
    assert "UNTRAINED GUIDE" in summary["warning"] and "UNTRAINED GUIDE" in run.stdout

    image, _ = synthetic_volume()
    volume = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(volume))
    out, guide = tmp_path / "seg.nrrd", tmp_path / "guide.nrrd"
    run = guidino("segment", "--model", bundle, "--input", volume, "--output", out, "--guide-output", guide,
                  "--axis", "coronal")
    assert run.returncode == 0, run.stderr
    for path in (out, guide):
        assert Geometry.from_sitk(sitk.ReadImage(str(path))).is_close(Geometry.from_sitk(image), tol=1e-9)


def test_errors_are_one_clear_line(tmp_path, disc_dataset):
    run = guidino("segment", "--model", tmp_path / "missing-bundle", "--input", "x.nrrd", "--output", "y.nrrd")
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "not found" in run.stderr

    run = guidino("train", "--data", disc_dataset, "--out", tmp_path / "m", "--guide", tmp_path / "no-such-guide",
                  "--steps", 1)
    assert run.returncode != 0 and "GUIDINO_GUIDE" in run.stderr and "Traceback" not in run.stderr


def test_guide_stride_option(tmp_path, disc_dataset, tiny_guide_dir):
    bundle = tmp_path / "model"
    assert guidino("train", "--data", disc_dataset, "--out", bundle, "--guide", tiny_guide_dir, "--size", 64,
                   "--widths", "8,16,32,64,128", "--steps", 2, "--device", "cpu").returncode == 0
    image, _ = synthetic_volume()
    volume = tmp_path / "volume.nrrd"
    sitk.WriteImage(image, str(volume))
    run = guidino("segment", "--model", bundle, "--input", volume, "--output", tmp_path / "s.nrrd", "--guide-stride", 3)
    assert run.returncode == 0 and "guide stride 3" in run.stdout, run.stderr
    run = guidino("segment", "--model", bundle, "--input", volume, "--output", tmp_path / "s.nrrd", "--guide-stride", 0)
    assert run.returncode == 2 and "guide stride must be 'auto' or a whole number" in run.stderr


def test_tune_cpu_allocator():
    import platform

    from guidino.runtime import tune_cpu_allocator

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tune_cpu_allocator() is expected


def test_make_tiny_guide(tmp_path):
    run = guidino("make-tiny-guide", tmp_path / "tiny")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "tiny" / "config.json").exists()


def test_a_killed_training_resumes_to_the_model_the_whole_run_makes(tmp_path, disc_dataset):
    """kill -9 at a checkpoint, then --resume: the same weights and the same curve as an uninterrupted run."""
    import os
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    common = ["train", "--data", disc_dataset, "--guide", "none", "--network", "unet", "--size", 64, "--widths",
              "8,16,32", "--steps", 150, "--device", "cpu", "--seed", 1]
    whole = guidino(*common, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    checkpoint = tmp_path / "train.ckpt"
    args = [sys.executable, "-m", "guidino.cli", *map(str, common), "--out", str(tmp_path / "killed"),
            "--checkpoint", str(checkpoint)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (checkpoint.exists() and torch.load(checkpoint, weights_only=False)["step"] >= 20):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=False)["step"]
    assert 20 <= killed_at < 150 and not (tmp_path / "killed").exists()

    resumed = guidino(*common, "--out", tmp_path / "killed", "--checkpoint", checkpoint, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "killed"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key

    def curve(name):
        history = json.loads((tmp_path / name / "config.json").read_text())["provenance"]["result"]["history"]
        return [(h["step"], h["loss"], h["val_dice"]) for h in history]

    assert curve("killed") == curve("whole")
