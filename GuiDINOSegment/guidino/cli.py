"""The ``guidino`` command line: train, segment, evaluate, demo (and make-tiny-guide for offline use)."""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from .arguments import auto_or_count, positive_number, seconds, whole_number
from .axes import AXES
from .errors import GeometryWarning, InputError
from .outputs import check_new_folder, check_outputs, write_text

OVERWRITE_HELP = "replace existing output files (never done otherwise: they may be yours)"
GUIDE_STRIDE_HELP = "run the guide on every n-th slice, interpolated between (auto: from the slice spacing; 1: every slice)"


class _Progress:
    """A tqdm bar fed by the engine's progress callbacks."""

    def __init__(self, description, unit):
        self.bar = tqdm(desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def count(self, done, total):
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def training(self, entry):
        self.bar.total = entry["total"]
        self.bar.n = entry["step"]
        val = entry["val_dice"]
        self.bar.set_postfix(loss=f"{entry['loss']:.3f}", val_dice="-" if val is None else f"{val:.3f}")

    def close(self):
        self.bar.close()


UNTRAINED_GUIDE_WARNING = "UNTRAINED GUIDE: these numbers are not GuiDINO's accuracy"


def _label_untrained_guide(summary, pretrained):
    """Put the untrained-guide warning into a report whose guide has random weights; True when it did."""
    if pretrained is False:
        summary["warning"] = UNTRAINED_GUIDE_WARNING
    return pretrained is False


def _write_json(path, data):
    if path:
        write_text(path, json.dumps(data, indent=2))


def _model_folders(bundle, guide=None):
    """The folders a command must leave as they are: the bundle, and its guide where that is a local path."""
    folders = [bundle] if bundle and str(bundle).lower() != "none" else []
    sources = [guide]
    if folders and (Path(bundle) / "config.json").is_file():
        try:
            sources.append((json.loads((Path(bundle) / "config.json").read_text()).get("guide") or {}).get("source"))
        except (ValueError, OSError, AttributeError):
            pass  # a corrupt bundle is refused when it is loaded
    return folders + [s for s in sources if s and Path(str(s)).expanduser().exists()]


def _make_tiny_guide(args):
    from .guides.hf_vit import RANDOM_ARCHITECTURES, make_tiny_guide

    if args.architecture not in RANDOM_ARCHITECTURES:
        raise InputError(f"--architecture {args.architecture!r}: choose one of {', '.join(RANDOM_ARCHITECTURES)}")
    check_new_folder(args.out_dir, "out_dir", "an existing folder (a guide a bundle uses, a bundle)")
    print(make_tiny_guide(args.out_dir, seed=args.seed, **RANDOM_ARCHITECTURES[args.architecture]))
    return 0


def _train(args):
    from .training.trainer import train_on_folder

    bar = _Progress("training", "step")
    try:
        bundle, result = train_on_folder(args.data, args.out, network=args.network, guide=args.guide, lora=args.lora,
                                         size=args.size, widths=args.widths, window=args.window,
                                         classes=args.classes, epochs=args.epochs, steps=args.steps,
                                         max_images=args.max_images, device=args.device, batch_size=args.batch_size,
                                         optimizer=args.optimizer, lr=args.lr, seed=args.seed,
                                         progress=bar.training, checkpoint=args.checkpoint,
                                         resume=args.resume, overwrite=args.overwrite)
    finally:
        bar.close()
    best = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
    print(f"saved {bundle} ({result.steps} steps, {result.seconds:.1f} s, best validation Dice {best} at model size)")
    return 0


def _segment(args):
    from .bundle import load_bundle
    from .imageio import check_image_outputs
    from .inference import segment_file

    outputs = {"--output": args.output, "--guide-output": args.guide_output,
               "--probability-output": args.probability_output}
    check_outputs(outputs, inputs=[args.input], kept=_model_folders(args.model, args.guide),  # before any work
                  overwrite=args.overwrite)
    check_image_outputs(outputs, args.input)
    model = load_bundle(args.model, guide=args.guide)
    bar = _Progress("segmenting", "slice")
    try:
        result = segment_file(model, args.input, args.output, guide_output=args.guide_output,
                              probability_output=args.probability_output, axis=args.axis, device=args.device,
                              batch_size=args.batch_size, guide_stride=args.guide_stride, progress=bar.count)
    finally:
        bar.close()
    print(f"wrote {args.output} ({int(result.processed.sum())} slices, {result.seconds:.2f} s, "
          f"guide stride {result.guide_stride})")
    return 0


def _evaluate(args):
    from .bundle import load_bundle, read_bundle_config
    from .evaluation import evaluate_pairs

    from .training.datasets import folder_pairs, is_image_folder, volume_label_pairs

    check_outputs({"--json": args.json}, inputs=[args.data], kept=_model_folders(args.model, args.guide),
                  overwrite=args.overwrite)
    model = load_bundle(args.model, guide=args.guide)
    pairs = folder_pairs(args.data, args.split) if is_image_folder(args.data) else volume_label_pairs(Path(args.data) / args.split)
    bar = _Progress(f"evaluating {args.split}", "case")
    try:
        summary = evaluate_pairs(model, pairs, axis=args.axis, device=args.device, progress=bar.count,
                                 guide_stride=args.guide_stride)
    finally:
        bar.close()
    guide = read_bundle_config(args.model).get("guide")
    summary["guide"] = guide
    _label_untrained_guide(summary, None if guide is None else guide.get("pretrained"))
    print(f"{args.split}: n={summary['n']} dice={summary['dice']:.4f} iou={summary['iou']:.4f} "
          f"hd95={summary['hd95']:.2f} ({summary['units']['hd95']})" + (f"  [{summary['warning']}]" if "warning" in summary else ""))
    for value, scores in summary.get("classes", {}).items():
        print(f"  class {value}: dice={scores['dice']:.4f} iou={scores['iou']:.4f} hd95={scores['hd95']:.2f}")
    _write_json(args.json, summary)
    return 0


def _refine_settings(args):
    from .training.settings import DEFAULT_NEW_MODEL, RefineSettings

    new_model = dict(DEFAULT_NEW_MODEL, input_size=args.size, **({"widths": args.widths} if args.widths else {}))
    return RefineSettings(train=args.train, lora=args.lora, steps=args.steps, time_budget=args.time_budget,
                          min_steps=args.min_steps, batch_size=args.batch_size, photometric=args.photometric,
                          interpolated_reach=args.interpolated_reach, device=args.device, seed=args.seed,
                          new_model=new_model)


def _refine(args):
    from .imageio import read_image, read_labels

    from .training.refine import load_starting_model, refine_model, save_refined

    # before any work: a saved model is never replaced, nor a bundle, a guide or an input changed
    check_new_folder(args.out, "--out", inputs=[args.volume, args.labels], kept=_model_folders(args.model, args.guide))
    settings = _refine_settings(args)
    image = read_image(args.volume)
    labels = read_labels(args.labels, like=image)
    model = load_starting_model(args.model, guide=args.guide)
    bar = _Progress("refining", "step")
    try:
        result = refine_model(image, labels, args.slices, model=model, guide=args.guide, axis=args.axis,
                              settings=settings, progress=bar.training)
    finally:
        bar.close()
    parent = None if model is None else args.model
    bundle = save_refined(result, args.out, parent=parent, volume=str(Path(args.volume).resolve()), axis=args.axis)
    print(f"saved {bundle} (slices {result.slices}, beside them by interpolation {result.interpolated}, "
          f"{result.steps} steps, {result.seconds:.1f} s, stopped: {result.stopped})")
    return 0


def _simulate(args):
    from .imageio import read_image, read_labels, write_images

    from .training.protocols import simulate, spread_protocol
    from .training.refine import load_starting_model

    check_outputs({"--json": args.json}, inputs=[args.volume, args.label], kept=_model_folders(args.model, args.guide),
                  overwrite=args.overwrite)
    rounds_folder = None if args.save_rounds is None else check_new_folder(args.save_rounds, "--save-rounds",
                                                                           "a folder of saved rounds")
    settings = _refine_settings(args)
    image = read_image(args.volume)
    truth = read_labels(args.label, like=image)
    model = load_starting_model(args.model, guide=args.guide)

    def save_round(entry, segmentation, current):
        stem = f"round-{entry['round']}" if "round" in entry else "spread"
        rounds_folder.mkdir(parents=True, exist_ok=True)
        write_images({rounds_folder / f"{stem}-prediction.nrrd": segmentation.labels,
                      rounds_folder / f"{stem}-probability.nrrd": segmentation.probability,
                      rounds_folder / f"{stem}-segment.nrrd": current}, image.geometry, image.is_2d)

    on_round = None if rounds_folder is None else save_round

    def report(entry):
        unreviewed = "n/a" if entry["dice_unreviewed"] is None else f"{entry['dice_unreviewed']:.4f}"
        print(f"round {entry['round']}: corrected {entry['corrected_slices']} dice_all {entry['dice_all']:.4f} "
              f"dice_unreviewed {unreviewed} refine {entry['refine_seconds']:.1f} s "
              f"segment {entry['segment_seconds']:.1f} s; slices by source {entry['slices_by_source']}, "
              f"next suggested {entry['suggested']}", flush=True)

    if args.spread is not None:
        if model is not None:
            raise InputError("--spread starts a new model from the spread slices: drop --model")
        summary = spread_protocol(image, truth, args.spread, guide=args.guide, axis=args.axis, settings=settings,
                                  device=args.device, on_round=on_round, placement=args.placement)
        print(f"spread {summary['slices']}: dice_not_labelled {summary['dice_not_labelled']:.4f} "
              f"dice_all {summary['dice_all']:.4f} refine {summary['refine_seconds']:.1f} s "
              f"segment {summary['segment_seconds']:.1f} s ({summary['steps']} steps); slices by source "
              f"{summary['slices_by_source']}", flush=True)
    else:
        summary = simulate(image, truth, args.rounds, model=model, guide=args.guide, axis=args.axis,
                           settings=settings, device=args.device, progress=report, on_round=on_round,
                           robot=args.robot)
    if _label_untrained_guide(summary, summary["guide_pretrained"]):
        print(f"[{summary['warning']}]")
    _write_json(args.json, summary)
    return 0


def _demo(args):
    from .demo import run_demo

    bar = _Progress("training", "step")
    try:
        return run_demo(args.out, guide=args.guide, device=args.device, steps=args.steps, progress=bar.training)
    finally:
        bar.close()


def _checked(check, name, **options):
    """An argparse type from an argument check: its message (the engine's words) instead of a traceback."""
    def parse(text):
        try:
            return check(text, name, **options)
        except InputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name
    return parse


def _auto_or_count(text, name, hint=""):
    """'auto', or the whole number: as the engine takes them."""
    return "auto" if auto_or_count(text, name, hint) is None else int(text)


def _whole_numbers(name, minimum=1):
    """An argparse type for a comma-separated list of whole numbers >= ``minimum`` ("3,10,17")."""
    def check(text, name):
        parts = [v.strip() for v in str(text).split(",")]
        if not any(parts) or not all(parts):
            raise InputError(f"{name} must be one or more whole numbers separated by single commas, got {text!r}")
        return [whole_number(v, name, minimum) for v in parts]

    return _checked(check, name)


GUIDE_STRIDE = _checked(_auto_or_count, "guide stride", hint=" (1 = the guide on every slice)")


def _window(text, name):
    """A CT window "CENTER,WIDTH" (width > 0) as [center, width]."""
    from .model import check_normalization

    try:
        center, width = (float(v) for v in str(text).split(","))
        check_normalization({"mode": "window", "center": center, "width": width})
    except ValueError:
        raise InputError(f"{name} must be CENTER,WIDTH with a width > 0, e.g. 40,400, got {text!r}") from None
    return [center, width]


def build_parser():
    from .model import ModelConfig
    from .networks import NETWORKS
    from .training.settings import DEFAULT_NEW_MODEL, PLACEMENTS, ROBOTS, RefineSettings

    parser = argparse.ArgumentParser(prog="guidino", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tiny = commands.add_parser("make-tiny-guide", help="write a random-weight DINOv3 (HF layout) for tests, offline runs "
                                                       "and speed benchmarks: never an accurate guide")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=_checked(whole_number, "seed", minimum=0), default=0)
    tiny.add_argument("--architecture", default="tiny",
                      help="tiny (default), or a real DINOv3 size (vits16, vitb16, vitl16), with random weights")
    tiny.set_defaults(run=_make_tiny_guide)

    tr = commands.add_parser("train", help="train a model on a dataset folder and save a bundle")
    tr.add_argument("--data", required=True, help="2D folder (<split>/images, <split>/masks) or a folder of volumes with labels")
    tr.add_argument("--out", required=True, help="new bundle folder (never overwritten)")
    tr.add_argument("--network", choices=tuple(NETWORKS), default=ModelConfig.network,
                    help="; ".join(f"{name}: {spec.description}" for name, spec in NETWORKS.items()))
    tr.add_argument("--guide", default=None, help="hub id, HF folder or official .pth; 'none' for the unguided baseline "
                                                  "(default: $GUIDINO_GUIDE, else facebook/dinov3-vits16-pretrain-lvd1689m)")
    tr.add_argument("--lora", action="store_true", help="train LoRA adapters on the guide's attention")
    tr.add_argument("--size", type=_checked(whole_number, "size", minimum=32), default=ModelConfig.input_size)
    tr.add_argument("--classes", type=_checked(whole_number, "classes", minimum=2), default=2,
                    help="2: binary, any label > 0 is the target (default); C: labels 0..C-1, 0 = background")
    tr.add_argument("--window", type=_checked(_window, "window"), default=None, metavar="CENTER,WIDTH",
                    help="CT window for intensity normalisation, e.g. 40,400 (default: per-volume percentiles)")
    tr.add_argument("--widths", type=_whole_numbers("widths"), default=None,
                    help="channels per network stage, e.g. 8,16,32,64,128 (default: the authors' setup)")
    length = tr.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_checked(whole_number, "epochs"), default=100)
    length.add_argument("--steps", type=_checked(whole_number, "steps"), default=None)
    tr.add_argument("--max-images", type=_checked(whole_number, "max images"), default=None)
    tr.add_argument("--batch-size", type=_checked(whole_number, "batch size"), default=4)
    tr.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    tr.add_argument("--lr", type=_checked(positive_number, "learning rate"), default=None)
    tr.add_argument("--seed", type=_checked(whole_number, "seed", minimum=0), default=0)
    tr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    tr.add_argument("--checkpoint", default=None, help="training state file, rewritten at each validation")
    tr.add_argument("--resume", action="store_true", help="continue from --checkpoint (same data and settings)")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --checkpoint file instead of "
                                                             "resuming from it")
    tr.set_defaults(run=_train)

    seg = commands.add_parser("segment", help="segment a volume or image slice by slice")
    seg.add_argument("--model", required=True)
    seg.add_argument("--input", required=True)
    seg.add_argument("--output", required=True)
    seg.add_argument("--guide-output", default=None)
    seg.add_argument("--probability-output", default=None)
    seg.add_argument("--axis", choices=AXES, default="axial")
    seg.add_argument("--batch-size", default="auto", type=_checked(_auto_or_count, "batch size"),
                     help="slices per batch (auto: 4 on CPU, 64 on a GPU)")
    seg.add_argument("--guide-stride", default="auto", type=GUIDE_STRIDE,
                    help=GUIDE_STRIDE_HELP)
    seg.add_argument("--guide", default=None, help="where the bundle's guide weights are, if not where they were")
    seg.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    seg.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    seg.set_defaults(run=_segment)

    ev = commands.add_parser("evaluate", help="IoU / Dice / HD95 of a bundle on a dataset split at native resolution")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default="val")
    ev.add_argument("--json", default=None)
    ev.add_argument("--axis", choices=AXES, default="axial")
    ev.add_argument("--guide", default=None)
    ev.add_argument("--guide-stride", default="auto", type=GUIDE_STRIDE,
                    help=GUIDE_STRIDE_HELP)
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ev.set_defaults(run=_evaluate)

    for name, helptext in (("refine", "fine-tune a model on corrected slices of a volume; writes a new bundle"),
                           ("simulate", "a robot user correcting the worst slice each round: the interactive curve")):
        cmd = commands.add_parser(name, help=helptext)
        cmd.add_argument("--volume", required=True)
        if name == "refine":
            cmd.add_argument("--model", required=True, help="bundle to refine, or 'none' to start from nothing")
            cmd.add_argument("--labels", required=True, help="label volume holding the corrections")
            cmd.add_argument("--slices", required=True, type=_whole_numbers("slices", minimum=0), help="corrected slice indices, e.g. 3,10,17")
            cmd.add_argument("--out", required=True, help="new bundle folder (never overwritten)")
        else:
            cmd.add_argument("--label", required=True, help="the true label volume the robot corrects from")
            cmd.add_argument("--model", default=None, help="starting bundle (default: start from nothing)")
            protocol = cmd.add_mutually_exclusive_group(required=True)
            protocol.add_argument("--rounds", type=_checked(whole_number, "rounds"),
                                  help="robot user: correct the worst slice, refine, re-segment, this many times")
            protocol.add_argument("--spread", type=_checked(whole_number, "spread"),
                                  help="spread protocol: label this many slices evenly spaced over the structure, "
                                       "refine a new model once, segment the rest")
            cmd.add_argument("--robot", choices=ROBOTS, default="largest-error",
                             help="which slice the robot corrects next: the one with the largest true error (an "
                                  "oracle), or the one GuiDINO suggests (as a user following the suggestion)")
            cmd.add_argument("--placement", choices=PLACEMENTS, default="ends",
                             help="where the spread slices go: 'ends' from the structure's first to its last slice, "
                                  "'interior' in the middle of equal parts of it, as a user places them")
            cmd.add_argument("--json", default=None)
            cmd.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
            cmd.add_argument("--save-rounds", default=None,
                             help="new folder for each round's model labels and probability (round-N-prediction.nrrd, "
                                  "round-N-probability.nrrd) and what the "
                                  "segmentation then holds (round-N-segment.nrrd), in the volume's geometry")
        cmd.add_argument("--axis", choices=AXES, default="axial")
        cmd.add_argument("--train", default="tokenbook+network", help="what learns: tokenbook, network, lora joined by +")
        cmd.add_argument("--lora", action="store_true")
        cmd.add_argument("--steps", type=_checked(whole_number, "steps"), default=RefineSettings.steps)
        cmd.add_argument("--time-budget", type=_checked(seconds, "time budget"), default=RefineSettings.time_budget,
                         help=f"seconds of training per refine (default {RefineSettings.time_budget:g}; 0: no limit, "
                              "train all --steps)")
        cmd.add_argument("--min-steps", type=_checked(whole_number, "minimum steps", minimum=0),
                         default=RefineSettings.min_steps,
                         help=f"steps the time budget cannot cut (default {RefineSettings.min_steps}; a slow CPU "
                              "takes longer instead of returning an untrained model)")
        cmd.add_argument("--batch-size", type=_checked(whole_number, "batch size"), default=RefineSettings.batch_size,
                         help=f"corrected slices per training step (default {RefineSettings.batch_size})")
        cmd.add_argument("--photometric", action="store_true",
                         help="augment intensities too (brightness/contrast, noise, blur), as guidino train does; "
                              "off by default: the corrections and the rest come from one volume")
        cmd.add_argument("--interpolated-reach", type=_checked(whole_number, "interpolated reach", minimum=0),
                         default=RefineSettings.interpolated_reach,
                         help="also train on the slices this close to a corrected one (between two of them), labelled "
                              "where the shape interpolated between the corrections surely holds the structure, "
                              f"unlabelled elsewhere, a slice with no such place left out (default "
                              f"{RefineSettings.interpolated_reach}: only the corrected slices; BENCHMARKS.md "
                              "section 3 says where it helps and where it hurts)")
        cmd.add_argument("--seed", type=_checked(whole_number, "seed", minimum=0), default=RefineSettings.seed,
                         help="seeds the new model's weights and the training's order and augmentation")
        cmd.add_argument("--size", type=_checked(whole_number, "size", minimum=32),
                         default=DEFAULT_NEW_MODEL["input_size"],
                         help="input size of a model started from nothing (it sees crops around the corrections)")
        cmd.add_argument("--widths", type=_whole_numbers("widths"), default=None, help="network widths of a model started from nothing")
        cmd.add_argument("--guide", default=None)
        cmd.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        cmd.set_defaults(run=_refine if name == "refine" else _simulate)

    demo = commands.add_parser("demo", help="train on a few slices of the bundled brain MRI, segment it, write results")
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--guide", default=None)
    demo.add_argument("--steps", type=_checked(whole_number, "steps"), default=RefineSettings.steps)
    demo.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .runtime import tune_cpu_allocator

    tune_cpu_allocator()

    def show_warning(message, category, *rest, **options):
        print(f"guidino {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", GeometryWarning)
            warnings.showwarning = show_warning
            return args.run(args)
    except KeyboardInterrupt:
        print("guidino: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as error:  # InputError, BundleError, GuideNotFoundError; GUIDINO_DEBUG=1 for a traceback
        if os.environ.get("GUIDINO_DEBUG"):
            raise
        print(f"guidino {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
