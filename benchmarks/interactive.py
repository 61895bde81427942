"""The interactive curve (BENCHMARKS.md section 3): a robot user corrects one slice per round.

Runs ``guidino simulate`` from nothing on each case for ``--rounds`` rounds and tabulates, per
round, Dice over all slices and over the slices not yet corrected, and the seconds of the refine
and of the re-segmentation. With a random-weight guide (``guidino make-tiny-guide --architecture
vits16``) the Dice columns are labelled UNTRAINED GUIDE: they show the corrections teaching the
network, not GuiDINO's accuracy.

    python benchmarks/interactive.py --data ../shared/data/volumes --guide /path/to/dinov3-vits16 \\
        --rounds 10 --device cpu --out runs/interactive --markdown interactive.md
"""

import argparse
import json
from pathlib import Path

from command import guidino
from machine import cpu_times, steal_since

CASES = {  # name: (image, true label) in --data
    "brain1": ("brain1_image.nrrd", "brain1_label.nrrd"),
    "mni152_t1 white matter": ("mni152_t1.nii.gz", "mni152_wm_label.nii.gz"),
    "breast1": ("breast1_image.nrrd", "breast1_label.nrrd"),
}


def simulate(case, args, out):
    image, label = CASES[case]
    report = out / (case.split()[0] + ".json")
    if not report.exists():
        before = cpu_times()
        guidino("simulate", "--volume", Path(args.data) / image, "--label", Path(args.data) / label,
                "--rounds", args.rounds, "--json", report, "--guide", args.guide, "--device", args.device,
                *args.simulate_options.split())
        summary = json.loads(report.read_text())
        summary["cpu_steal"] = steal_since(before)
        report.write_text(json.dumps(summary, indent=2))
    return json.loads(report.read_text())


def markdown(case, summary):
    untrained = " **[UNTRAINED GUIDE]**" if summary.get("guide_pretrained") is False else ""
    steal = summary.get("cpu_steal")
    steal = "" if steal is None else f" (CPU stolen by the hypervisor during the run: {steal:.0%})"
    lines = [f"**{case}**{untrained}{steal}", "",
             "| round | corrected slices | Dice all | Dice uncorrected | refine s | re-segment s |",
             "|---|---|---|---|---|---|"]
    for r in summary["rounds"]:
        unreviewed = "–" if r["dice_unreviewed"] is None else f"{r['dice_unreviewed']:.3f}"
        lines.append(f"| {r['round']} | {len(r['corrected_slices'])} | {r['dice_all']:.3f} | {unreviewed} | "
                     f"{r['refine_seconds']:.1f} | {r['segment_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding the cases' volumes and labels")
    parser.add_argument("--guide", required=True, help="DINOv3: hub id, HF folder or official .pth")
    parser.add_argument("--out", required=True, help="folder for the per-case JSON (reused when rerun)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--simulate-options", default="", help="more guidino simulate options, e.g. '--steps 100'")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for case in (c.strip() for c in args.cases.split(",")):
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        tables.append(markdown(case, simulate(case, args, out)))
        print(tables[-1], flush=True)
        if args.markdown:
            Path(args.markdown).write_text("\n".join(tables))


if __name__ == "__main__":
    main()
