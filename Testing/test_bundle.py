"""Model bundles: exact round trip, never overwritten, corrupt or mismatched bundles refused clearly."""

import json

import pytest
import torch

from guidino.bundle import BundleError, build_model, load_bundle, read_bundle_config, save_bundle
from guidino.guides import GuideGenerator, GuideNotFoundError
from guidino.guides.hf_vit import make_tiny_guide
from guidino.model import ModelConfig


def _perturbed(model):
    """Move the weights away from their initialisation so a failed load would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith("guide."):
                p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("network,guided,lora", [("wnet", True, False), ("unet", False, False),
                                                 ("segdino", True, False), ("unet", True, True)])
def test_round_trip_gives_identical_predictions(tmp_path, tiny_guide_dir, network, guided, lora):
    torch.manual_seed(0)
    config = ModelConfig(network=network, input_size=64, guided=guided, lora_rank=4 if lora else 0)
    model = _perturbed(build_model(config, str(tiny_guide_dir) if guided else None))
    if lora:
        with torch.no_grad():
            for name, p in model.guide.named_parameters():
                if "lora_B" in name:
                    p.add_(0.05 * torch.randn_like(p))  # LoRA B starts at zero: make the adapters matter
    images = torch.rand(2, 1, 64, 64)
    expected = model.predict(images)

    bundle = save_bundle(model, tmp_path / "bundle", metrics={"dice": 0.5}, provenance={"note": "test"})
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["config.json", "model.safetensors", "metrics.json"] + (["lora"] if lora else []))
    loaded = load_bundle(bundle)
    got = loaded.predict(images)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-6)
    if expected[1] is not None:
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-6)
    assert read_bundle_config(bundle)["provenance"] == {"note": "test"}


def test_never_overwrites(tmp_path, tiny_guide):
    model = build_model(ModelConfig(network="unet", input_size=64), tiny_guide)
    bundle = save_bundle(model, tmp_path / "bundle")
    before = (bundle / "model.safetensors").read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(_perturbed(model), bundle)
    assert (bundle / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no partial folders left behind"


def test_corrupt_and_incomplete_bundles_are_refused(tmp_path, tiny_guide):
    model = build_model(ModelConfig(network="unet", input_size=64), tiny_guide)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nothing")
    bundle = save_bundle(model, tmp_path / "a")
    (bundle / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="model.safetensors is corrupt"):
        load_bundle(bundle, guide=tiny_guide)

    bundle = save_bundle(model, tmp_path / "b")
    (bundle / "config.json").write_text("{ not json")
    with pytest.raises(BundleError, match="config.json is corrupt"):
        load_bundle(bundle)

    bundle = save_bundle(model, tmp_path / "c")
    (bundle / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="model.safetensors is missing"):
        load_bundle(bundle)

    bundle = save_bundle(model, tmp_path / "d")
    config = json.loads((bundle / "config.json").read_text())
    config["model"]["network"] = "wnet"  # weights no longer match the architecture
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(bundle, guide=tiny_guide)


def test_mismatched_or_missing_guide_is_refused(tmp_path, tiny_guide, monkeypatch):
    monkeypatch.delenv("GUIDINO_GUIDE", raising=False)
    bundle = save_bundle(build_model(ModelConfig(network="unet", input_size=64), tiny_guide), tmp_path / "bundle")
    other = GuideGenerator.load(str(make_tiny_guide(tmp_path / "other-guide", seed=1)))
    with pytest.raises(BundleError, match="other weights"):
        load_bundle(bundle, guide=other)
    config = json.loads((bundle / "config.json").read_text())
    config["guide"]["source"] = str(tmp_path / "moved-away")
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(GuideNotFoundError, match="moved-away"):
        load_bundle(bundle)
    assert load_bundle(bundle, guide=tiny_guide.source) is not None  # --guide points at the weights' new place
