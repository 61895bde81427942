"""Kvasir-SEG accuracy table (BENCHMARKS.md section 1): the paper's rows, trained and scored by the CLI.

Each row is ``guidino train`` on ``<data>/train`` (checkpoint selected on ``val``) then
``guidino evaluate`` on ``--split`` at native resolution. Rows already finished under ``--out``
are reused, so an interrupted run continues where it stopped. The guided rows are only as good
as the guide: with a random-weight guide (``guidino make-tiny-guide --architecture vits16``) they
are labelled UNTRAINED GUIDE.

    python benchmarks/kvasir.py --data ../shared/data/kvasir-seg --guide /path/to/dinov3-vits16 \\
        --out runs/kvasir --device cuda --epochs 100 --markdown kvasir.md
"""

import argparse
import json
from pathlib import Path

from command import guidino
from machine import cpu_times, steal_since

ROWS = {  # name: guidino train options
    "UNet": ["--network", "unet", "--guide", "none"],
    "GuiDINO-U": ["--network", "unet"],
    "nnWNet-style": ["--network", "wnet", "--guide", "none"],
    "GuiDINO-W": ["--network", "wnet"],
    "SegDINO": ["--network", "segdino"],
    "GuiDINO-W + LoRA": ["--network", "wnet", "--lora"],
}


def run_row(name, args, folder):
    """Train (unless done) and evaluate one row; returns its table entry."""
    bundle, scores = folder / "bundle", folder / f"{args.split}.json"
    options = list(ROWS[name])
    if "--guide" not in options:
        options += ["--guide", args.guide]
    if not (bundle / "config.json").exists():
        before = cpu_times()
        length = ["--steps", args.steps] if args.steps else ["--epochs", args.epochs]
        extra = ["--max-images", args.max_images] if args.max_images else []
        widths = ["--widths", args.widths] if args.widths and "segdino" not in options else []
        guidino("train", "--data", args.data, "--out", bundle, *options, "--size", args.size, *length, *extra, *widths,
                "--batch-size", args.batch_size, "--device", args.device, "--seed", args.seed,
                "--checkpoint", folder / "checkpoint.pt", *(["--resume"] if (folder / "checkpoint.pt").exists() else []))
        (folder / "cpu_steal.json").write_text(json.dumps(steal_since(before)))
    if not scores.exists():
        guidino("evaluate", "--model", bundle, "--data", args.data, "--split", args.split, "--json", scores,
                "--device", args.device)
    metrics = json.loads((bundle / "metrics.json").read_text())
    summary = json.loads(scores.read_text())
    return {"row": name, "iou": summary["iou"], "dice": summary["dice"], "hd95": summary["hd95"],
            "hd95_units": summary["units"]["hd95"], "n": summary["n"], "parameters": metrics.get("parameters"),
            "train_seconds": metrics["train_seconds"], "epochs": metrics.get("epochs"), "steps": metrics["steps"],
            "untrained_guide": summary.get("warning") is not None, "bundle": str(bundle),
            "cpu_steal_while_training": json.loads((folder / "cpu_steal.json").read_text())
            if (folder / "cpu_steal.json").exists() else None}


def markdown(entries):
    lines = ["| model | IoU | Dice | HD95 | parameters trainable / total | training | epochs |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        params = e["parameters"] or {}
        label = e["row"] + (" **[UNTRAINED GUIDE]**" if e["untrained_guide"] else "")
        lines.append(f"| {label} | {e['iou']:.4f} | {e['dice']:.4f} | {e['hd95']:.2f} {e['hd95_units']} | "
                     f"{params.get('trainable', 0) / 1e6:.2f} M / {params.get('total', 0) / 1e6:.2f} M | "
                     f"{e['train_seconds'] / 60:.1f} min | {e['epochs']} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with train/ and val/ (images/, masks/)")
    parser.add_argument("--guide", required=True, help="DINOv3 for the guided rows: hub id, HF folder or official .pth")
    parser.add_argument("--out", required=True, help="folder for the bundles and scores (reused when rerun)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="instead of --epochs")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--widths", default=None, help="network widths for UNet/WNet rows (default: the authors' setup)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    names = [r.strip() for r in args.rows.split(",")]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    out = Path(args.out)
    entries = []
    for name in names:
        folder = out / name.replace(" ", "").replace("+", "-")
        folder.mkdir(parents=True, exist_ok=True)
        entries.append(run_row(name, args, folder))
        table = markdown(entries)
        print(table, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": entries}, indent=2))
        if args.markdown:
            Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
