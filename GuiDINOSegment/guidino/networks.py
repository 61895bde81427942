"""Segmentation networks gated by a GuiDINO guide, and the SegDINO baseline head.

Every network maps an image ``x`` (B, in_channels, H, W) and an optional guide (B, 1, h, w) in
[0, 1], at any resolution (a guide batch of 1 is broadcast), to logits (B, out_channels, H, W).
At each encoder stage listed in ``gate_stages`` (0 = the full-resolution stage) the stage's
output feature map is multiplied by the guide resized bilinearly to that map's size. The image
itself is never gated. With ``guide=None`` a network is the plain, ungated baseline.
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NETWORKS",
    "NetworkSpec",
    "SegDINOHead",
    "UNet",
    "WNet",
    "build_network",
    "count_parameters",
    "deep_supervision_weights",
    "segdino_layers",
]

_ReLU = partial(nn.ReLU, inplace=True)
MAX_DEEP_SUPERVISION_SCALES = 5


def conv_norm_act(in_channels, out_channels, act, kernel_size=3, stride=1):
    """Conv (no bias) -> BatchNorm -> activation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        act(),
    )


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-activation layers; the first one may downsample with ``stride``."""

    def __init__(self, in_channels, out_channels, act=_ReLU, stride=1):
        super().__init__(
            conv_norm_act(in_channels, out_channels, act, stride=stride),
            conv_norm_act(out_channels, out_channels, act),
        )


class UpBlock(nn.Module):
    """x2 transposed-conv upsampling, merge with the skip, then conv-BN-activation layers.

    ``concat=True`` concatenates the skip (U-Net); ``False`` adds it, which needs
    ``skip_channels == out_channels`` and halves the cost of the following conv.
    """

    def __init__(self, in_channels, skip_channels, out_channels, act=_ReLU, concat=True, double=True):
        super().__init__()
        self.concat = concat
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        merged = out_channels + skip_channels if concat else out_channels
        self.conv = DoubleConv(merged, out_channels, act) if double else conv_norm_act(merged, out_channels, act)

    def forward(self, x, skip):
        x = self.up(x)
        return self.conv(torch.cat([x, skip], dim=1) if self.concat else x + skip)


class Decoder(nn.Module):
    """U-Net decoder over encoder features (finest first); returns every level, finest first.

    The last element is the bottleneck itself, so there are ``len(widths)`` levels in all.
    """

    def __init__(self, widths, act=_ReLU, concat=True, double=True):
        super().__init__()
        self.ups = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], widths[i], act, concat, double) for i in reversed(range(len(widths) - 1))
        )

    def forward(self, feats):
        x = feats[-1]
        levels = [x]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            x = up(x, skip)
            levels.append(x)
        return levels[::-1]


def resize(x, size):
    """``x`` resized bilinearly (align_corners=False) to ``size``; unchanged if already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class _GatedEncoderDecoder(nn.Module):
    """Shared machinery: input checks, guide gating of encoder stages, the U-Net decoder.

    Subclasses set ``self.encoder``: one module per stage, stage i > 0 halving the resolution.
    """

    def __init__(self, widths, gate_stages, act, concat=True, double=True):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        if len(self.widths) < 2:
            raise ValueError(f"widths needs at least 2 stages, got {widths}")
        n = len(self.widths)
        stages = range(n) if gate_stages is None else gate_stages
        self.gate_stages = tuple(sorted({int(s) for s in stages}))
        bad = [s for s in self.gate_stages if not 0 <= s < n]
        if bad:
            raise ValueError(f"gate_stages {bad} out of range: this network has stages 0..{n - 1}")
        self.decoder = Decoder(self.widths, act, concat, double)

    @property
    def size_divisor(self):
        """H and W of an input must be multiples of this."""
        return 2 ** (len(self.widths) - 1)

    def _check_inputs(self, x, guide):
        if x.ndim != 4:
            raise ValueError(f"expected x of shape (B, C, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d = self.size_divisor
        if h % d or w % d:
            raise ValueError(
                f"input height and width must be divisible by {d} (2**(len(widths)-1) for "
                f"{len(self.widths)} stages), got {h}x{w}; pad or resize the image"
            )
        if guide is not None and (guide.ndim != 4 or guide.shape[1] != 1 or guide.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"expected guide of shape (B, 1, h, w) with B={x.shape[0]}, got {tuple(guide.shape)}")

    def encode(self, x, guide=None, lateral=None):
        """Encoder feature maps, finest first, gated by the guide; ``lateral[i]`` is added before gating."""
        feats = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if lateral is not None:
                x = x + lateral[i]
            if guide is not None and i in self.gate_stages:
                x = x * resize(guide.to(x.dtype), x.shape[-2:])
            feats.append(x)
        return feats


class UNet(_GatedEncoderDecoder):
    """Ronneberger U-Net (Conv3x3-BN-ReLU pairs, max-pool, transposed-conv up) with guide gating."""

    DEFAULT_WIDTHS = (32, 64, 128, 256, 512)

    def __init__(self, in_channels=3, out_channels=1, widths=DEFAULT_WIDTHS, gate_stages=None):
        super().__init__(widths, gate_stages, _ReLU)
        w = self.widths
        self.encoder = nn.ModuleList(
            [DoubleConv(in_channels, w[0])]
            + [nn.Sequential(nn.MaxPool2d(2), DoubleConv(w[i - 1], w[i])) for i in range(1, len(w))]
        )
        self.head = nn.Conv2d(w[0], out_channels, 1)

    def output_layers(self):
        """The convolutions that produce the logits (``set_output_prior`` sets their bias)."""
        return [self.head]

    def forward(self, x, guide=None):
        self._check_inputs(x, guide)
        return self.head(self.decoder(self.encode(x, guide))[0])


class PoolFormerBlock(nn.Module):
    """PoolFormer block: token mixer avgpool3x3(x) - x and a 1x1-conv MLP, each after GroupNorm(1, C)."""

    def __init__(self, dim, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim * mlp_ratio, 1), nn.GELU(), nn.Conv2d(dim * mlp_ratio, dim, 1))

    def forward(self, x):
        y = self.norm1(x)
        x = x + (self.pool(y) - y)
        return x + self.mlp(self.norm2(x))


class GlobalBranch(nn.Module):
    """Light PoolFormer pyramid, one stage per resolution; returns its features, finest first."""

    def __init__(self, in_channels, widths):
        super().__init__()
        ins = (in_channels,) + tuple(widths[:-1])
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, w, 3, stride=1 if i == 0 else 2, padding=1), PoolFormerBlock(w))
            for i, (c, w) in enumerate(zip(ins, widths))
        )

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class WNet(_GatedEncoderDecoder):
    """nnWNet-style network with guide gating.

    A conv encoder (two conv-BN-GELU per stage, strided-conv downsampling) and a parallel light
    global branch of PoolFormer blocks; at every scale the global features, projected by a 1x1
    conv, are added to the conv encoder stage's output (before gating). The decoder adds the
    transposed-conv upsampled features to the skip and applies one conv-BN-GELU per level, a
    third of the cost of a concatenating two-conv decoder (for CPU inference).
    In training with ``deep_supervision`` the forward returns a list of logits at up to 5 scales,
    full resolution first, each at its own resolution; otherwise the full-resolution logits.
    The deep-supervision heads always exist, so state dicts do not depend on the flag.
    """

    DEFAULT_WIDTHS = (16, 32, 64, 128, 256)

    def __init__(
        self,
        in_channels=3,
        out_channels=1,
        widths=DEFAULT_WIDTHS,
        global_widths=None,
        gate_stages=None,
        deep_supervision=True,
    ):
        super().__init__(widths, gate_stages, nn.GELU, concat=False, double=False)
        w = self.widths
        global_widths = global_branch_widths(w) if global_widths is None else tuple(global_widths)
        if len(global_widths) != len(w):
            raise ValueError(f"global_widths {global_widths} must have one width per stage of widths {w}")
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else w[i - 1], w[i], nn.GELU, stride=1 if i == 0 else 2)
            for i in range(len(w))
        )
        self.global_branch = GlobalBranch(in_channels, global_widths)
        self.fuse = nn.ModuleList(nn.Conv2d(g, c, 1) for g, c in zip(global_widths, w))
        n_heads = min(MAX_DEEP_SUPERVISION_SCALES, len(w))
        self.heads = nn.ModuleList(nn.Conv2d(w[i], out_channels, 1) for i in range(n_heads))

    def output_layers(self):
        return list(self.heads)

    def forward(self, x, guide=None):
        self._check_inputs(x, guide)
        lateral = [fuse(g) for fuse, g in zip(self.fuse, self.global_branch(x))]
        levels = self.decoder(self.encode(x, guide, lateral))
        if self.training and self.deep_supervision:
            return [head(level) for head, level in zip(self.heads, levels)]
        return self.heads[0](levels[0])


def global_branch_widths(widths):
    """The light global branch's widths for conv widths ``widths``: half of each (at least 4)."""
    return tuple(max(4, w // 2) for w in widths)


def deep_supervision_weights(n):
    """Loss weights for ``n`` deep-supervision outputs (full resolution first): 2^-i, summing to 1."""
    if n < 1:
        raise ValueError(f"need at least one output, got n={n}")
    weights = [2.0**-i for i in range(n)]
    total = sum(weights)
    return [w / total for w in weights]


class SegDINOHead(nn.Module):
    """SegDINO decoder: per-layer 1x1 conv-BN-ReLU, concat, conv3x3-BN-ReLU, 1x1 conv, bilinear up.

    ``forward(grids, out_size)`` takes ``num_layers`` ViT patch grids (B, embed_dim, h, w) and
    returns logits (B, out_channels, *out_size).
    """

    def __init__(self, embed_dim, num_layers=4, out_channels=1, hidden=128):
        super().__init__()
        self.num_layers = num_layers
        self.proj = nn.ModuleList(conv_norm_act(embed_dim, hidden, _ReLU, kernel_size=1) for _ in range(num_layers))
        self.fuse = conv_norm_act(num_layers * hidden, hidden, _ReLU)
        self.classifier = nn.Conv2d(hidden, out_channels, 1)

    def output_layers(self):
        return [self.classifier]

    def forward(self, grids, out_size):
        if len(grids) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} feature grids, got {len(grids)}")
        size = grids[0].shape[-2:]
        feats = torch.cat([resize(proj(g), size) for proj, g in zip(self.proj, grids)], dim=1)
        return resize(self.classifier(self.fuse(feats)), out_size)


def segdino_layers(num_layers) -> list[int]:
    """The four ViT blocks SegDINO reads (0-based): ViT-S/B [2, 5, 8, 11], ViT-L [4, 11, 17, 23], else evenly spaced."""
    if num_layers == 24:
        return [4, 11, 17, 23]  # DINOv3's own choice for ViT-L, not the even spacing
    if num_layers < 4:
        return list(range(num_layers))
    return [round((i + 1) * num_layers / 4) - 1 for i in range(4)]


@dataclass(frozen=True)
class NetworkSpec:
    """One entry of the network registry.

    ``build(config, guide)`` returns the network for a ``ModelConfig`` (``guide``: the model's
    GuideGenerator, or None for the unguided baseline). ``cls`` is the gated network class
    (``forward(x, guide=None)``; None for SegDINO), whose ``DEFAULT_WIDTHS`` are the default
    channels per stage. ``tokenbook``: a TokenBook guide mask gates it; otherwise it reads the
    guide's tokens itself (SegDINO). ``needs_guide``: it cannot run without a guide.
    """

    description: str
    build: Callable
    cls: Optional[type] = None
    tokenbook: bool = True
    needs_guide: bool = False

    @property
    def widths(self):
        return getattr(self.cls, "DEFAULT_WIDTHS", None)

    def guide_layers(self, config, guide):
        """The guide blocks the network reads (None: the guide's final tokens, through the TokenBook)."""
        if self.tokenbook or guide is None:
            return None
        return list(config.segdino_layers or segdino_layers(guide.num_layers))


def _build_gated(config, guide):
    return build_network(config.network, config.in_channels, config.out_channels, config.gate_stages,
                         **({"widths": tuple(config.widths)} if config.widths else {}))


def _build_segdino(config, guide):
    return SegDINOHead(guide.embed_dim, len(NETWORKS["segdino"].guide_layers(config, guide)), config.out_channels)


# A new network: its class above and one line here (ModelConfig, the model and the CLI read this).
NETWORKS = {
    "unet": NetworkSpec("U-Net (Conv-BN-ReLU pairs), guide-gated", _build_gated, UNet),
    "wnet": NetworkSpec("nnWNet-style (conv encoder + PoolFormer global branch), guide-gated", _build_gated, WNet),
    "segdino": NetworkSpec("SegDINO baseline: a light head on four DINOv3 layers", _build_segdino,
                           tokenbook=False, needs_guide=True),
}


def network_spec(name):
    """The registry entry of network ``name``; a clear error naming the choices otherwise."""
    spec = NETWORKS.get(str(name).lower())
    if spec is None:
        raise ValueError(f"unknown network {name!r}: choose one of {', '.join(NETWORKS)}")
    return spec


def build_network(name, in_channels, out_channels, gate_stages=None, **kwargs):
    """A gated segmentation network of the registry by name; ``kwargs`` go to its constructor."""
    spec = network_spec(name)
    if spec.cls is None:
        gated = ", ".join(n for n, s in NETWORKS.items() if s.cls is not None)
        raise ValueError(f"{name!r} is not a gated network; gated networks: {gated}")
    return spec.cls(in_channels=in_channels, out_channels=out_channels, gate_stages=gate_stages, **kwargs)


def count_parameters(module):
    """(trainable, total) number of parameters of ``module``."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
