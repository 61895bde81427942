"""Shared fixtures: headless Slicer, an oblique test volume, the shared data folder."""

import math
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

try:  # the web app's browser tests run in the web venv (`make test-web`), where trame-slicer is installed
    import trame_slicer  # noqa: F401
except ImportError:
    collect_ignore = ["Web"]


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


@pytest.fixture(scope="session")
def tiny_guide_dir(tmp_path_factory):
    """A tiny random DINOv3 (4 register tokens) saved in Hugging Face layout."""
    from guidino.guides.hf_vit import make_tiny_guide

    return make_tiny_guide(tmp_path_factory.mktemp("guide") / "tiny-dinov3", seed=0)


@pytest.fixture
def tiny_guide(tiny_guide_dir):
    from guidino.guides import GuideGenerator

    return GuideGenerator.load(str(tiny_guide_dir))


@pytest.fixture
def disc_dataset(tmp_path):
    """A tiny 2D dataset in the Kvasir-SEG layout (grey PNG discs, 0/255 masks): train 8, val 3."""
    import SimpleITK as sitk

    root = tmp_path / "discs"
    for split, seed, count in (("train", 0, 8), ("val", 1, 3)):
        images, labels = synthetic_slices(count=count, size=64, seed=seed)
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True)
        for i in range(count):
            sitk.WriteImage(sitk.GetImageFromArray((images[i, 0].numpy() * 255).astype(np.uint8)),
                            str(root / split / "images" / f"case{i}.png"))
            sitk.WriteImage(sitk.GetImageFromArray(labels[i].numpy().astype(np.uint8) * 255),
                            str(root / split / "masks" / f"case{i}.png"))
    return root


def synthetic_slices(count=8, size=64, seed=0):
    """Bright discs of random size and place on a noisy background: (images (N,1,S,S) in [0,1], labels (N,S,S))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, labels = [], []
    for _ in range(count):
        cy, cx = (torch.rand(2, generator=g) * size * 0.5 + size * 0.25).tolist()
        r = float(torch.rand(1, generator=g) * size * 0.15 + size * 0.1)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        image = 0.25 + 0.5 * disc.float() + 0.08 * torch.randn(size, size, generator=g)
        images.append(image.clamp(0, 1)[None])
        labels.append(disc.to(torch.uint8))
    return torch.stack(images), torch.stack(labels)


def synthetic_volume(shape=(12, 48, 40), seed=0):
    """An oblique SimpleITK volume with a bright ellipsoid and its label volume."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = np.array(shape) / 2
    blob = (((k - centre[0]) / (shape[0] * 0.3)) ** 2 + ((j - centre[1]) / (shape[1] * 0.25)) ** 2
            + ((i - centre[2]) / (shape[2] * 0.2)) ** 2) <= 1
    voxels = (200 + 600 * blob + rng.normal(0, 40, shape)).astype(np.int16)
    reference = oblique_image(shape)
    image = sitk.GetImageFromArray(voxels)
    image.CopyInformation(reference)
    labels = sitk.GetImageFromArray(blob.astype(np.uint8))
    labels.CopyInformation(reference)
    return image, labels


@pytest.fixture
def tiny_model(tiny_guide):
    """A small untrained guided UNet (64 px) on the tiny guide."""
    from guidino.model import GuiDINOModel, ModelConfig

    return GuiDINOModel(ModelConfig(network="unet", input_size=64, widths=[8, 16, 32]), tiny_guide).eval()


@pytest.fixture(autouse=True)
def _same_random_state():
    """Every test starts from one random state, whatever ran before it: a model a test builds without a seed of
    its own (a fixture's starting model) is the same in any order the tests run."""
    from guidino.runtime import seed_everything

    seed_everything(0)


@pytest.fixture(scope="session", autouse=True)
def _close_the_shared_worker():
    """The Slicer Logic's GuiDINO worker process, if a test started it, ends with the tests."""
    yield
    import sys

    module = sys.modules.get("GuiDINOSegmentLib.WorkerClient")
    if module is not None and module._shared is not None:
        module._shared.close()
