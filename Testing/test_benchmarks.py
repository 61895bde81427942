"""The benchmark scripts run end to end on tiny data, as BENCHMARKS.md runs them (through ``guidino``)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import synthetic_volume

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_NETWORK = ["--size", 64, "--widths", "8,16,32,64,128"]


def benchmark(script, *args):
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_kvasir_table_trains_scores_labels_the_untrained_guide_and_resumes(tmp_path, disc_dataset, tiny_guide_dir):
    table_json, table_md = tmp_path / "table.json", tmp_path / "table.md"
    args = ["--data", disc_dataset, "--guide", tiny_guide_dir, "--out", tmp_path / "runs", "--rows",
            "nnWNet-style,GuiDINO-W", *TINY_NETWORK, "--steps", 3, "--batch-size", 2, "--device", "cpu",
            "--json", table_json, "--markdown", table_md]
    first = benchmark("kvasir.py", *args)
    assert first.count("$ guidino train") == 2 and first.count("$ guidino evaluate") == 2
    rows = json.loads(table_json.read_text())["rows"]
    assert [r["row"] for r in rows] == ["nnWNet-style", "GuiDINO-W"]
    assert [r["untrained_guide"] for r in rows] == [False, True]
    for row in rows:
        scores = json.loads((Path(row["bundle"]).parent / "val.json").read_text())  # what guidino evaluate wrote
        assert (row["dice"], row["iou"], row["hd95"], row["n"]) == (scores["dice"], scores["iou"], scores["hd95"], 3)
        assert row["steps"] == 3 and row["epochs"] == pytest.approx(3 * 2 / 8)
        assert row["parameters"]["total"] >= row["parameters"]["trainable"] > 0
    assert rows[1]["parameters"]["total"] > rows[1]["parameters"]["trainable"]  # the guide is frozen
    lines = table_md.read_text().splitlines()
    assert lines[2].startswith("| nnWNet-style | ") and lines[3].startswith("| GuiDINO-W **[UNTRAINED GUIDE]** | ")

    again = benchmark("kvasir.py", *args)  # finished rows are reused, not retrained
    assert "$ guidino" not in again
    assert json.loads(table_json.read_text())["rows"] == rows


def test_interactive_benchmark_runs_both_protocols_beside_the_peers(tmp_path, tiny_guide_dir):
    image, labels = synthetic_volume()
    sitk.WriteImage(image, str(tmp_path / "brain1_image.nrrd"))
    sitk.WriteImage(labels, str(tmp_path / "brain1_label.nrrd"))
    out, table = tmp_path / "curve", tmp_path / "curve.md"
    benchmark("interactive.py", "--data", tmp_path, "--guide", tiny_guide_dir, "--out", out, "--cases", "brain1",
              "--rounds", 2, "--spread", "3", "--runs", 2, "--unguided-runs", 1, "--device", "cpu", "--markdown", table,
              "--simulate-options", "--steps 3 --time-budget 0 --size 64 --widths 8,16,32,64,128")
    for robot in ("largest-error", "suggested"):
        summary = json.loads((out / f"brain1-robot-{robot}2.json").read_text())
        assert summary["robot"] == robot and [r["round"] for r in summary["rounds"]] == [1, 2]
        assert [len(r["corrected_slices"]) for r in summary["rounds"]] == [1, 2]
    suggested = json.loads((out / "brain1-robot-suggested2.json").read_text())["rounds"]
    assert suggested[1]["corrected_slices"] == sorted(suggested[0]["corrected_slices"] + [suggested[0]["suggested"]])
    spread = [json.loads((out / f"brain1-ends3-seed{n}.json").read_text()) for n in (0, 1)]
    assert spread[0]["slices"] == spread[1]["slices"] == [3, 6, 9] and spread[0]["steps"] == 3
    assert json.loads((out / "brain1-interior3-seed0.json").read_text())["slices"] == [4, 6, 8]  # extent 3..9
    kept = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.nrrd"))  # to look at a miss afterwards
    assert [p for p in kept if p.startswith("brain1-robot-largest-error2/")] == [
        f"brain1-robot-largest-error2/round-{n}-{kind}.nrrd" for n in (1, 2)
        for kind in ("prediction", "probability", "segment")]
    assert "brain1-ends3-seed0/spread-segment.nrrd" in kept and "brain1-ends3-seed1/spread-prediction.nrrd" in kept
    text = table.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| brain1 **[UNTRAINED GUIDE]** | 3 (3, 6, 9) |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    truth = sitk.GetArrayFromImage(labels) > 0
    drawn = np.zeros_like(truth)
    drawn[[3, 6, 9]] = truth[[3, 6, 9]]
    assert cells[6] == f"{2 * (drawn & truth).sum() / (drawn.sum() + truth.sum()):.3f}"  # do nothing, whole volume
    unguided = json.loads((out / "brain1-ends3-noguide-seed0.json").read_text())
    assert unguided["guide_pretrained"] is None and cells[5] == f"{unguided['dice_not_labelled']:.3f}"  # the ablation
    assert "- interior, K = 3: " in text and "- ends, K = 3: " in text  # ahead / level / behind Fill per K
    assert "**brain1**, robot user (suggested) **[UNTRAINED GUIDE]**; slices to reach whole Dice 0.85: " in text
    assert "\n| 2 | 2 | 3 | " in text
    assert "imported MONAI in " in text and "(8 processes), off the rounds' clock" in text  # 2 x (2 + 1) spread, 2 robots

    rules = tmp_path / "rules.md"  # each write rule with and without it, from the runs' saved probabilities
    benchmark("fusion_rules.py", "--data", tmp_path, "--out", out, "--markdown", rules)
    table = rules.read_text().splitlines()
    assert table[0] == ("| case | placement | K | seed | Fill | default | model alone | interpolation alone "
                        "| unweighted model | no taper beyond | no trend beyond | path only when apart "
                        "| nothing beyond | clip 3 | tolerance 0.25/mm | no sure inside | sure depth 0.1 | sure depth 0.3 |")
    ends = next(line for line in table if line.startswith("| brain1 | ends | 3 | 0 |"))
    assert float(ends.split("|")[6]) == pytest.approx(spread[0]["dice_not_labelled"], abs=5e-4)  # default = the run
    assert sum(line.startswith("| brain1 | ends |") or line.startswith("| brain1 | interior |") for line in table) == 4
    robot = json.loads((out / "brain1-robot-largest-error2.json").read_text())["rounds"]
    for entry in robot:  # the robot rounds written again: by the default rule, the run's own result
        row = next(line for line in table if line.startswith(f"| brain1 | largest-error | {entry['round']} | "))
        assert float(row.split("|")[5]) == pytest.approx(entry["dice_all"], abs=5e-4)
    assert sum(line.startswith("| brain1 | suggested | ") for line in table) == 2

    saved = json.loads((out / "brain1-interior3-seed0.json").read_text())  # written again by the same rule: the same
    benchmark("interactive.py", "--data", tmp_path, "--guide", tiny_guide_dir, "--out", out, "--cases", "brain1",
              "--rounds", 0, "--spread", "3", "--runs", 1, "--device", "cpu", "--rewrite")
    again = json.loads((out / "brain1-interior3-seed0.json").read_text())
    assert again.pop("rewritten") and again == saved


def test_segment_speed_times_the_parts_and_the_command(tmp_path):
    report = tmp_path / "speed.json"
    benchmark("segment_speed.py", "--guides", "tiny", "--sizes", 64, "--batch-sizes", 2, "--repeats", 1,
              "--volume-shape", "6,40,48", "--guide-strides", "auto,1", "--json", report)
    result = json.loads(report.read_text())
    (part,) = result["components"]
    assert part["batch"] == 2 and part["guide_ms_per_slice"] > 0 and part["network_ms_per_slice"] > 0
    assert part["guide_gflop_per_slice"] > 0 and part["guide_overhead"] > 0
    assert [row["guide_stride"] for row in result["end_to_end"]] == ["auto", "1"]
    for row in result["end_to_end"]:
        assert row["volume"] == "ct.nrrd" and "6 slices" in row["cli_report"]
        assert 0 < row["peak_rss_gib"] < 8  # the child's own high-water mark


def test_worker_speed_runs_the_slicer_path_and_the_command(tmp_path):
    report = tmp_path / "worker.json"
    benchmark("worker_speed.py", "--guide", "tiny", "--size", 64, "--shape", "6,40,48", "--later-jobs", 1,
              "--json", report)
    result = json.loads(report.read_text())
    assert result["cli"]["slices"] == 6 and result["cli"]["ms_per_slice"] > 0
    assert [job["worker"] for job in result["worker"]] == ["cold", "warm"]
    for job in result["worker"]:
        assert job["slices"] == 6 and job["seconds_run_to_written"] >= job["segmenting_seconds"] > 0


def test_the_rule_nothing_beyond_writes_only_between_the_first_and_the_last_labelled_slice():
    sys.path.insert(0, str(BENCHMARKS))
    from fusion_rules import RULES, written

    truth = np.zeros((12, 32, 32), np.uint8)
    truth[2:10, 8:24, 8:24] = 1  # a box on slices 2-9, labelled on 4 and 7: it goes on beyond both
    probability = truth.astype(np.float32) * 0.9 + 0.05  # a model that sees it everywhere
    default = written(truth, probability, [4, 7], (3.0, 1.0, 1.0), RULES["default"])
    cut = written(truth, probability, [4, 7], (3.0, 1.0, 1.0), RULES["nothing beyond"])
    assert default[[3, 8]].any() and not cut[:4].any() and not cut[8:].any()
    np.testing.assert_array_equal(cut[4:8], default[4:8])


def test_fill_between_slices_peer_is_slicers_interpolator():
    sys.path.insert(0, str(BENCHMARKS))
    from peers import do_nothing, fill_between_slices

    truth = np.zeros((12, 30, 30), np.uint8)
    for k in range(2, 11):  # a cone: the square shrinks from slice 2 to slice 10
        half = 11 - k
        truth[k, 15 - half:15 + half, 15 - half:15 + half] = 1
    filled = fill_between_slices(truth, [2, 6, 9], 0)
    assert filled.shape == truth.shape and filled[[2, 6, 9]].tolist() == truth[[2, 6, 9]].tolist()
    sizes = filled.reshape(12, -1).sum(axis=1)
    assert all(sizes[k] > 0 for k in range(2, 10))  # every slice between is filled ...
    assert list(sizes[2:10]) == sorted(sizes[2:10], reverse=True)  # ... shrinking as the cone does
    assert sizes[0] == sizes[1] == sizes[10] == sizes[11] == 0  # nothing outside the labelled range, as in Slicer
    assert do_nothing(truth, [2, 6], 0).reshape(12, -1).sum(axis=1).nonzero()[0].tolist() == [2, 6]


def test_any_volume_and_label_pair_can_join_the_interactive_cases():
    sys.path.insert(0, str(BENCHMARKS))
    from interactive import add_case

    assert add_case("liver=ct.nii.gz,liver.nii.gz,3,5") == ("liver", ("ct.nii.gz", "liver.nii.gz", (3, 5)))
    for bad in ("liver", "liver=ct.nii.gz,liver.nii.gz", "liver=ct.nii.gz,liver.nii.gz,three"):
        with pytest.raises(Exception, match="name=image,label,K|whole numbers"):
            add_case(bad)
