"""Guide family "dinov3-official": Meta's DINOv3 checkpoints (``.pth`` / ``.pt`` / ``.safetensors``).

The official key names (facebookresearch/dinov3) are converted on load to transformers'
``DINOv3ViTModel`` (``dinov3_conversion``), which then runs as a Hugging Face ViT guide.
"""

from pathlib import Path

import torch
from transformers import DINOv3ViTModel

from .dinov3_conversion import convert_official_state_dict
from .hf_vit import CHECKPOINT_SUFFIXES, HuggingFaceViTGuide

def _load_checkpoint_file(path):
    """An official DINOv3 checkpoint (.pth / .pt / .safetensors) as a ``DINOv3ViTModel``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state_dict, dict):
            raise ValueError(f"it holds a {type(state_dict).__name__}, not a state dict")
        config, converted = convert_official_state_dict(state_dict)
        model = DINOv3ViTModel(config)
        model.load_state_dict(converted, strict=True)
    except Exception as error:
        raise ValueError(f"Cannot use {path} as an official DINOv3 checkpoint: {error}") from error
    return model


class OfficialDINOv3Guide(HuggingFaceViTGuide):
    """An official DINOv3 checkpoint file, converted to ``DINOv3ViTModel``."""

    family = "dinov3-official"

    @classmethod
    def accepts(cls, source):
        path = Path(str(source)).expanduser()
        return path.is_file() and path.suffix in CHECKPOINT_SUFFIXES

    @classmethod
    def from_source(cls, source, local_files_only=None):
        return cls(_load_checkpoint_file(Path(str(source)).expanduser()), source)
