"""``guidino demo``: few-shot training on the bundled brain MRI, whole-volume segmentation, a montage."""

import datetime
import sys
from pathlib import Path

import numpy as np
import torch
from skimage.io import imsave
from skimage.segmentation import find_boundaries

from .bundle import build_model
from .errors import GuideNotFoundError
from .guides import load_guide
from .guides.hf_vit import make_tiny_guide
from .imageio import read_image, read_labels, write_image
from .inference import segment_volume
from .metrics import case_metrics
from .model import ModelConfig
from .training.datasets import check_labels, slices_of
from .training.settings import TrainConfig
from .training.trainer import train_bundle

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


# A light network at 128 px keeps the demo to a minute or two on a 2-core CPU.
DEMO_CONFIG = dict(network="wnet", in_channels=1, input_size=128, widths=[8, 16, 32, 64, 128])


def run_demo(out="demo-output", guide=None, device="auto", steps=200, progress=None):
    run_dir = Path(out) / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    try:
        guide_model = load_guide(guide)
        pretrained = guide_model.pretrained
    except GuideNotFoundError as error:
        print(f"no pretrained guide available:\n{error}", file=sys.stderr)
        guide_model = load_guide(str(make_tiny_guide(run_dir / "untrained-guide")))
        pretrained = False
    if not pretrained:
        _banner("UNTRAINED GUIDE: the DINOv3 weights are random (none could be loaded). The numbers below show\n"
                "the pipeline working, NOT GuiDINO's accuracy. Give real weights with --guide or GUIDINO_GUIDE.")
    image = read_image(SAMPLE / "brain1_image.nrrd")
    truth = check_labels(read_labels(SAMPLE / "brain1_label.nrrd", like=image), "brain1_label")
    config = ModelConfig(**DEMO_CONFIG)
    model = build_model(config, guide_model)
    train_set = slices_of(image, truth, config, indices=TRAIN_SLICES, name="brain1")
    print(f"training a light nnWNet-style network ({config.input_size} px) on slices {list(TRAIN_SLICES)} of brain1",
          file=sys.stderr)
    bundle, result = train_bundle(model, train_set, None, run_dir / "model",
                                  TrainConfig(steps=steps, batch_size=5, lr=3e-3, device=device, validate_every=10),
                                  provenance={"data": "Resources/SampleData/brain1", "slices": list(TRAIN_SLICES)},
                                  progress=progress)
    seg = segment_volume(model, image, device=device)
    write_image(seg.labels, image.geometry, run_dir / "brain1_segmentation.nrrd")
    write_image(seg.probability, image.geometry, run_dir / "brain1_probability.nrrd")
    if seg.guide is not None:
        write_image(seg.guide, image.geometry, run_dir / "brain1_guide.nrrd")
    shown = [k for k in range(9, 20)]
    imsave(run_dir / "montage.png", montage(image.voxels, seg.labels, truth, seg.guide, shown), check_contrast=False)
    spacing = image.geometry.spacing[::-1]
    held_out = [k for k in range(image.voxels.shape[0]) if k not in TRAIN_SLICES]
    overall = case_metrics(seg.labels > 0, truth > 0, spacing=spacing)
    unseen = case_metrics(seg.labels[held_out] > 0, truth[held_out] > 0, spacing=spacing)
    tag = "" if pretrained else "  [UNTRAINED GUIDE]"
    print(f"trained {result.steps} steps in {result.seconds:.1f} s; segmented {image.voxels.shape[0]} slices in {seg.seconds:.2f} s")
    print(f"Dice, whole volume: {overall['dice']:.3f}{tag}")
    print(f"Dice, {len(held_out)} slices not used for training: {unseen['dice']:.3f}{tag}")
    print(f"wrote {run_dir}/ (model/, brain1_segmentation.nrrd, brain1_guide.nrrd, brain1_probability.nrrd, montage.png)")
    return 0
