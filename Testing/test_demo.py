"""`guidino demo` and the comparison `make demo` prints after it (GuiDINO, Fill between slices, do nothing)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from guidino.demo import SAMPLE, TRAIN_SLICES, run_demo
from guidino.geometry import Geometry

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_refines_from_its_slices_and_the_comparison_reads_its_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GUIDINO_GUIDE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_demo(out=tmp_path, device="cpu", steps=5) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    printed = capsys.readouterr()
    assert "UNTRAINED GUIDE" in printed.err and "[UNTRAINED GUIDE]" in printed.out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labelled_slices"] == list(TRAIN_SLICES) and summary["guide_pretrained"] is False
    written = sitk.ReadImage(str(run / "brain1_segmentation.nrrd"))
    source = sitk.ReadImage(str(SAMPLE / "brain1_image.nrrd"))
    assert Geometry.from_sitk(written).is_close(Geometry.from_sitk(source), tol=1e-6)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "brain1_label.nrrd"))) > 0
    labels = sitk.GetArrayFromImage(written)
    np.testing.assert_array_equal(labels[list(TRAIN_SLICES)] > 0, truth[list(TRAIN_SLICES)])  # the user's slices
    for name in ("model/config.json", "brain1_probability.nrrd", "montage.png"):
        assert (run / name).is_file(), name

    compared = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_comparison.py"), str(tmp_path)],
                              capture_output=True, text=True, timeout=300)
    assert compared.returncode == 0, compared.stderr
    lines = compared.stdout.splitlines()
    assert any("[UNTRAINED GUIDE" in line for line in lines)
    guidino = next(line for line in lines if line.strip().startswith("GuiDINO"))
    assert f"{summary['dice_not_labelled']:.3f}" in guidino
    assert any(line.strip().startswith("Fill between slices") for line in lines)
    assert any(line.strip().startswith("do nothing") for line in lines)
