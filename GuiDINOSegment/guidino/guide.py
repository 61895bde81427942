"""The guide generator: a frozen ViT (DINOv3 by default) that turns an image into a grid of patch tokens.

Weights come from a Hugging Face hub id, a local folder in Hugging Face layout, or an official DINOv3
``.pth`` checkpoint (facebookresearch/dinov3 key names), converted here to transformers' ``DINOv3ViTModel``.
"""

import hashlib
import inspect
import os
import re
from pathlib import Path

import torch
from transformers import AutoModel, DINOv3ViTConfig, DINOv3ViTModel

from .errors import GuideNotFoundError

DEFAULT_GUIDE = "facebook/dinov3-vits16-pretrain-lvd1689m"
GUIDE_ENV = "GUIDINO_GUIDE"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
RANDOM_WEIGHTS_FLAG = "guidino_random_weights"  # set in the config of make_tiny_guide's models
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _how_to_provide():
    from huggingface_hub import constants

    return (
        "Provide the guide weights in one of these ways:\n"
        "  - `--guide PATH`: a folder in Hugging Face layout (config.json + weights) or an official DINOv3 "
        ".pth checkpoint;\n"
        f"  - the {GUIDE_ENV} environment variable set to such a path or to a hub id;\n"
        f"  - for a hub id such as {DEFAULT_GUIDE}: run `hf auth login` and accept the DINOv3 license on the "
        f"model's hub page (the weights are gated); they are then downloaded once into the local Hugging Face "
        f"cache ({constants.HF_HUB_CACHE})."
    )


def resolve_guide_source(source=None) -> str:
    """The guide to load: ``source`` argument > ``$GUIDINO_GUIDE`` > ``DEFAULT_GUIDE``."""
    return str(source or os.environ.get(GUIDE_ENV) or DEFAULT_GUIDE)


# Official DINOv3 names -> DINOv3ViTModel names. Per block: (module path -> module path); "gamma" -> "lambda1".
_TOP_LEVEL_KEYS = {
    "cls_token": "embeddings.cls_token",
    "storage_tokens": "embeddings.register_tokens",
    "mask_token": "embeddings.mask_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_BLOCK_MODULES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.o_proj",
    "ls1": "layer_scale1",
    "ls2": "layer_scale2",
    "mlp.fc1": "mlp.up_proj",
    "mlp.fc2": "mlp.down_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.up_proj",
    "mlp.w3": "mlp.down_proj",
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(\w+)")
# Separate norms for the CLS / register outputs only; the guide discards those tokens.
_CLS_ONLY_NORMS = ("cls_norm.", "local_cls_norm.")
_DEFAULT_ROPE_THETA = 100.0


def _rope_theta(periods, head_dim):
    """DINOv3 stores RoPE periods base ** (4 i / head_dim); recover the base and check the form."""
    if periods is None:
        return _DEFAULT_ROPE_THETA
    periods = periods.double()
    theta = float(periods[1] ** (head_dim / 4)) if periods.numel() > 1 else _DEFAULT_ROPE_THETA
    expected = theta ** (4 * torch.arange(periods.numel(), dtype=torch.float64) / head_dim)
    if not torch.allclose(periods, expected, rtol=1e-4):
        raise ValueError("unsupported RoPE periods (not of the form base ** (4 i / head_dim))")
    return theta


def convert_official_state_dict(state_dict):
    """Official DINOv3 ViT state dict -> (``DINOv3ViTConfig``, state dict for ``DINOv3ViTModel``).

    The configuration is read from the tensors: width, depth, head size (from the RoPE periods, else 64),
    register tokens, MLP width, SwiGLU or GELU MLP, biases, layer scale. Unknown keys raise ValueError.
    """
    sd = dict(state_dict)
    for key in ("cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"):
        if key not in sd:
            raise ValueError(f"no {key!r} tensor: not an official DINOv3 ViT checkpoint")
    dim = sd["cls_token"].shape[-1]
    periods = sd.pop("rope_embed.periods", None)
    head_dim = 4 * periods.numel() if periods is not None else 64
    if dim % head_dim:
        raise ValueError(f"width {dim} is not a multiple of the head size {head_dim}")
    depth = 1 + max(int(m.group(1)) for m in map(_BLOCK_KEY.fullmatch, sd) if m)
    gated = "blocks.0.mlp.w1.weight" in sd
    mlp_in = "blocks.0.mlp.w1" if gated else "blocks.0.mlp.fc1"
    qkv_bias = "blocks.0.attn.qkv.bias" in sd
    k_bias_masked = "blocks.0.attn.qkv.bias_mask" in sd
    patch_weight = sd["patch_embed.proj.weight"]
    config = DINOv3ViTConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=dim // head_dim,
        intermediate_size=sd[f"{mlp_in}.weight"].shape[0],
        patch_size=patch_weight.shape[-1],
        num_channels=patch_weight.shape[1],
        num_register_tokens=sd["storage_tokens"].shape[1] if "storage_tokens" in sd else 0,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        query_bias=qkv_bias,
        key_bias=qkv_bias and not k_bias_masked,
        value_bias=qkv_bias,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        mlp_bias=f"{mlp_in}.bias" in sd,
        rope_theta=_rope_theta(periods, head_dim),
    )

    converted, unknown = {}, []
    for key, value in sd.items():
        block = _BLOCK_KEY.fullmatch(key)
        index, module, param = block.groups() if block else (None, None, None)
        if key in _TOP_LEVEL_KEYS:
            converted[_TOP_LEVEL_KEYS[key]] = value.reshape(1, 1, dim) if key == "mask_token" else value
        elif key.startswith(_CLS_ONLY_NORMS) or (module == "attn.qkv" and param == "bias_mask"):
            continue
        elif module == "attn.qkv":
            masked = param == "bias" and k_bias_masked
            if masked:  # the official model multiplies its qkv bias by this mask, which zeroes the k part
                value = value * sd[f"blocks.{index}.attn.qkv.bias_mask"].to(value.dtype)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                if not (masked and name == "k_proj"):
                    converted[f"model.layer.{index}.attention.{name}.{param}"] = part
        elif module in _BLOCK_MODULES:
            converted[f"model.layer.{index}.{_BLOCK_MODULES[module]}.{'lambda1' if param == 'gamma' else param}"] = (
                value
            )
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown tensors {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    if "storage_tokens" not in sd:
        converted["embeddings.register_tokens"] = torch.zeros(1, 0, dim)
    if "blocks.0.ls1.gamma" not in sd:  # no layer scale: the identity scale
        for index in range(depth):
            for scale in ("layer_scale1", "layer_scale2"):
                converted[f"model.layer.{index}.{scale}.lambda1"] = torch.ones(dim)
    return config, converted


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


def _hub_offline():
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable():
    """Whether the hub's host name resolves (a failed lookup answers at once; downloads would retry)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
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
        try:
            return AutoModel.from_pretrained(folder, local_files_only=True)
        except Exception as error:
            raise ValueError(f"Cannot load the guide from {folder}: {error}") from error
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


def _frozen_state_dict(model):
    """The backbone's own tensors: LoRA adapter tensors left out, peft's ``base_layer`` wrappers unwrapped."""
    return {
        key.replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if not any(part.startswith("lora_") for part in key.split("."))
    }


class GuideGenerator(torch.nn.Module):
    """Frozen ViT (DINOv3, or DINOv2 / any HF ViT with CLS [+ registers] + patch tokens) -> patch-token grid.

    The ViT always runs in eval mode, whatever ``train()`` is called with: transformers' DINOv3 applies
    RoPE coordinate augmentation in train mode, so features would change from call to call. Its weights
    never require gradients; LoRA adapters attached with ``lora.add_lora`` are the one trainable part, and
    they too run in eval mode (no LoRA dropout).

    ``pretrained`` is False for the random weights of ``make_tiny_guide`` (its models carry a config flag).
    """

    def __init__(self, vit_model, source: str):
        super().__init__()
        config = vit_model.config
        if not hasattr(config, "patch_size") or not hasattr(config, "hidden_size"):
            raise ValueError(f"{type(vit_model).__name__} is not a ViT (no patch_size / hidden_size in its config)")
        patch = config.patch_size
        if isinstance(patch, (list, tuple)):
            if len(set(patch)) != 1:
                raise ValueError(f"non-square patches {patch} are not supported")
            patch = patch[0]
        self.vit = vit_model
        self.source = str(source)
        self.embed_dim = int(config.hidden_size)
        self.patch_size = int(patch)
        self.num_register_tokens = int(getattr(config, "num_register_tokens", 0) or 0)
        self.num_layers = int(config.num_hidden_layers)
        self.pretrained = not getattr(config, RANDOM_WEIGHTS_FLAG, False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._forward_kwargs = (
            {"interpolate_pos_encoding": True}  # e.g. ViTModel: any input size
            if "interpolate_pos_encoding" in inspect.signature(vit_model.forward).parameters
            else {}
        )
        self._weights_hash = None
        vit_model.requires_grad_(False)
        self.train(self.training)

    @classmethod
    def load(cls, source=None, local_files_only=None) -> "GuideGenerator":
        """Load from a hub id, a local Hugging Face folder or an official DINOv3 checkpoint file.

        ``source`` defaults through ``resolve_guide_source``. ``local_files_only=None`` follows ``HF_HUB_OFFLINE``.
        Raises GuideNotFoundError when the weights are not found, ValueError when a file cannot be used.
        """
        source = resolve_guide_source(source)
        path = Path(source).expanduser()
        if path.is_file():
            model = _load_checkpoint_file(path)
        elif path.is_dir() or (_HUB_ID.fullmatch(source) and not source.endswith(CHECKPOINT_SUFFIXES)):
            model = _load_pretrained(source, local_files_only)
        else:
            raise GuideNotFoundError(f"No guide weights at {path}: no such file or folder.\n{_how_to_provide()}")
        return cls(model, source)

    @property
    def backbone(self):
        """The Hugging Face ViT itself (also when ``vit`` is a peft wrapper holding LoRA adapters)."""
        get_base_model = getattr(self.vit, "get_base_model", None)
        return get_base_model() if get_base_model is not None else self.vit

    def train(self, mode=True):
        """Set the mode of this module; the ViT stays in eval mode."""
        super().train(mode)
        self.vit.eval()
        return self

    def weights_hash(self) -> str:
        """sha256 of the frozen backbone weights (names, dtypes, shapes, bytes); LoRA adapters are not part of it."""
        if self._weights_hash is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(_frozen_state_dict(self.backbone).items()):
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
            self._weights_hash = digest.hexdigest()
        return self._weights_hash

    def forward(self, images, layers=None):
        """Patch-token grid (B, embed_dim, H / p, W / p) of images (B, 1 or 3, H, W) with values in [0, 1].

        With ``layers`` (0-based block indices), a list of grids, one per block output, each passed through
        the ViT's final norm as ``last_hidden_state`` is.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
            raise ValueError(f"expected float images (B, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}: "
                f"pad or resize it to a multiple of {self.patch_size}"
            )
        pixels = (images.expand(-1, 3, -1, -1) - self.mean) / self.std
        blocks = None if layers is None else [self._block_index(i) for i in layers]
        output = self.backbone(pixel_values=pixels, output_hidden_states=blocks is not None, **self._forward_kwargs)
        if blocks is None:
            return self._grid(output.last_hidden_state, height, width)
        norm = self._final_norm()
        return [self._grid(norm(output.hidden_states[i + 1]), height, width) for i in blocks]

    def _block_index(self, index):
        if not -self.num_layers <= index < self.num_layers:
            raise ValueError(f"layer {index} out of range for a ViT with {self.num_layers} blocks")
        return index % self.num_layers

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


def load_guide(source):
    """``none`` -> None (unguided); otherwise ``GuideGenerator.load(source)`` (default: DINOv3 ViT-S/16)."""
    if source is not None and str(source).lower() == "none":
        return None
    return GuideGenerator.load(source)


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
