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

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interactive import dice  # noqa: E402
from peers import do_nothing, fill_between_slices  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", nargs="?", default="demo-output", help="the demo's --out folder (its newest run)")
    args = parser.parse_args()
    runs = sorted(Path(args.output).glob("*/summary.json"))
    if not runs:
        parser.error(f"no demo run with a summary.json in {args.output}: run `make demo` (or guidino demo) first")
    summary = json.loads(runs[-1].read_text())
    label = sitk.ReadImage(summary["label"])
    truth = (sitk.GetArrayFromImage(label) > 0).astype(np.uint8)
    slices, axis = summary["labelled_slices"], summary["array_axis"]
    rest = [k for k in range(truth.shape[axis]) if k not in slices]
    rows = [("GuiDINO (refined from those slices)", summary["dice_not_labelled"], summary["dice_all"])]
    for name, result in (("Fill between slices (Slicer)", fill_between_slices(truth, slices, axis, label.GetSpacing()[::-1])),
                         ("do nothing (the labelled slices alone)", do_nothing(truth, slices, axis))):
        rows.append((name, dice(np.take(result, rest, axis), np.take(truth, rest, axis)), dice(result, truth)))
    tag = "" if summary["guide_pretrained"] else "  [UNTRAINED GUIDE: GuiDINO's row is not its accuracy]"
    print(f"\nSame {len(slices)} labelled slices {slices} of brain1, Dice{tag}:")
    print(f"  {'':40s} {'not labelled':>12s} {'whole volume':>13s}")
    for name, unseen, whole in rows:
        print(f"  {name:40s} {unseen:12.3f} {whole:13.3f}")
    print(f"({runs[-1].parent})")


if __name__ == "__main__":
    main()
