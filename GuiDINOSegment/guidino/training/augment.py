"""Batched "strong" 2D augmentation (the authors' recipe) that runs on whatever device the batch is on.

Hand-written rather than MONAI's transforms because those are per-sample and CPU-bound; here a
whole batch is augmented with a few tensor operations on the GPU.

Geometry (flips, 90° rotations, affine, elastic) is composed into one sampling grid per sample
and applied with a single ``grid_sample``: bilinear for images, nearest for labels, zeros (image)
and background (label) outside the image. Then brightness/contrast, Gaussian noise and Gaussian
blur on the images, which are clamped to [0, 1]. Samples that draw no geometric transform are
passed through untouched, so an all-zero-probability config returns the input exactly.
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; the defaults are the authors' "strong" augmentation."""

    flip_p: float = 0.5  # each of horizontal and vertical, independently
    rot90_p: float = 0.25  # by 90°, 180° or 270°; square images only
    elastic_p: float = 0.15
    affine_p: float = 0.2
    scale: tuple = (0.7, 1.4)
    rotate_deg: float = 30.0
    shift: float = 0.1  # fraction of the image size
    shear_deg: float = 10.0
    brightness: float = 0.2  # additive offset, ± this
    contrast: float = 0.2  # factor 1 ± this about the image mean
    intensity_p: float = 0.2
    noise_p: float = 0.15
    noise_std: float = 0.05
    blur_p: float = 0.1
    elastic_grid: int = 5  # control points per axis of the smooth random displacement field
    elastic_magnitude: float = 0.3  # largest control-point shift, as a fraction of their spacing
    blur_sigma: tuple = (0.5, 1.5)  # pixels

    def geometric(self):
        """This config without the intensity changes (brightness/contrast, noise, blur): shapes only."""
        return replace(self, intensity_p=0.0, noise_p=0.0, blur_p=0.0)


class _Sampler:
    """Random draws from ``generator`` (on its own device), delivered on the batch's device."""

    def __init__(self, generator, device):
        self.generator = generator
        self.rng_device = generator.device if generator is not None else device
        self.device = device

    def rand(self, *shape):
        return torch.rand(shape, generator=self.generator, device=self.rng_device).to(self.device)

    def randn(self, *shape):
        return torch.randn(shape, generator=self.generator, device=self.rng_device).to(self.device)

    def uniform(self, n, low, high):
        return low + (high - low) * self.rand(n)

    def chance(self, n, p):
        return self.rand(n) < p


def _matrix(entries):
    """(B, 3, 3) homogeneous matrices from a nested 3x3 list of (B,) tensors or numbers."""
    rows = [torch.stack(torch.broadcast_tensors(*row), dim=-1) for row in entries]
    return torch.stack(rows, dim=-2)


def _sampling_grid(cfg, rs, b, h, w):
    """Per-sample sampling grid (B, H, W, 2) and whether each sample is geometrically changed."""
    one = torch.ones(b, device=rs.device)
    zero = torch.zeros(b, device=rs.device)

    flip_x, flip_y = rs.chance(b, cfg.flip_p), rs.chance(b, cfg.flip_p)
    flip = _matrix([[torch.where(flip_x, -one, one), zero, zero], [zero, torch.where(flip_y, -one, one), zero],
                    [zero, zero, one]])

    rotate90 = rs.chance(b, cfg.rot90_p) & (h == w)
    k = torch.where(rotate90, 1 + (rs.rand(b) * 3).long().clamp(max=2), 0)
    cos_k = torch.tensor([1.0, 0.0, -1.0, 0.0], device=rs.device)[k]
    sin_k = torch.tensor([0.0, 1.0, 0.0, -1.0], device=rs.device)[k]
    rot90 = _matrix([[cos_k, -sin_k, zero], [sin_k, cos_k, zero], [zero, zero, one]])

    affine = rs.chance(b, cfg.affine_p)
    s = torch.where(affine, rs.uniform(b, *cfg.scale), one)
    a = torch.where(affine, rs.uniform(b, -cfg.rotate_deg, cfg.rotate_deg), zero) * (math.pi / 180)
    shear = torch.tan(torch.where(affine, rs.uniform(b, -cfg.shear_deg, cfg.shear_deg), zero) * (math.pi / 180))
    tx = torch.where(affine, rs.uniform(b, -cfg.shift, cfg.shift), zero) * w
    ty = torch.where(affine, rs.uniform(b, -cfg.shift, cfg.shift), zero) * h
    cos_a, sin_a = torch.cos(a), torch.sin(a)
    # translate @ rotate @ shear-x @ scale, multiplied out
    affine_m = _matrix([[s * cos_a, s * (cos_a * shear - sin_a), tx], [s * sin_a, s * (sin_a * shear + cos_a), ty],
                        [zero, zero, one]])

    # Forward maps act on pixel-centred coordinates (pixels, x right, y down); the grid samples
    # the input at the inverse map, expressed in grid_sample's normalised coordinates.
    forward = flip @ rot90 @ affine_m
    # N^-1 M N with N = diag(w/2, h/2, 1), elementwise so that flips and 90° turns stay exact.
    half_size = torch.tensor([w / 2, h / 2, 1.0], device=rs.device)
    theta = (torch.linalg.inv(forward) * (half_size[None, :] / half_size[:, None]))[:, :2]
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)

    elastic = rs.chance(b, cfg.elastic_p)
    g = max(cfg.elastic_grid, 2)
    control = (2 * rs.rand(b, 2, g, g) - 1) * (cfg.elastic_magnitude * 2 / (g - 1))
    displacement = F.interpolate(control, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    grid = grid + torch.where(elastic[:, None, None, None], displacement, 0.0)

    changed = flip_x | flip_y | rotate90 | affine | elastic
    return grid, changed


def _gaussian_blur(x, sigma, max_sigma):
    """Separable Gaussian blur of (B, C, H, W) with one sigma per sample (replicate padding)."""
    b, c, h, w = x.shape
    r = max(1, math.ceil(3 * max_sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def _warp_features(features, grid, changed):
    """Warp coarse feature maps (B, D, h, w) with the image's sampling grid, resampled to (h, w)."""
    if isinstance(features, (list, tuple)):
        return [_warp_features(f, grid, changed) for f in features]
    coarse = F.interpolate(grid.permute(0, 3, 1, 2), size=features.shape[-2:], mode="area").permute(0, 2, 3, 1)
    warped = F.grid_sample(features.float(), coarse, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(changed[:, None, None, None], warped.to(features.dtype), features)


def augment_batch(images, labels, config=AugmentConfig(), generator=None, features=None):
    """Augment ``images`` (B, C, H, W) in [0, 1] and ``labels`` (B, H, W) integer or (B, 1, H, W) binary alike.

    Parameters are drawn per sample from ``generator`` (deterministic for a given seed); returns
    tensors of the input shapes, dtypes and device. ``features``: cached guide features of the
    un-augmented images (a (B, D, h, w) tensor or a list of them); when given they get the same
    geometric transform (intensity changes do not reach them) and are returned third.
    """
    cfg = config
    b, _, h, w = images.shape
    rs = _Sampler(generator, images.device)
    per_sample = (slice(None), None, None, None)

    grid, changed = _sampling_grid(cfg, rs, b, h, w)
    x = images.float()
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = torch.where(changed[per_sample], warped, x)

    y = labels if labels.ndim == 4 else labels[:, None]
    warped = F.grid_sample(y.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    y = torch.where(changed[per_sample], warped.to(y.dtype), y)
    y = y if labels.ndim == 4 else y[:, 0]

    intensity = rs.chance(b, cfg.intensity_p)
    offset = rs.uniform(b, -cfg.brightness, cfg.brightness)[per_sample]
    factor = rs.uniform(b, 1 - cfg.contrast, 1 + cfg.contrast)[per_sample]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(intensity[per_sample], (x - mean) * factor + mean + offset, x)

    noisy = rs.chance(b, cfg.noise_p)
    x = torch.where(noisy[per_sample], x + cfg.noise_std * rs.randn(*x.shape), x)

    blurred = rs.chance(b, cfg.blur_p)
    sigma = rs.uniform(b, *cfg.blur_sigma)
    x = torch.where(blurred[per_sample], _gaussian_blur(x, sigma, max(cfg.blur_sigma)), x)

    x = x.clamp(0.0, 1.0).to(images.dtype)
    if features is None:
        return x, y
    return x, y, _warp_features(features, grid, changed)
