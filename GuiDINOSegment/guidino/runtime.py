"""Process-level settings: the compute device, and the allocator setting that makes CPU inference faster."""

import ctypes
import sys

import torch

from .errors import InputError

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Keep freed heap memory in the process instead of returning it to the system (glibc only).

    PyTorch's CPU kernels allocate and free a full-resolution feature map per layer; by default
    glibc unmaps such blocks at once and the next layer page-faults them back in, which made
    slice-by-slice inference about 1.5x slower (BENCHMARKS.md, section 2). Blocks above
    ``mmap_threshold`` (glibc caps it at 32 MiB) are still returned at once. Returns True when
    applied; False elsewhere (macOS, Windows, musl), where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


def resolve_device(device="auto"):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError("a GPU was asked for but torch sees none; use --device cpu (or auto)")
    return torch.device("cuda" if device == "gpu" else device)


def seed_everything(seed):
    """Seed Python's, numpy's and torch's global generators (CPU and CUDA): call it before building a model,
    so that one seed fixes the initial weights as well as the training that follows."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def preload_monai():
    """Import MONAI's losses and metrics now; returns the seconds it took.

    Importing any part of MONAI loads all of it (about 6 s on a 2-core CPU), which would otherwise fall in a
    refine round's first training step. The worker calls this when idle; the robot protocols before their clock.
    """
    import time

    start = time.perf_counter()
    import monai.losses  # noqa: F401
    import monai.metrics  # noqa: F401

    return time.perf_counter() - start
