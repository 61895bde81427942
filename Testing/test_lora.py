"""LoRA on the guide: only adapters train, peft's files round-trip exactly, bad adapter files are refused."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from guidino.guides import GuideGenerator
from guidino.guides.hf_vit import make_tiny_guide
from guidino.lora import add_lora, has_lora, load_lora, save_lora

ADAPTERS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_guide(tmp_path_factory.mktemp("tiny") / "guide")


@pytest.fixture
def guide(tiny_dir):
    return GuideGenerator.load(str(tiny_dir))


@pytest.fixture(scope="module")
def image():
    return torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(0))


def _train_step(guide, image):
    optimizer = torch.optim.AdamW([p for p in guide.parameters() if p.requires_grad], lr=1e-2)
    guide.train()
    guide(image).square().mean().backward()
    optimizer.step()
    guide.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir, image):
    """A guide with LoRA adapters after one training step, its adapters saved, and its output."""
    guide = add_lora(GuideGenerator.load(str(tiny_dir)), rank=4, alpha=8)
    _train_step(guide, image)
    lora_dir = save_lora(guide, tmp_path_factory.mktemp("lora") / "adapters")
    with torch.no_grad():
        return guide, lora_dir, guide(image)


def test_only_adapters_trainable_and_backbone_stays_in_eval(guide, image):
    before = guide(image)
    assert add_lora(guide, rank=4) is guide and has_lora(guide)
    trainable = [name for name, p in guide.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert guide.lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")  # DINOv3's attention
    assert len(trainable) == 2 * len(guide.lora_targets) * guide.num_layers
    guide.train()
    assert not any(module.training for module in guide.encoder.modules())
    torch.testing.assert_close(guide(image), before)  # lora_B starts at zero
    with pytest.raises(ValueError, match="already"):
        add_lora(guide)


def test_training_step_changes_outputs(trained, tiny_dir, image):
    _, _, output = trained
    assert not torch.allclose(output, GuideGenerator.load(str(tiny_dir))(image))


def test_save_then_strict_load_into_fresh_guide(trained, tiny_dir, image):
    _, lora_dir, output = trained
    assert (lora_dir / "adapter_config.json").is_file() and (lora_dir / ADAPTERS).is_file()
    fresh = load_lora(GuideGenerator.load(str(tiny_dir)), lora_dir)
    assert has_lora(fresh)
    torch.testing.assert_close(fresh(image), output, rtol=0, atol=0)
    assert any(p.requires_grad for p in fresh.parameters())


def _renamed(weights):
    key = next(iter(weights))
    weights[key.replace(".lora_A.", ".lora_a.").replace(".lora_B.", ".lora_b.")] = weights.pop(key)


def _dropped(weights):
    weights.pop(sorted(weights)[-1])


def _prefix_stripped(weights):  # the reference code's replace("model.", "") bug
    for key in list(weights):
        weights[key.replace("model.", "")] = weights.pop(key)


def _reshaped(weights):
    key = next(key for key in weights if ".lora_A." in key)
    weights[key] = weights[key][:2]


@pytest.mark.parametrize("damage", [_renamed, _dropped, _prefix_stripped, _reshaped])
def test_mismatched_adapter_file_refused(tmp_path, trained, tiny_dir, damage):
    _, lora_dir, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((lora_dir / "adapter_config.json").read_text())
    weights = load_file(lora_dir / ADAPTERS)
    damage(weights)
    save_file(weights, broken / ADAPTERS)
    guide = GuideGenerator.load(str(tiny_dir))
    with pytest.raises(ValueError, match=f"LoRA adapters in {broken}"):
        load_lora(guide, broken)
    assert not has_lora(guide)
    assert not any(p.requires_grad for p in guide.parameters())


def test_missing_adapter_dir_refused(tmp_path, guide):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_lora(guide, tmp_path / "nothing")


def test_weights_hash_ignores_adapters(trained, tiny_dir):
    lora_guide, _, _ = trained
    assert lora_guide.weights_hash() == GuideGenerator.load(str(tiny_dir)).weights_hash()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(targets=("q_proj", "qkv")), r"\['qkv'\].*o_proj"),
        (dict(targets=()), "none"),
        (dict(dropout=0.1), "eval mode"),
    ],
)
def test_bad_settings_refused(guide, kwargs, message):
    with pytest.raises(ValueError, match=message):
        add_lora(guide, **kwargs)
    assert not has_lora(guide)


def test_save_without_adapters_refused(tmp_path, guide):
    with pytest.raises(ValueError, match="no LoRA"):
        save_lora(guide, tmp_path)
