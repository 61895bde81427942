"""Shared fixtures: headless Slicer, an oblique test volume, the shared data folder."""

import math
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def headless_slicer():
    """A fresh real MRML scene with Segmentations/Volumes logics, as Slicer's app provides."""
    from slicer_harness import HeadlessSlicer

    app = HeadlessSlicer()
    yield app
    app.close()


def oblique_image(shape=(7, 12, 10), seed=0, dtype=np.int16):
    """A SimpleITK image with non-identity direction, anisotropic spacing and non-zero origin."""
    import SimpleITK as sitk

    arr = np.random.default_rng(seed).integers(-500, 1500, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 1.3, 2.5))
    image.SetOrigin((12.5, -40.25, 77.0))
    a, b = math.radians(23), math.radians(-11)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    image.SetDirection((rz @ rx).flatten().tolist())
    return image


@pytest.fixture
def oblique_volume_file(tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(oblique_image(), str(path))
    return path


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA
