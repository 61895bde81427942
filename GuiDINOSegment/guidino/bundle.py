"""Model bundles: a folder with config.json, model.safetensors, lora/ (when used), metrics.json.

A bundle stores the TokenBook and network weights and *names* the guide (its source and the
SHA-256 of its base weights); the guide's weights stay where the user keeps them. Saving never
replaces an existing bundle.
"""

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import safetensors.torch
import torch

from . import __version__
from .bundlefiles import BUNDLE_FORMAT, read_bundle_json
from .errors import BundleError, GuideNotFoundError
from .guides import GuideGenerator
from .lora import add_lora, has_lora, load_lora, save_lora
from .model import GuiDINOModel, ModelConfig
from .outputs import partial_path, remove_stale_partials



class BundleExistsError(BundleError):
    """The bundle folder exists (maybe made a moment ago by another process): a saved model is never replaced."""


def save_bundle(model: GuiDINOModel, out_dir, metrics: Optional[dict] = None,
                provenance: Optional[dict] = None) -> Path:
    """Write ``model`` to a new bundle folder ``out_dir``.

    The folder is written as a hidden temporary beside it and renamed at the end (a bundle is complete or
    absent; what a killed save left is removed by the next save in that folder).

    Args:
        model: the GuiDINOModel to save (its config, TokenBook and network, LoRA adapters when it has them).
        out_dir: the new folder (str or Path); it must not exist.
        metrics: written as ``metrics.json`` (e.g. validation Dice).
        provenance: recorded in ``config.json`` (how the model was made: training data, parent, slices).

    Returns:
        The bundle's path.

    Raises:
        BundleExistsError: ``out_dir`` exists, or another process took the name meanwhile (a saved model is never
            replaced).
        BundleError: the folder cannot be written, or the weights hold NaN or infinite values.
    """
    out = Path(out_dir)
    if out.exists():
        raise BundleExistsError(f"{out} already exists: a saved model is never replaced; choose a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BundleError(f"cannot write the model bundle {out}: {error.strerror or error}") from None
    remove_stale_partials(out.parent)
    partial = partial_path(out)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        guide = model.guide
        state = {k: v.detach().cpu().contiguous() for k, v in model.learned_state_dict().items()}
        _check_finite(state, f"the model for {out}", "nothing was saved; train again (a lower learning rate, "
                      "or check the volume's intensities)")
        safetensors.torch.save_file(state, str(partial / "model.safetensors"))
        config = {
            "format": BUNDLE_FORMAT,
            "guidino_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": model.config.to_dict(),
            "guide": None if guide is None else {"source": guide.source, "family": guide.family,
                                                 "sha256": guide.weights_hash(), "embed_dim": guide.embed_dim,
                                                 "pretrained": guide.pretrained},
            "weights_sha256": _file_sha256(partial / "model.safetensors"),
            "provenance": provenance or {},
        }
        (partial / "config.json").write_text(json.dumps(config, indent=2))
        if guide is not None and has_lora(guide):
            save_lora(guide, partial / "lora")
        (partial / "metrics.json").write_text(json.dumps(metrics or {}, indent=2))
        try:
            os.rename(partial, out)  # atomic, and refused when the name was taken meanwhile
        except OSError:
            if out.exists():
                raise BundleExistsError(f"{out} already exists: a saved model is never replaced; choose a new "
                                        "folder") from None
            raise
    except BundleError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    except Exception as error:  # a full disk, a read-only folder: safetensors and json report them their ways
        shutil.rmtree(partial, ignore_errors=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise BundleError(f"cannot write the model bundle {out}: {reason}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def read_bundle_config(bundle):
    """The parsed config.json of a bundle, checked (its model settings as a ModelConfig)."""
    bundle = Path(bundle)
    config = read_bundle_json(bundle)
    try:
        config["model"] = ModelConfig.from_dict(config["model"])
        guide = config.get("guide")
        if config["model"].guided and not (isinstance(guide, dict) and isinstance(guide.get("source"), str)
                                           and isinstance(guide.get("sha256"), str)):
            raise ValueError("the model is guided but names no guide (source and sha256)")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleError(f"model bundle {bundle}: config.json is corrupt ({error})") from None
    return config


def load_bundle(bundle, guide=None, device: str = "cpu") -> GuiDINOModel:
    """Rebuild the model saved in ``bundle``.

    Args:
        bundle: the bundle folder (written by ``save_bundle``: ``guidino train``, refine).
        guide: a GuideGenerator, or a source (hub id, folder, .pth) overriding the one the bundle records; the
            guide's base weights must be the ones the bundle was trained with (SHA-256 checked).
        device: where the model goes (``"cpu"``, ``"cuda"``).

    Returns:
        The GuiDINOModel, in evaluation mode.

    Raises:
        BundleError: not a bundle, an unknown format, corrupt or edited settings, weights that do not match the
            recorded checksum or hold NaN/inf values, or a guide other than the one it was trained with.
    """
    bundle = Path(bundle)
    config = read_bundle_config(bundle)
    model_config = config["model"]
    recorded = config.get("guide")
    guide_model = None
    if model_config.guided:
        guide_model = guide if isinstance(guide, GuideGenerator) else _load_guide(guide, recorded, bundle)
        if guide_model.weights_hash() != recorded["sha256"]:
            raise BundleError(
                f"model bundle {bundle} was trained with the guide {recorded['source']} (weights sha256 "
                f"{recorded['sha256'][:12]}…), but the guide loaded from {guide_model.source} has other weights "
                f"(sha256 {guide_model.weights_hash()[:12]}…): give the same guide weights with --guide")
        if model_config.lora_rank:
            if not (bundle / "lora").is_dir():
                raise BundleError(f"model bundle {bundle} is incomplete: it was trained with LoRA but lora/ is missing")
            load_lora(guide_model, bundle / "lora")
    model = GuiDINOModel(model_config, guide_model)
    try:
        state = safetensors.torch.load_file(str(bundle / "model.safetensors"))
    except Exception as error:  # safetensors raises several types for a damaged file
        raise BundleError(f"model bundle {bundle}: model.safetensors is corrupt ({error})") from None
    recorded_weights = config.get("weights_sha256")
    if recorded_weights is not None and _file_sha256(bundle / "model.safetensors") != recorded_weights:
        raise BundleError(f"model bundle {bundle}: model.safetensors was changed after the bundle was saved (its "
                          "SHA-256 is not the one config.json records): restore the bundle, or retrain")
    _check_finite(state, f"model bundle {bundle}", "retrain it or roll back to an earlier version")
    expected = set(model.learned_state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise BundleError(f"model bundle {bundle}: weights do not match its config.json "
                          f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
        raise BundleError(f"model bundle {bundle}: its weights do not fit its config.json ({reason}): the config "
                          "was edited after saving; restore it or retrain") from None
    return model.to(device).eval()


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_finite(state, what, fix):
    """Refuse weights with NaN or infinite values (a diverged training): they segment nothing."""
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise BundleError(f"{what}: {len(bad)} of {len(state)} weight tensors hold NaN or infinite values "
                          f"(e.g. {bad[0]}); {fix}")


def _load_guide(source, recorded, bundle):
    """The guide a bundle names: ``source`` if given (its family detected), else the recorded source by its
    recorded family (bundles made before families were recorded: detected), else ``$GUIDINO_GUIDE``."""
    candidates = [(source, None)] if source is not None else [
        (recorded["source"], recorded.get("family")), (os.environ.get("GUIDINO_GUIDE"), None)]
    errors = []
    for candidate, family in dict.fromkeys((c, f) for c, f in candidates if c):
        try:
            return GuideGenerator.load(candidate, family=family)
        except GuideNotFoundError as error:
            errors.append(str(error))
    raise GuideNotFoundError(f"model bundle {bundle} needs its guide {recorded['source']}, which cannot be loaded:\n"
                             + "\n".join(errors))


def bundle_summary(bundle):
    """One line describing a bundle (network, guide, when trained), for lists and logs."""
    config = read_bundle_config(bundle)
    model = config["model"]
    guide = config.get("guide")
    guide_text = "no guide" if guide is None else f"guide {guide['source']}" + ("" if guide.get("pretrained") else " (untrained)")
    return f"{Path(bundle).name}: {model.network}, {guide_text}, {config.get('created', '?')}"


def build_model(config, guide=None, device="cpu"):
    """A new, untrained model for ``config`` (a guided one loads its guide from ``guide``)."""
    guide_model = None
    if config.guided:
        guide_model = guide if isinstance(guide, GuideGenerator) else GuideGenerator.load(guide)
        if config.lora_rank:
            add_lora(guide_model, rank=config.lora_rank, alpha=config.lora_alpha)
    return GuiDINOModel(config, guide_model).to(device)
