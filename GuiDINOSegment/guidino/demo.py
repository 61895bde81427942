"""``guidino demo``: refine a new model from a few labelled slices of the bundled brain MRI, segment the rest."""

import datetime
import json
import sys
from pathlib import Path

import numpy as np
from skimage.io import imsave
from skimage.segmentation import find_boundaries

from .errors import GuideNotFoundError
from .guides import load_guide
from .guides.hf_vit import make_tiny_guide
from .imageio import image_slice_axis, read_image, read_labels, write_image
from .metrics import case_metrics
from .training.datasets import check_labels
from .training.protocols import refine_and_segment
from .training.refine import save_refined
from .training.settings import RefineSettings

SAMPLE = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"  # GuiDINOSegment/Resources
TRAIN_SLICES = (4, 11, 13, 15, 17, 21)  # four slices through the tumour, two without it


def _banner(text):
    line = "!" * 78
    print(f"{line}\n{text}\n{line}", file=sys.stderr)


def montage(image, labels, truth, guide, slices):
    """RGB montage, one column per slice: top row guide heat overlay, bottom row result (red) and truth (green)."""
    low, high = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
    columns = []
    for k in slices:
        base = np.repeat(grey[k][..., None], 3, axis=-1)
        top = base.copy()
        if guide is not None:
            heat = np.stack([guide[k], 0.3 * guide[k], 1.0 - guide[k]], axis=-1)
            top = 0.6 * base + 0.4 * heat
        bottom = base.copy()
        bottom[find_boundaries(truth[k] > 0, mode="inner")] = (0.1, 0.9, 0.2)
        bottom[find_boundaries(labels[k] > 0, mode="inner")] = (1.0, 0.15, 0.1)
        columns.append(np.concatenate([top, bottom], axis=0))
    return (np.concatenate(columns, axis=1) * 255).astype(np.uint8)


def run_demo(out="demo-output", guide=None, device="auto", steps=RefineSettings.steps, progress=None):
    """Refine a new model from a few labelled slices of brain1 (the product's few-shot path: what Refine from
    corrections does in Slicer), segment the other slices, write the results and ``summary.json``."""
    run_dir = Path(out) / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    try:
        guide_source = guide
        pretrained = load_guide(guide).pretrained
    except GuideNotFoundError as error:
        print(f"no pretrained guide available:\n{error}", file=sys.stderr)
        guide_source = str(make_tiny_guide(run_dir / "untrained-guide"))
        pretrained = False
    if not pretrained:
        _banner("UNTRAINED GUIDE: the DINOv3 weights are random (none could be loaded). The numbers below show\n"
                "the pipeline working, NOT GuiDINO's accuracy. Give real weights with --guide or GUIDINO_GUIDE.")
    image = read_image(SAMPLE / "brain1_image.nrrd")
    truth = check_labels(read_labels(SAMPLE / "brain1_label.nrrd", like=image), "brain1_label")
    truth = (truth > 0).astype(np.uint8)
    # Refine's own settings, except that the step count, not the clock, ends the training: the same numbers on
    # any machine.
    settings = RefineSettings(steps=steps, time_budget=None, device=device, seed=0)
    print(f"refining a new model from slices {list(TRAIN_SLICES)} of brain1 ({steps} steps)", file=sys.stderr)
    result, seg, labels, rest, _ = refine_and_segment(image, truth, list(TRAIN_SLICES), guide=guide_source,
                                                   settings=settings, device=device, progress=progress)
    save_refined(result, run_dir / "model", volume=str(SAMPLE / "brain1_image.nrrd"))
    axis = image_slice_axis(image, "axial")
    write_image(labels, image.geometry, run_dir / "brain1_segmentation.nrrd")
    write_image(seg.probability, image.geometry, run_dir / "brain1_probability.nrrd")
    if seg.guide is not None:
        write_image(seg.guide, image.geometry, run_dir / "brain1_guide.nrrd")
    shown = [k for k in range(9, 20)]
    imsave(run_dir / "montage.png", montage(image.voxels, labels, truth, seg.guide, shown), check_contrast=False)
    spacing = image.geometry.spacing[::-1]
    overall = case_metrics(labels > 0, truth > 0, spacing=spacing)
    unseen = case_metrics(np.take(labels, rest, axis) > 0, np.take(truth, rest, axis) > 0, spacing=spacing)
    tag = "" if pretrained else "  [UNTRAINED GUIDE]"
    print(f"refined {result.steps} steps in {result.seconds:.1f} s; segmented {len(rest)} slices in {seg.seconds:.2f} s")
    print(f"Dice, whole volume: {overall['dice']:.3f}{tag}")
    print(f"Dice, {len(rest)} slices not labelled: {unseen['dice']:.3f}{tag}")
    summary = {"volume": str(SAMPLE / "brain1_image.nrrd"), "label": str(SAMPLE / "brain1_label.nrrd"),
               "labelled_slices": list(TRAIN_SLICES), "axis": "axial", "array_axis": int(axis), "dice_all": overall["dice"],
               "dice_not_labelled": unseen["dice"], "steps": result.steps, "guide_pretrained": bool(pretrained)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {run_dir}/ (model/, brain1_segmentation.nrrd, brain1_guide.nrrd, brain1_probability.nrrd, montage.png, "
          "summary.json)")
    return 0
