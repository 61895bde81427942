"""What running the guide on every n-th slice costs in accuracy (BENCHMARKS.md section 2).

Trains a model from a few labelled slices of a volume (``guidino refine`` from nothing), segments
the volume with ``--guide-stride 1`` and ``auto`` (``guidino segment``), and reports the Dice of
each against the true label on the slices not used for training, their agreement, and the time.
With a random-weight guide the guide carries little information, so the difference shown is a
lower bound: rerun with pretrained weights (``--guide``) for the real figure.

    python benchmarks/guide_stride_accuracy.py --volume ../shared/data/volumes/mni152_t1.nii.gz \\
        --label ../shared/data/volumes/mni152_wm_label.nii.gz --slices 40,65,90,115,140 \\
        --guide /path/to/dinov3-vits16 --out runs/stride
"""

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from command import guidino
from guidino.metrics import dice_score
from guidino.imageio import image_slice_axis, read_image, read_labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--slices", required=True, help="labelled slices to train on, e.g. 40,65,90,115,140")
    parser.add_argument("--guide", required=True)
    parser.add_argument("--out", required=True, help="new folder for the model and segmentations")
    parser.add_argument("--axis", default="axial")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True)
    guidino("refine", "--model", "none", "--volume", args.volume, "--labels", args.label, "--slices", args.slices,
            "--out", out / "model", "--guide", args.guide, "--axis", args.axis, "--steps", args.steps,
            "--time-budget", 0, "--device", args.device)
    image = read_image(args.volume)
    truth = read_labels(args.label, like=image) > 0
    axis = image_slice_axis(image, args.axis)
    trained = [int(s) for s in args.slices.split(",")]
    held_out = [k for k in range(truth.shape[axis]) if k not in trained]
    results, masks = {}, {}
    for stride in ("1", "auto"):
        start = time.perf_counter()
        report = guidino("segment", "--model", out / "model", "--input", args.volume, "--output",
                         out / f"stride-{stride}.nrrd", "--axis", args.axis, "--guide-stride", stride,
                         "--device", args.device, capture=True)
        seconds = time.perf_counter() - start
        masks[stride] = np.take(read_labels(out / f"stride-{stride}.nrrd", like=image) > 0, held_out, axis=axis)
        results[stride] = {"dice_held_out": dice_score(masks[stride], np.take(truth, held_out, axis=axis)),
                           "guide_stride": int(re.search(r"guide stride (\d+)", report).group(1)),
                           "seconds_including_startup": round(seconds, 1), "report": report.strip()}
    summary = {"volume": args.volume, "trained_on": trained, "held_out_slices": len(held_out), "runs": results,
               "agreement_dice": dice_score(masks["1"], masks["auto"]),
               "guide": json.loads((out / "model" / "config.json").read_text()).get("guide")}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
