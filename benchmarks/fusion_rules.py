"""Each rule of the write for a model made from corrections, with and without it, per case (BENCHMARKS.md §3).

Reads the spread runs ``interactive.py`` saved (``--out``: each run's JSON and, beside it, the model's probability
``spread-probability.nrrd``) and writes each run's result again from that same probability by the one write rule
(``review.merge_prediction``) with one rule changed at a time, so that the only difference is the rule:

- ``default``: as shipped (``guidino.fusion``);
- ``model alone``: no interpolation (the write rule before the fusion: connected to the corrections, continuing
  them);
- ``interpolation alone``: the model has no weight between and beyond the labelled slices;
- ``unweighted model``: the model counts fully whatever its Dice on the labelled slices;
- ``no taper beyond``: nothing interpolated beyond the first and the last labelled slice;
- ``no trend beyond``: beyond the first and the last labelled slice, the shape tapers over the structure's radius
  even where the user's sections shrink toward that end three in a row (``interpolate_shape``'s ``trend``);
- ``path only when apart``: between sections that do not overlap, only the path between them (not also each
  section tapering toward the other);
- ``nothing beyond``: nothing written beyond the first and the last labelled slice holding the structure (as Fill
  between slices): what carrying the structure on beyond the user's slices gains and costs;
- ``clip 3``: the model's log-odds clipped at 3 instead of ``fusion.CLIP``;
- ``tolerance 0.25/mm``: the interpolated contour's tolerance grows by 0.25 mm per mm to the nearer labelled slice
  instead of ``fusion.TOLERANCE_PER_MM``;
- ``no sure inside``: a model that does not reproduce the user's slices may carve into the shape blended between
  two overlapping sections as deep as its log-odds reach (``fusion.SURE_DEPTH`` off); ``sure depth 0.1`` and
  ``sure depth 0.3``: half and one and a half times the shipped ``SURE_DEPTH``.

The robot runs' rounds (``round-N-probability.nrrd`` beside each robot JSON) are written again the same way, each
round from its own corrected slices: whole-volume Dice per round and rule. The robot chose its slices from what the
shipped write left, so a rule's column is its effect on each round, not a robot run with that rule.

    python benchmarks/fusion_rules.py --data ../shared/data/volumes --out runs/interactive --markdown rules.md
"""

import argparse
import json
import re
import statistics
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from guidino.fusion import fuse_prediction
from guidino.metrics import dice_score
from guidino.review import merge_prediction, slice_mask
from interactive import CASES, read_truth
from peers import fill_between_slices

RULES = {
    "default": {},
    "model alone": None,
    "interpolation alone": {"weight": 0.0},
    "unweighted model": {"weight": 1.0},
    "no taper beyond": {"extrapolate": False},
    "no trend beyond": {"trend": False},
    "path only when apart": {"apart": "path"},
    "nothing beyond": {"beyond": False},
    "clip 3": {"clip": 3.0},
    "tolerance 0.25/mm": {"tolerance_per_mm": 0.25},
    "no sure inside": {"sure_depth": None},
    "sure depth 0.1": {"sure_depth": 0.1},
    "sure depth 0.3": {"sure_depth": 0.3},
}


def written(truth, probability, slices, spacing, rule):
    """What the segmentation holds after the write with ``rule`` (a ``RULES`` value), array axis 0."""
    writable = ~slice_mask(truth.shape, 0, slices)
    if rule is None:
        return merge_prediction(truth, (probability >= 0.5).astype(np.uint8), writable, evidence_axis=0,
                                spacing=spacing)
    rule = dict(rule)
    beyond = rule.pop("beyond", True)
    fused = fuse_prediction(probability, truth, slices, 0, spacing, **rule)
    result = merge_prediction(truth, fused.labels, writable, evidence_axis=0, spacing=spacing)
    if not beyond:
        holding = [k for k in slices if truth[k].any()]
        result[:holding[0]], result[holding[-1] + 1:] = 0, 0
    return result


def robot_rounds(out, data, files):
    """The markdown table of every saved robot round in ``out`` written by each rule (whole-volume Dice)."""
    lines = ["Robot rounds (whole-volume Dice, each round's saved probability written again):", "",
             "| case | robot | round | corrected | " + " | ".join(RULES) + " |", "|---" * (4 + len(RULES)) + "|"]
    for report in sorted(out.glob("*.json")):
        match = re.fullmatch(r"(.+)-robot-(.+?)(\d+)", report.stem)
        if match is None or match.group(1) not in files:
            continue
        truth, spacing = read_truth(data / CASES[files[match.group(1)]][1])
        for entry in json.loads(report.read_text())["rounds"]:
            image = report.with_suffix("") / f"round-{entry['round']}-probability.nrrd"
            probability = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
            slices = entry["corrected_slices"]
            scores = [dice_score(written(truth, probability, slices, spacing, rule), truth) for rule in RULES.values()]
            lines.append(f"| {files[match.group(1)]} | {match.group(2)} | {entry['round']} | {len(slices)} | "
                         + " | ".join(f"{score:.3f}" for score in scores) + " |")
            print(lines[-1], flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding the cases' volumes and labels")
    parser.add_argument("--out", required=True, help="interactive.py's --out folder")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    files = {name.replace(" ", "_"): name for name in CASES}
    rows, margins = [], {rule: [] for rule in RULES}
    for report in sorted(Path(args.out).glob("*.json")):
        match = re.fullmatch(r"(.+)-(interior|ends)(\d+)-seed(\d+)", report.stem)
        if match is None or match.group(1) not in files:
            continue  # robots, the unguided ablation
        summary = json.loads(report.read_text())
        truth, spacing = read_truth(Path(args.data) / CASES[files[match.group(1)]][1])
        probability = sitk.GetArrayFromImage(sitk.ReadImage(str(report.with_suffix("") / "spread-probability.nrrd")))
        slices = summary["slices"]
        rest = [k for k in range(truth.shape[0]) if k not in slices]
        fill = dice_score(fill_between_slices(truth, slices, 0, spacing)[rest], truth[rest])
        scores = {rule: dice_score(written(truth, probability, slices, spacing, value)[rest], truth[rest])
                  for rule, value in RULES.items()}
        for rule, score in scores.items():
            margins[rule].append(score - fill)
        rows.append(f"| {files[match.group(1)]} | {match.group(2)} | {match.group(3)} | {match.group(4)} | {fill:.3f} | "
                    + " | ".join(f"{scores[rule]:.3f}" for rule in RULES) + " |")
        print(rows[-1], flush=True)
    lines = ["| case | placement | K | seed | Fill | " + " | ".join(RULES) + " |",
             "|---" * (5 + len(RULES)) + "|", *rows, "",
             "Against Fill (not-labelled Dice, every run above): median margin / worst margin / runs behind by more "
             "than 0.03", ""]
    for rule, values in margins.items():
        if values:
            lines.append(f"- {rule}: {statistics.median(values):+.3f} / {min(values):+.3f} / "
                         f"{sum(v < -0.03 for v in values)} of {len(values)}")
    lines += ["", *robot_rounds(Path(args.out), Path(args.data), files)]
    text = "\n".join(lines)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
