"""Guide family "hf-vit": Hugging Face ViTs with CLS [+ register] + patch tokens (DINOv3, DINOv2, ViT).

Loaded from a hub id (through the local cache) or a local folder in Hugging Face layout.
``make_tiny_guide`` writes random DINOv3 models in that layout, for tests and speed runs.
"""

import inspect
import os
import re
from pathlib import Path

import torch
from transformers import AutoModel, DINOv3ViTConfig, DINOv3ViTModel

from ..errors import GuideNotFoundError
from ..bundlefiles import RANDOM_WEIGHTS_FLAG
from .base import GuideGenerator, _how_to_provide

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")  # single files: not Hugging Face folders or ids
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _hub_offline():
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable():
    """Whether the hub can be tried: through a proxy the environment names (then the request itself says whether it
    got through), else when the hub's host name resolves (a failed lookup answers at once; downloads would retry)."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    proxies = urllib.request.getproxies_environment()
    if (proxies.get("https") or proxies.get("all")) and not urllib.request.proxy_bypass_environment(host):
        return True  # only the proxy may resolve the hub's name
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _load_pretrained(source, local_files_only):
    """A Hugging Face model from a local folder or a hub id (through the local cache)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise GuideNotFoundError(
                f"{folder} is not a Hugging Face model folder (no config.json).\n{_how_to_provide()}"
            )
        _refuse_bundle(folder)
        try:
            return AutoModel.from_pretrained(folder, local_files_only=True)
        except Exception as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(error).__name__)
            raise ValueError(f"Cannot load the guide from {folder}: {reason}; its config.json and weights do not "
                             "belong together (an edited config?): give the folder as the hub or "
                             "`guidino make-tiny-guide` wrote it") from None
    offline = _hub_offline() if local_files_only is None else local_files_only
    if not offline and not _hub_reachable():
        offline = True  # no network: answer from the cache at once instead of retrying for half a minute
    try:
        # adapter_kwargs: transformers' adapter lookup ignores local_files_only and would reach the network
        return AutoModel.from_pretrained(source, local_files_only=offline, adapter_kwargs={"local_files_only": offline})
    except OSError as error:
        from huggingface_hub import constants

        where = "the local Hugging Face cache (the hub is offline or unreachable)" if offline else \
            "the Hugging Face hub or the local cache"
        raise GuideNotFoundError(
            f"Cannot get the guide {source!r} from {where} ({constants.HF_HUB_CACHE}): {error}\n{_how_to_provide()}"
        ) from error


def _refuse_bundle(folder):
    """A GuiDINO model bundle given where a guide belongs: say so (transformers would fail on its config.json)."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(config, dict) and "model" in config and "format" in config:
        raise ValueError(f"{folder} is a GuiDINO model bundle, not a guide: give it with --model; the guide is the "
                         "vision transformer (hub id, folder or .pth) the bundle names")


class HuggingFaceViTGuide(GuideGenerator):
    """A Hugging Face ViT as the guide: ``last_hidden_state`` is [CLS, registers, patch tokens]."""

    family = "hf-vit"

    def __init__(self, vit_model, source):
        config = vit_model.config
        if not hasattr(config, "patch_size") or not hasattr(config, "hidden_size"):
            raise ValueError(f"{type(vit_model).__name__} is not a ViT (no patch_size / hidden_size in its config)")
        patch = config.patch_size
        if isinstance(patch, (list, tuple)):
            if len(set(patch)) != 1:
                raise ValueError(f"non-square patches {patch} are not supported")
            patch = patch[0]
        super().__init__(vit_model, source, config.hidden_size, patch, config.num_hidden_layers,
                         pretrained=not getattr(config, RANDOM_WEIGHTS_FLAG, False))
        self.num_register_tokens = int(getattr(config, "num_register_tokens", 0) or 0)
        self._forward_kwargs = (
            {"interpolate_pos_encoding": True}  # e.g. ViTModel: any input size
            if "interpolate_pos_encoding" in inspect.signature(vit_model.forward).parameters
            else {}
        )

    @classmethod
    def accepts(cls, source):
        path = Path(str(source)).expanduser()
        return path.is_dir() or (not path.exists() and bool(_HUB_ID.fullmatch(str(source)))
                                 and not str(source).endswith(CHECKPOINT_SUFFIXES))

    @classmethod
    def from_source(cls, source, local_files_only=None):
        return cls(_load_pretrained(source, local_files_only), source)

    @property
    def lora_targets(self):
        return ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections of transformers' ViTs (v5)

    def encode(self, pixels, blocks):
        output = self.backbone(pixel_values=pixels, output_hidden_states=blocks is not None, **self._forward_kwargs)
        height, width = pixels.shape[-2:]
        if blocks is None:
            return [self._grid(output.last_hidden_state, height, width)]
        norm = self._final_norm()
        return [self._grid(norm(output.hidden_states[i + 1]), height, width) for i in blocks]

    def _final_norm(self):
        backbone = self.backbone
        for name in ("norm", "layernorm"):  # DINOv3 / DINOv2 and ViT
            if isinstance(getattr(backbone, name, None), torch.nn.Module):
                return getattr(backbone, name)
        return torch.nn.Identity()

    def _grid(self, tokens, height, width):
        rows, cols = height // self.patch_size, width // self.patch_size
        prefix = 1 + self.num_register_tokens
        if tokens.shape[1] != prefix + rows * cols:
            raise RuntimeError(
                f"the ViT returned {tokens.shape[1]} tokens; expected 1 CLS + {self.num_register_tokens} register "
                f"+ {rows * cols} patch tokens"
            )
        patches = tokens[:, prefix:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)


RANDOM_ARCHITECTURES = {  # for make_tiny_guide: DINOv3 ViT sizes (patch 16, 4 registers) and a tiny one for tests
    "tiny": dict(hidden_size=64, num_layers=4, num_heads=2),
    "vits16": dict(hidden_size=384, num_layers=12, num_heads=6),
    "vitb16": dict(hidden_size=768, num_layers=12, num_heads=12),
    "vitl16": dict(hidden_size=1024, num_layers=24, num_heads=16),
}


def make_tiny_guide(
    out_dir, seed=0, hidden_size=64, num_layers=4, num_heads=2, num_register_tokens=4, patch_size=16
) -> Path:
    """A tiny random DINOv3ViTModel saved in HF layout (save_pretrained), for tests and offline smoke runs."""
    config = DINOv3ViTConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_register_tokens=num_register_tokens,
        patch_size=patch_size,
        image_size=4 * patch_size,
        **{RANDOM_WEIGHTS_FLAG: True},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DINOv3ViTModel(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
