"""The interactive benchmark (BENCHMARKS.md section 3): GuiDINO against its peers at equal effort.

Two protocols, run as a user would (``guidino simulate`` in its own process), a new model from nothing:
  - robot user: each round the uncorrected slice with the largest error is corrected, the model refined
    and the other slices re-segmented (round 1: the slice with the largest true area);
  - spread: K slices evenly spaced from the first to the last slice holding the structure are labelled,
    one refine, the rest segmented; run ``--runs`` times (the time budget makes runs differ): worst, median.
Beside GuiDINO, on the very same slices: **do nothing** (the labelled slices alone) and **Fill between
slices** (Slicer's effect, through slicer-core: ``peers.py``), and the same refine without a guide
(``--guide none``: the ablation). Dice on the slices not labelled (false
positives anywhere count) and over the whole volume. With a random-weight guide (``guidino
make-tiny-guide --architecture vits16``) every GuiDINO row is labelled UNTRAINED GUIDE.

    python benchmarks/interactive.py --data ../shared/data/volumes --guide runs/vits16-random \\
        --device cpu --out runs/interactive --markdown interactive.md
"""

import argparse
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from command import guidino
from guidino.metrics import dice_score
from machine import cpu_times, steal_since
from peers import do_nothing, fill_between_slices

# name: (image, label, spread counts). Any volume + label pair can join; labels > 0 are the structure.
CASES = {
    "brain1": ("brain1_image.nrrd", "brain1_label.nrrd", (2, 3, 5)),
    "breast1": ("breast1_image.nrrd", "breast1_label.nrrd", (2,)),  # its lesion is on 3 slices
    "mni152_t1 white matter": ("mni152_t1.nii.gz", "mni152_wm_label.nii.gz", (3, 5)),
    "prostate phantom": ("prostate_phantom_subvolume.nrrd", "prostate_phantom_subvolume-label.nrrd", (2, 3, 5)),
}


def read_truth(path):
    """The structure (labels > 0) as 0/1 and the voxel spacing, both in array order."""
    image = sitk.ReadImage(str(path))
    return (sitk.GetArrayFromImage(image) > 0).astype(np.uint8), image.GetSpacing()[::-1]


def peers(truth, spacing, slices, axis=0):
    """Dice (not labelled, whole volume) of doing nothing and of Fill between slices on ``slices``."""
    rest = [k for k in range(truth.shape[axis]) if k not in slices]
    out = {}
    for name, result in (("nothing", do_nothing(truth, slices, axis)),
                         ("fill", fill_between_slices(truth, slices, axis, spacing))):
        out[name] = {"dice_not_labelled": dice_score(np.take(result, rest, axis), np.take(truth, rest, axis)),
                     "dice_all": dice_score(result, truth)}
    return out


def _run(case, args, out, name, protocol, guide=None):
    """One ``guidino simulate`` run (reused when its JSON exists); ``guide`` overrides ``--guide``."""
    image, label, _ = CASES[case]
    report = out / f"{case.split()[0]}-{name}.json"
    if not report.exists():
        rounds = report.with_suffix("")  # each round's prediction and segment, to look at a miss afterwards
        shutil.rmtree(rounds, ignore_errors=True)  # left by a run stopped before its report
        before = cpu_times()
        guidino("simulate", "--volume", Path(args.data) / image, "--label", Path(args.data) / label, *protocol,
                "--json", report, "--save-rounds", rounds, "--guide", guide or args.guide, "--device", args.device,
                *args.simulate_options.split())
        summary = json.loads(report.read_text())
        summary["cpu_steal"] = steal_since(before)
        report.write_text(json.dumps(summary, indent=2))
    return json.loads(report.read_text())


def _untrained(summary):
    return " **[UNTRAINED GUIDE]**" if summary.get("guide_pretrained") is False else ""


def robot_table(case, summary, truth, spacing):
    lines = [f"**{case}**, robot user{_untrained(summary)}", "",
             "| round | corrected | steps | GuiDINO not labelled | GuiDINO whole | do nothing whole | Fill not labelled "
             "| Fill whole | refine s | re-segment s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rounds"]:
        other = peers(truth, spacing, r["corrected_slices"])
        unreviewed = "–" if r["dice_unreviewed"] is None else f"{r['dice_unreviewed']:.3f}"
        lines.append(f"| {r['round']} | {len(r['corrected_slices'])} | {r['steps']} | {unreviewed} | {r['dice_all']:.3f} "
                     f"| {other['nothing']['dice_all']:.3f} | {other['fill']['dice_not_labelled']:.3f} "
                     f"| {other['fill']['dice_all']:.3f} | {r['refine_seconds']:.1f} | {r['segment_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def spread_row(case, count, runs, truth, spacing, unguided=()):
    other = peers(truth, spacing, runs[0]["slices"])
    scores = sorted(r["dice_not_labelled"] for r in runs)
    whole = sorted(r["dice_all"] for r in runs)
    steps = ", ".join(str(r["steps"]) for r in runs)
    seconds = ", ".join(f"{r['refine_seconds']:.1f} + {r['segment_seconds']:.1f}" for r in runs)
    ablation = "–" if not unguided else f"{statistics.median(r['dice_not_labelled'] for r in unguided):.3f}"
    return (f"| {case}{_untrained(runs[0])} | {count} ({', '.join(map(str, runs[0]['slices']))}) | {steps} "
            f"| {scores[0]:.3f} / {statistics.median(scores):.3f} | {whole[0]:.3f} / {statistics.median(whole):.3f} "
            f"| {ablation} | {other['nothing']['dice_all']:.3f} | {other['fill']['dice_not_labelled']:.3f} "
            f"| {other['fill']['dice_all']:.3f} | {seconds} |"), scores, other


SPREAD_HEADER = ("| case | K (slices) | steps per run | GuiDINO not labelled: worst / median | GuiDINO whole: worst / median "
                 "| no guide (ablation) not labelled | do nothing whole | Fill not labelled | Fill whole "
                 "| refine + re-segment s per run |\n|---|---|---|---|---|---|---|---|---|---|")


def add_case(text):
    """``name=image,label,K[,K...]``: one more case (files in --data)."""
    name, _, spec = text.partition("=")
    parts = [p.strip() for p in spec.split(",")]
    if not name or len(parts) < 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give name=image,label,K[,K...] (files in --data)")
    try:
        counts = tuple(int(k) for k in parts[2:])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the spread counts K must be whole numbers") from None
    return name.strip(), (parts[0], parts[1], counts)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding the cases' volumes and labels")
    parser.add_argument("--guide", required=True, help="DINOv3: hub id, HF folder or official .pth")
    parser.add_argument("--out", required=True,
                        help="folder for the per-run JSON (reused when rerun) and, beside each, its rounds' NRRDs")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=5, help="robot-user rounds (0: no robot protocol)")
    parser.add_argument("--spread", default=None,
                        help="spread counts for every case, e.g. 3 (default: each case's; 0: no spread protocol)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each spread count")
    parser.add_argument("--unguided-runs", type=int, default=1,
                        help="runs of each spread count without a guide (--guide none): the ablation")
    parser.add_argument("--case", type=add_case, action="append", default=[],
                        help="another case, name=image,label,K[,K...] (repeatable); it joins --cases")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--simulate-options", default="", help="more guidino simulate options, e.g. '--steps 100'")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    CASES.update(dict(args.case))
    if args.case:
        args.cases = ",".join([*args.cases.split(","), *(name for name, _ in args.case)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    robot, spread, summary, warm_ups = [], [SPREAD_HEADER], {}, []
    for case in (c.strip() for c in args.cases.split(",")):
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        truth, spacing = read_truth(Path(args.data) / CASES[case][1])
        counts = CASES[case][2] if args.spread is None else tuple(int(k) for k in args.spread.split(",") if int(k))
        for count in counts:
            runs = [_run(case, args, out, f"spread{count}-run{n + 1}", ["--spread", count]) for n in range(args.runs)]
            unguided = [_run(case, args, out, f"spread{count}-noguide-run{n + 1}", ["--spread", count], guide="none")
                        for n in range(args.unguided_runs)]
            warm_ups += [r.get("warm_up_seconds") for r in runs + unguided]
            row, scores, other = spread_row(case, count, runs, truth, spacing, unguided)
            spread.append(row)
            summary.setdefault(count, []).append({"case": case, "worst": scores[0], "median": statistics.median(scores),
                                                  "fill": other["fill"]["dice_not_labelled"]})
            print(row, flush=True)
        if args.rounds:
            run = _run(case, args, out, f"robot{args.rounds}", ["--rounds", args.rounds])
            warm_ups.append(run.get("warm_up_seconds"))
            robot.append(robot_table(case, run, truth, spacing))
            print(robot[-1], flush=True)
        if args.markdown:
            Path(args.markdown).write_text(_markdown(spread, robot, summary, warm_ups))
    print(_markdown(spread, robot, summary, warm_ups))


def _markdown(spread, robot, summary, warm_ups):
    lines = ["Spread protocol", "", *spread, "", "Median over the cases, per K (GuiDINO's median run; Fill):", ""]
    for count, rows in sorted(summary.items()):
        lines.append(f"- K = {count}: GuiDINO {statistics.median(r['median'] for r in rows):.3f}, "
                     f"Fill {statistics.median(r['fill'] for r in rows):.3f} ({len(rows)} cases)")
    seconds = [w for w in warm_ups if w is not None]
    if seconds:
        lines += ["", f"Before its rounds each run's process imported MONAI in {min(seconds):.1f}–{max(seconds):.1f} "
                      f"s ({len(seconds)} processes), off the rounds' clock, as the Slicer worker does when first idle."]
    return "\n".join(lines + ["", *robot])


if __name__ == "__main__":
    main()
