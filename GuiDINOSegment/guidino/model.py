"""GuiDINOModel: frozen guide + TokenBook + gated segmentation network, configured by ModelConfig."""

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .networks import network_spec
from .tokenbook import TokenBook


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; saved as a bundle's ``config.json``."""

    network: str = "wnet"
    in_channels: int = 1
    num_classes: int = 2  # including background; 2 is binary (one sigmoid logit)
    input_size: int = 256
    guided: bool = True  # False: the network alone (the unguided baseline)
    gate_stages: Optional[list] = None  # None: every encoder stage
    widths: Optional[list] = None  # channels per stage; None: the network's default (the authors' setup)
    num_prototypes: int = 16
    lora_rank: int = 0  # 0: no LoRA adapters on the guide
    lora_alpha: int = 16
    segdino_layers: Optional[list] = None  # None: four evenly spaced blocks ending at the last
    normalization: dict = field(default_factory=lambda: {"mode": "percentile", "low": 0.5, "high": 99.5})
    # Where a model refined from a few corrected slices looks (``guidino.corrections.evidence_region``): it
    # trained on crops of that box and segments only there (None: whole slices, any volume).
    region: Optional[dict] = None

    def __post_init__(self):
        for name, minimum in (("in_channels", 1), ("num_classes", 2), ("input_size", 32), ("num_prototypes", 1),
                              ("lora_rank", 0), ("lora_alpha", 1)):
            _check_whole(name, getattr(self, name), minimum)
        for name in ("widths", "gate_stages", "segdino_layers"):
            values = getattr(self, name)
            if values is not None:
                if not isinstance(values, (list, tuple)) or not values:
                    raise ValueError(f"{name} must be a list of whole numbers such as [8, 16, 32], got {values!r}")
                for value in values:
                    _check_whole(name, value, 1 if name == "widths" else 0)
        spec = network_spec(self.network)
        if spec.needs_guide and not self.guided:
            raise ValueError(f"the {self.network} network reads the guide's tokens: it needs a guide")
        if self.num_classes < 2:
            raise ValueError("num_classes counts the background: use 2 for a binary segmentation")
        if self.input_size % 32:
            raise ValueError(f"input_size {self.input_size} must be a multiple of 32")
        check_normalization(self.normalization)

    @property
    def out_channels(self):
        return 1 if self.num_classes == 2 else self.num_classes

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}: the bundle was made by a newer GuiDINO")
        return cls(**data)


class ModelOutput(NamedTuple):
    logits: object  # (B, C, H, W) tensor, or a list of them (deep supervision, training only)
    guide_logits: Optional[torch.Tensor]  # (B, 1, H/16, W/16) or None


class GuiDINOModel(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> segmentation logits and the guide logits."""

    def __init__(self, config, guide=None):
        super().__init__()
        if config.guided and guide is None:
            raise ValueError("a guided model needs a GuideGenerator (or set guided=False for the baseline)")
        self.config = config
        self.guide = guide if config.guided else None
        spec = network_spec(config.network)
        self.network = spec.build(config, self.guide)
        self.layers = spec.guide_layers(config, self.guide)  # the guide blocks SegDINO reads; None: final tokens
        self.tokenbook = TokenBook(guide.embed_dim, config.num_prototypes) if spec.tokenbook and self.guide is not None else None

    def set_output_prior(self, foreground):
        """Start a binary model's output at foreground probability ``foreground`` everywhere (the bias of the
        layers that produce the logits), so that a new model is quiet where it has learned nothing yet."""
        if self.config.out_channels != 1:
            return
        foreground = min(max(float(foreground), 1e-4), 1 - 1e-4)
        with torch.no_grad():
            for layer in self.network.output_layers():
                layer.bias.fill_(math.log(foreground / (1 - foreground)))

    @property
    def guide_is_trainable(self):
        return self.guide is not None and any(p.requires_grad for p in self.guide.parameters())

    def guide_features(self, images):
        """What the frozen guide computes from the images: token grid, or SegDINO's layer grids.

        These depend only on the images while the guide is frozen, so training may cache them.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.guide_is_trainable):
            return self.guide(images, layers=self.layers)

    def forward(self, images, features=None):
        if self.guide is None:
            return ModelOutput(self.network(images), None)
        if features is None:
            features = self.guide_features(images)
        if self.tokenbook is None:  # SegDINO
            return ModelOutput(self.network(features, images.shape[-2:]), None)
        guide_logits = self.tokenbook(features)
        return ModelOutput(self.network(images, torch.sigmoid(guide_logits)), guide_logits)

    @contextmanager
    def _evaluating(self):
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    @torch.no_grad()
    def guide_probabilities(self, images):
        """The guide that gates the network: (B, 1, H/16, W/16) probabilities from the guide and TokenBook."""
        if self.tokenbook is None:
            raise ValueError("only TokenBook-guided models have a guide mask (not unguided or SegDINO models)")
        with self._evaluating():
            return torch.sigmoid(self.tokenbook(self.guide_features(images)))

    @torch.no_grad()
    def predict(self, images, guide=None):
        """Eval-mode probabilities (B, C, H, W) (C = 1 for binary) and guide (B, 1, H, W) or None.

        ``guide``: guide probabilities at the token grid (as from ``guide_probabilities``) to gate
        with instead of running the guide on ``images``.
        """
        with self._evaluating():
            if guide is not None:
                if self.tokenbook is None:
                    raise ValueError("a precomputed guide needs a TokenBook-guided model")
                logits = self.network(images, guide.to(images.dtype))
            else:
                out = self(images)
                logits = out.logits
                guide = None if out.guide_logits is None else torch.sigmoid(out.guide_logits)
        logits = logits.float()
        probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        if guide is not None:
            guide = F.interpolate(guide.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return probs, guide

    def learned_state_dict(self):
        """TokenBook and network weights: what a bundle stores (the guide's base weights are not copied)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("guide.")}


def _check_whole(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def check_normalization(spec):
    """Refuse an intensity normalisation that maps nothing, or maps it upside down (ValueError naming the fix)."""
    if not isinstance(spec, dict):
        raise ValueError(f"normalization must be a mapping with a mode, got {spec!r}")
    mode = spec.get("mode", "percentile")
    try:
        if mode == "window":
            center, width = float(spec["center"]), float(spec["width"])
            if not (math.isfinite(center) and math.isfinite(width) and width > 0):
                raise ValueError(f"a window needs a finite center and a width > 0, got center {center:g}, "
                                 f"width {width:g}: give CENTER,WIDTH such as 40,400")
        elif mode in ("fixed", "percentile"):
            low, high = float(spec.get("low", 0.5)), float(spec.get("high", 99.5))
            upper = 100 if mode == "percentile" else math.inf
            if not (math.isfinite(low) and low < high <= upper and (mode == "fixed" or low >= 0)):
                within = " within 0..100" if mode == "percentile" else ""
                raise ValueError(f"{mode} normalization needs low < high{within}, got low {low:g}, high {high:g}")
        else:
            raise ValueError(f"unknown normalization mode {mode!r}: use percentile, window or fixed")
    except (KeyError, TypeError) as error:
        raise ValueError(f"{mode} normalization is missing or has a non-number {error}") from None
