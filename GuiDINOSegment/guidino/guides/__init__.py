"""Guide families, and the registry that picks the one that loads a given source.

A new family (a SAM / MedSAM encoder, a DINOv2 with another token layout) is one file that
subclasses ``GuideGenerator`` and one line in ``FAMILIES``; bundles record the family by name.
"""

import importlib

from ..errors import GuideNotFoundError
from .base import DEFAULT_GUIDE, GUIDE_ENV, IMAGENET_MEAN, IMAGENET_STD, GuideGenerator, resolve_guide_source

# name -> "module:class", in the order families are asked whether they accept a source.
FAMILIES = {
    "dinov3-official": "guidino.guides.dinov3_official:OfficialDINOv3Guide",
    "hf-vit": "guidino.guides.hf_vit:HuggingFaceViTGuide",
}

__all__ = ["DEFAULT_GUIDE", "FAMILIES", "GUIDE_ENV", "IMAGENET_MEAN", "IMAGENET_STD", "GuideGenerator",
           "GuideNotFoundError", "family_class", "family_for", "load_guide", "resolve_guide_source"]


def family_class(name):
    """The GuideGenerator subclass of family ``name``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown guide family {name!r}: this GuiDINO knows {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def family_for(source):
    """The first family that accepts ``source``; None when none does (e.g. a path that does not exist)."""
    return next((name for name in FAMILIES if family_class(name).accepts(source)), None)


def load_guide(source):
    """``none`` -> None (unguided); otherwise ``GuideGenerator.load(source)`` (default: DINOv3 ViT-S/16)."""
    if source is not None and str(source).lower() == "none":
        return None
    return GuideGenerator.load(source)

