"""The guide interface: a frozen image encoder that turns a slice into a grid of patch tokens.

A family (Hugging Face ViTs, the official DINOv3 checkpoints, ...) subclasses ``GuideGenerator``:
it says which sources it can load (``accepts`` / ``from_source``), runs its encoder (``encode``),
and declares its normalisation and LoRA targets. Everything else (frozen eval-mode weights, input
checks, the weights hash a bundle records) is here, the same for every family.
"""

import hashlib
import os
from pathlib import Path

import torch

from ..errors import GuideNotFoundError

DEFAULT_GUIDE = "facebook/dinov3-vits16-pretrain-lvd1689m"
GUIDE_ENV = "GUIDINO_GUIDE"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    """The guide to load: ``source`` argument > ``$GUIDINO_GUIDE`` > ``DEFAULT_GUIDE``; a local file or folder as
    an absolute path (bundles record it: a relative one would mean another guide from another folder)."""
    source = str(source or os.environ.get(GUIDE_ENV) or DEFAULT_GUIDE)
    local = Path(source).expanduser()
    return str(local.resolve()) if local.exists() else source


def _frozen_state_dict(model):
    """The backbone's own tensors: LoRA adapter tensors left out, peft's ``base_layer`` wrappers unwrapped."""
    return {
        key.replace(".base_layer.", "."): value
        for key, value in model.state_dict().items()
        if not any(part.startswith("lora_") for part in key.split("."))
    }


class GuideGenerator(torch.nn.Module):
    """Frozen image encoder -> patch-token grid (B, embed_dim, H / patch_size, W / patch_size).

    The encoder always runs in eval mode, whatever ``train()`` is called with (transformers' DINOv3
    applies RoPE coordinate augmentation in train mode, so features would change from call to
    call). Its weights never require gradients; LoRA adapters attached with ``lora.add_lora`` are
    the one trainable part, and they too run in eval mode (no LoRA dropout).

    A family sets ``family`` (its registry name), ``mean`` / ``std`` (the normalisation its weights
    were trained with, applied to images in [0, 1]), ``lora_targets`` (names of the encoder's
    linear layers LoRA may adapt) and implements ``accepts``, ``from_source`` and ``encode``.
    ``pretrained`` is False for random weights (``make_tiny_guide``).
    """

    family = None
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, encoder, source, embed_dim, patch_size, num_layers, pretrained=True):
        super().__init__()
        self.encoder = encoder
        self.source = str(source)
        self.embed_dim = int(embed_dim)
        self.patch_size = int(patch_size)
        self.num_layers = int(num_layers)
        self.pretrained = bool(pretrained)
        self.register_buffer("_mean", torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self._weights_hash = None
        encoder.requires_grad_(False)
        self.train(self.training)

    # -- what a family provides ---------------------------------------------------------------
    @classmethod
    def accepts(cls, source) -> bool:
        """Whether this family loads ``source`` (a path or an id); the registry asks in its order."""
        raise NotImplementedError

    @classmethod
    def from_source(cls, source, local_files_only=None) -> "GuideGenerator":
        """Load the guide from ``source``; GuideNotFoundError when absent, ValueError when unusable."""
        raise NotImplementedError

    @property
    def lora_targets(self) -> tuple:
        """Names of the encoder's linear layers that LoRA adapters may wrap."""
        return ()

    def encode(self, pixels, blocks):
        """Normalised pixels (B, 3, H, W) -> a list of grids: the final tokens when ``blocks`` is None,
        else one grid per block index (0-based, already in range), each as the final tokens are."""
        raise NotImplementedError

    # -- the same for every family --------------------------------------------------------------
    @classmethod
    def load(cls, source=None, family=None, local_files_only=None) -> "GuideGenerator":
        """Load from a hub id, a local folder or a checkpoint file, by the family that accepts it.

        ``source`` defaults through ``resolve_guide_source``; ``family`` (a registry name) skips the
        detection; ``local_files_only=None`` follows ``HF_HUB_OFFLINE``. Raises GuideNotFoundError
        when the weights are not found, ValueError when a file cannot be used.
        """
        from . import family_class, family_for  # the registry imports the families

        source = resolve_guide_source(source)
        family = family or family_for(source)
        if family is None:
            raise GuideNotFoundError(f"No guide weights at {source}: no such file or folder.\n{_how_to_provide()}")
        return family_class(family).from_source(source, local_files_only=local_files_only)

    @property
    def backbone(self):
        """The encoder itself (also when ``encoder`` is a peft wrapper holding LoRA adapters)."""
        get_base_model = getattr(self.encoder, "get_base_model", None)
        return get_base_model() if get_base_model is not None else self.encoder

    def train(self, mode=True):
        """Set the mode of this module; the encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def weights_hash(self) -> str:
        """sha256 of the frozen encoder weights (names, dtypes, shapes, bytes); LoRA adapters are not part of it."""
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
        the encoder's final norm as its last output is.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
            raise ValueError(f"expected float images (B, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}: "
                f"pad or resize it to a multiple of {self.patch_size}"
            )
        pixels = (images.expand(-1, 3, -1, -1) - self._mean) / self._std
        blocks = None if layers is None else [self._block_index(i) for i in layers]
        grids = self.encode(pixels, blocks)
        return grids[0] if blocks is None else grids

    def _block_index(self, index):
        if not -self.num_layers <= index < self.num_layers:
            raise ValueError(f"layer {index} out of range for an encoder with {self.num_layers} blocks")
        return index % self.num_layers
