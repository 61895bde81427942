"""After ``guidino demo``: GuiDINO beside Slicer's Fill between slices and doing nothing, on the same slices.

Reads the newest ``summary.json`` under the demo's output folder, runs the two peers (``peers.py``:
Fill between slices through slicer-core, outside the engine) on the slices the demo labelled, and prints
Dice on the slices not labelled and over the whole volume. ``make demo`` runs it after the demo.

    python benchmarks/demo_comparison.py demo-output
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interactive import peers, read_truth  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", default="demo-output", help="the demo's --out folder (its newest run)")
    args = parser.parse_args()
    runs = sorted(Path(args.output).glob("*/summary.json"))
    if not runs:
        parser.error(f"no demo run with a summary.json in {args.output}: run `make demo` (or guidino demo) first")
    summary = json.loads(runs[-1].read_text())
    truth, spacing = read_truth(summary["label"])
    slices, axis = summary["labelled_slices"], summary["array_axis"]
    other = peers(truth, spacing, slices, axis)
    rows = [("GuiDINO (refined from those slices)", summary["dice_not_labelled"], summary["dice_all"])]
    for name, key in (("Fill between slices (Slicer)", "fill"), ("do nothing (the labelled slices alone)", "nothing")):
        rows.append((name, other[key]["dice_not_labelled"], other[key]["dice_all"]))
    tag = "" if summary["guide_pretrained"] else "  [UNTRAINED GUIDE: GuiDINO's row is not its accuracy]"
    print(f"\nSame {len(slices)} labelled slices {slices} of brain1, Dice{tag}:")
    print(f"  {'':40s} {'not labelled':>12s} {'whole volume':>13s}")
    for name, unseen, whole in rows:
        print(f"  {name:40s} {unseen:12.3f} {whole:13.3f}")
    print(f"({runs[-1].parent})")


if __name__ == "__main__":
    main()
