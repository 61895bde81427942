"""The interactive benchmark (BENCHMARKS.md section 3): GuiDINO against its peers at equal effort.

Two protocols, run as a user would (``guidino simulate`` in its own process), a new model from nothing:
  - robot user: each round one more slice is corrected, the model refined and the other slices re-segmented
    (round 1: the slice with the largest true area); the ``largest-error`` robot corrects the slice with the
    largest error (an oracle), the ``suggested`` one the slice GuiDINO suggests. Beside it, how many slices
    Fill between slices needs to reach Dice 0.85 with its own largest-error robot;
  - spread: K slices spread over the structure (``--placements``: ``interior``, as a user places them, and
    ``ends``, from its first to its last slice) are labelled, one refine, the rest segmented; run with seeds
    0 .. ``--runs`` - 1 (the time budget makes runs differ too): worst, median.
Runs are resumable: a run whose JSON is in ``--out`` is read, not run again. ``--rewrite``: a spread run read so is
written again by today's write rule from the prediction and probability it saved (the model does not depend on
the write rule, so this gives the run's result as if it ran today; robot runs do: rerun them).
Beside GuiDINO, on the very same slices: **do nothing** (the labelled slices alone) and **Fill between
slices** (Slicer's effect, through slicer-core: ``peers.py``), and with ``--unguided-runs`` the same refine
without a guide (``--guide none``: the ablation). Dice on the slices not labelled (false
positives anywhere count) and over the whole volume. With a random-weight guide (``guidino
make-tiny-guide --architecture vits16``) every GuiDINO row is labelled UNTRAINED GUIDE.

    python benchmarks/interactive.py --data ../shared/data/volumes --guide runs/vits16-random \\
        --device cpu --out runs/interactive --markdown interactive.md
"""

import argparse
import datetime
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from command import guidino
from guidino.metrics import dice_score
from guidino.training.protocols import with_corrections_explained
from machine import cpu_times, steal_since
from peers import do_nothing, fill_between_slices

# name: (image, label, spread counts). Any volume + label pair can join; labels > 0 are the structure.
CASES = {
    "brain1": ("brain1_image.nrrd", "brain1_label.nrrd", (2, 3, 5)),
    "breast1": ("breast1_image.nrrd", "breast1_label.nrrd", (2,)),  # its lesion is on 3 slices
    "mni152_t1 white matter": ("mni152_t1.nii.gz", "mni152_wm_label.nii.gz", (3, 5)),
    "prostate phantom": ("prostate_phantom_subvolume.nrrd", "prostate_phantom_subvolume-label.nrrd", (2, 3, 5)),
    **{f"ts_mr {name}": ("ts_mr_image.nrrd", f"ts_mr_{name}_label.nrrd", (3, 5))
       for name in ("pancreas", "gallbladder", "kidney_left", "adrenal_right", "adrenal_left", "autochthon_left")},
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


def rewritten(summary, rounds, truth, spacing):
    """A spread run's ``summary`` with its result written again by today's write rule (``with_corrections``) from
    the prediction and probability it saved in ``rounds``: Dice and where each slice came from."""
    predicted, probability = (sitk.GetArrayFromImage(sitk.ReadImage(str(rounds / f"spread-{name}.nrrd")))
                              for name in ("prediction", "probability"))
    slices = summary["slices"]
    current, fused = with_corrections_explained(predicted, truth, slices, 0, spacing, probability)
    rest = [k for k in range(truth.shape[0]) if k not in slices]
    return {**summary, "dice_not_labelled": dice_score(current[rest], truth[rest]), "dice_all": dice_score(current, truth),
            **fused.report(), "rewritten": datetime.date.today().isoformat()}


def _run(case, args, out, name, protocol, truth, spacing, guide=None):
    """One ``guidino simulate`` run (reused when its JSON exists, and written again with ``--rewrite`` on the
    case's ``truth`` and ``spacing``); ``guide`` overrides ``--guide``."""
    image, label, _ = CASES[case]
    report = out / f"{case.replace(' ', '_')}-{name}.json"
    if report.exists() and args.rewrite and "--spread" in protocol:
        report.write_text(json.dumps(rewritten(json.loads(report.read_text()), report.with_suffix(""), truth,
                                               spacing), indent=2))
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


def robot_table(case, summary, truth, spacing, fill_reach=None):
    reached = [r["round"] for r in summary["rounds"] if r["dice_all"] >= 0.85]
    reach = (f"slices to reach whole Dice 0.85: GuiDINO {reached[0] if reached else '> ' + str(len(summary['rounds']))}"
             f", Fill's robot {fill_reach if fill_reach is not None else '> ' + str(len(summary['rounds']))}")
    lines = [f"**{case}**, robot user ({summary.get('robot', 'largest-error')}){_untrained(summary)}; {reach}", "",
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
    parser.add_argument("--rounds", type=int, default=8, help="robot-user rounds (0: no robot protocol)")
    parser.add_argument("--robots", default="largest-error,suggested",
                        help="which robot users: largest-error (an oracle), suggested (follows GuiDINO's suggestion)")
    parser.add_argument("--placements", default="interior,ends",
                        help="spread placements: interior (as a user places slices; the targets), ends")
    parser.add_argument("--spread", default=None,
                        help="spread counts for every case, e.g. 3 (default: each case's; 0: no spread protocol)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each spread count (seeds 0, 1, ...)")
    parser.add_argument("--unguided-runs", type=int, default=0,
                        help="runs of each spread count without a guide (--guide none): the ablation")
    parser.add_argument("--case", type=add_case, action="append", default=[],
                        help="another case, name=image,label,K[,K...] (repeatable); it joins --cases")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--simulate-options", default="", help="more guidino simulate options, e.g. '--steps 100'")
    parser.add_argument("--rewrite", action="store_true",
                        help="write saved spread runs again by today's write rule from their saved probabilities")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    CASES.update(dict(args.case))
    if args.case:
        args.cases = ",".join([*args.cases.split(","), *(name for name, _ in args.case)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    robot, spread, summary, warm_ups = [], [], {}, []
    placements = [p.strip() for p in args.placements.split(",") if p.strip()]
    robots = [r.strip() for r in args.robots.split(",") if r.strip()]
    for case in (c.strip() for c in args.cases.split(",")):
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        truth, spacing = read_truth(Path(args.data) / CASES[case][1])
        counts = CASES[case][2] if args.spread is None else tuple(int(k) for k in args.spread.split(",") if int(k))
        for placement in placements:
            for count in counts:
                protocol = ["--spread", count, "--placement", placement]
                runs = [_run(case, args, out, f"{placement}{count}-seed{n}", [*protocol, "--seed", n], truth,
                             spacing) for n in range(args.runs)]
                unguided = [_run(case, args, out, f"{placement}{count}-noguide-seed{n}", [*protocol, "--seed", n],
                                 truth, spacing, guide="none") for n in range(args.unguided_runs)]
                warm_ups += [r.get("warm_up_seconds") for r in runs + unguided]
                row, scores, other = spread_row(case, count, runs, truth, spacing, unguided)
                spread.append((placement, row))
                summary.setdefault((placement, count), []).append(
                    {"case": case, "worst": scores[0], "median": statistics.median(scores),
                     "fill": other["fill"]["dice_not_labelled"], "tolerance": tolerance(truth)})
                print(row, flush=True)
        for name in robots if args.rounds else ():
            run = _run(case, args, out, f"robot-{name}{args.rounds}", ["--rounds", args.rounds, "--robot", name],
                       truth, spacing)
            warm_ups.append(run.get("warm_up_seconds"))
            robot.append(robot_table(case, run, truth, spacing, fill_robot_reach(truth, spacing, args.rounds)))
            print(robot[-1], flush=True)
        if args.markdown:
            Path(args.markdown).write_text(_markdown(spread, robot, summary, warm_ups))
    print(_markdown(spread, robot, summary, warm_ups))


def tolerance(truth):
    """The targets' tolerance: 0.03, or the Dice worth of 20 voxels for a structure under 700 voxels."""
    voxels = int(np.count_nonzero(truth))
    return max(0.03, 2 * 20 / (2 * voxels)) if voxels < 700 else 0.03


def fill_robot_reach(truth, spacing, rounds, target=0.85, axis=0):
    """Slices Fill between slices needs to reach whole-volume Dice ``target``, its robot starting from the slice
    of largest true area and adding each round the slice where Fill's result has the most wrong voxels; None when
    ``rounds`` slices do not reach it."""
    moved = np.moveaxis(truth, axis, 0)
    slices = [int(np.argmax(moved.reshape(moved.shape[0], -1).sum(axis=1)))]
    while True:
        filled = fill_between_slices(truth, slices, axis, spacing)
        if dice_score(filled, truth) >= target:
            return len(slices)
        if len(slices) >= rounds:
            return None
        wrong = np.moveaxis(filled != truth, axis, 0).reshape(moved.shape[0], -1).sum(axis=1)
        wrong[slices] = -1
        slices.append(int(np.argmax(wrong)))


def _markdown(spread, robot, summary, warm_ups):
    lines = []
    for placement in dict.fromkeys(p for p, _ in spread):
        lines += [f"Spread protocol, **{placement}** placement", "", SPREAD_HEADER,
                  *(row for p, row in spread if p == placement), ""]
    lines += ["Per K: cases ahead / level / behind Fill (GuiDINO's median run against Fill, not-labelled Dice, level "
              "within the case's tolerance) and the paired median margin; worst run against Fill:", ""]
    for (placement, count), rows in sorted(summary.items()):
        margins = [r["median"] - r["fill"] for r in rows]
        ahead = sum(m > r["tolerance"] for m, r in zip(margins, rows))
        behind = sum(m < -r["tolerance"] for m, r in zip(margins, rows))
        worst = min(rows, key=lambda r: r["worst"] - r["fill"])
        lines.append(f"- {placement}, K = {count}: {ahead} / {len(rows) - ahead - behind} / {behind} "
                     f"(of {len(rows)}), median margin {statistics.median(margins):+.3f}; worst run "
                     f"{worst['worst'] - worst['fill']:+.3f} ({worst['case']})")
    seconds = [w for w in warm_ups if w is not None]
    if seconds:
        lines += ["", f"Before its rounds each run's process imported MONAI in {min(seconds):.1f}–{max(seconds):.1f} "
                      f"s ({len(seconds)} processes), off the rounds' clock, as the Slicer worker does when first idle."]
    return "\n".join(lines + ["", *robot])


if __name__ == "__main__":
    main()
