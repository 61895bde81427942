"""Model bundle folders on disk, read without torch: their files and config.json, and the versions in a folder.

The GUI's process (3D Slicer) checks a chosen bundle here before any work and lists the versions from here; the
worker process then loads the model (``guidino.bundle``, with torch), which checks the rest.
"""

import json
from pathlib import Path

from .errors import BundleError

BUNDLE_FORMAT = 1
RANDOM_WEIGHTS_FLAG = "guidino_random_weights"  # in the config.json of a guide `guidino make-tiny-guide` wrote


def read_bundle_json(bundle):
    """A bundle's config.json as a dict, after checking that the folder holds a bundle of this format.

    Raises:
        BundleError: no such folder, a file missing, a config.json that is not JSON or is a guide's (a Hugging
            Face model folder), or another bundle format.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"model bundle {bundle} not found: give the folder written by `guidino train` or Refine")
    for name in ("config.json", "model.safetensors"):
        if not (bundle / name).is_file():
            raise BundleError(f"model bundle {bundle} is incomplete: {name} is missing")
    try:
        config = json.loads((bundle / "config.json").read_text())
    except ValueError as error:
        raise BundleError(f"model bundle {bundle}: config.json is corrupt ({error})") from None
    except OSError as error:
        raise BundleError(f"model bundle {bundle}: config.json cannot be read ({error.strerror or error})") from None
    if not isinstance(config, dict):
        raise BundleError(f"model bundle {bundle}: config.json is corrupt (not a JSON object)")
    if "model" not in config and "model_type" in config:
        raise BundleError(f"{bundle} is a guide (a {config['model_type']} vision transformer), not a GuiDINO model "
                          "bundle: give it with --guide, and with --model a bundle written by `guidino train` or "
                          "Refine")
    if config.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"model bundle {bundle} has format {config.get('format')}, this GuiDINO reads format "
                          f"{BUNDLE_FORMAT}: update GuiDINO or retrain the model")
    return config


def list_versions(folder):
    """Bundles in ``folder``, oldest first: dicts with path, created, parent, slices. Hidden folders (a save
    in progress, or one a killed process left) and unreadable bundles are not versions."""
    versions = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if path.name.startswith(".") or not (path / "config.json").is_file():
            continue
        try:
            config = read_bundle_json(path)
        except BundleError:
            continue
        provenance = config.get("provenance") if isinstance(config.get("provenance"), dict) else {}
        versions.append({"path": path, "created": config.get("created"), "parent": provenance.get("parent"),
                         "slices": provenance.get("slices", [])})
    return sorted(versions, key=lambda v: (str(v["created"] or ""), str(v["path"])))


def untrained_guide(bundle=None, guide=None):
    """Whether the guide a run would use has random weights (``guidino make-tiny-guide``), read without torch.

    Args:
        bundle: a model bundle folder (its config.json records whether its guide was pretrained), or None.
        guide: a guide source overriding the bundle's (a folder is read; a hub id or checkpoint is taken as
            pretrained), or None.

    Returns:
        True when the guide is known to be random, else False.
    """
    if guide:
        config = Path(guide) / "config.json"
        try:
            return bool(json.loads(config.read_text()).get(RANDOM_WEIGHTS_FLAG, False)) if config.is_file() else False
        except (OSError, ValueError, AttributeError):
            return False
    if bundle:
        try:
            return read_bundle_json(bundle).get("guide", {}).get("pretrained") is False
        except BundleError:
            return False
    return False
