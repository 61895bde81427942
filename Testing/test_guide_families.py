"""Guide families: the registry picks the family that loads a source, bundles record it, and a new
family is one file plus one registry line (a toy convolutional encoder here, not a ViT)."""

import json
import sys
import textwrap

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from guidino import guides
from guidino.bundle import build_model, load_bundle, read_bundle_config, save_bundle
from guidino.guides import GuideGenerator, family_for
from guidino.guides.dinov3_official import OfficialDINOv3Guide
from guidino.guides.hf_vit import HuggingFaceViTGuide
from guidino.lora import add_lora, has_lora
from guidino.model import ModelConfig

TOY_FAMILY = '''
    """A toy guide family: a strided convolution as the encoder, with its own normalisation and LoRA target."""

    import torch

    from guidino.guides.base import GuideGenerator


    class ToyGuide(GuideGenerator):
        family = "toy"
        mean = (0.5, 0.5, 0.5)
        std = (0.25, 0.25, 0.25)

        def __init__(self, source):
            torch.manual_seed(len(source))
            encoder = torch.nn.Module()
            encoder.embed = torch.nn.Conv2d(3, 8, 8, stride=8)
            encoder.proj = torch.nn.Linear(8, 8)
            super().__init__(encoder, source, embed_dim=8, patch_size=8, num_layers=1, pretrained=False)

        @property
        def lora_targets(self):
            return ("proj",)

        @classmethod
        def accepts(cls, source):
            return str(source).startswith("toy:")

        @classmethod
        def from_source(cls, source, local_files_only=None):
            return cls(source)

        def encode(self, pixels, blocks):
            encoder = self.backbone
            tokens = encoder.proj(encoder.embed(pixels).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return [tokens for _ in (blocks or [None])]
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    (tmp_path / "toy_guide.py").write_text(textwrap.dedent(TOY_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(guides.FAMILIES, "toy", "toy_guide:ToyGuide")  # the one registry line
    yield "toy"
    sys.modules.pop("toy_guide", None)


def test_the_registry_picks_the_family_of_each_source(tmp_path, tiny_guide_dir):
    checkpoint = tmp_path / "dinov3_vits16_pretrain.pth"
    checkpoint.write_bytes(b"")
    assert family_for(str(checkpoint)) == "dinov3-official"
    assert family_for(str(tiny_guide_dir)) == "hf-vit"
    assert family_for("facebook/dinov3-vits16-pretrain-lvd1689m") == "hf-vit"  # a hub id
    assert family_for(str(tmp_path / "missing.pth")) is None
    assert GuideGenerator.load(str(tiny_guide_dir)).family == "hf-vit"
    with pytest.raises(ValueError, match="unknown guide family 'sam'.*dinov3-official, hf-vit"):
        GuideGenerator.load(str(tiny_guide_dir), family="sam")


def test_a_new_family_is_one_file_and_one_registry_line(toy_family, tmp_path):
    guide = GuideGenerator.load("toy:weights-v1")
    assert type(guide).__name__ == "ToyGuide" and guide.family == "toy"
    images = torch.rand(2, 1, 64, 64)
    assert guide(images).shape == (2, 8, 8, 8)  # the interface: (B, embed_dim, H / p, W / p)
    pixels = (images.expand(-1, 3, -1, -1) - 0.5) / 0.25  # the family's own normalisation
    expected = guide.encoder.proj(guide.encoder.embed(pixels).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(guide(images), expected)
    assert not any(p.requires_grad for p in guide.parameters()) and not guide.encoder.training

    model = build_model(ModelConfig(network="unet", input_size=64, widths=[8, 16, 32], lora_rank=2), guide)
    assert has_lora(guide)  # LoRA on the family's own target
    with torch.no_grad():
        for name, parameter in model.guide.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.1)  # LoRA B starts at zero: make the adapters matter
    bundle = save_bundle(model, tmp_path / "toy-bundle")
    recorded = read_bundle_config(bundle)["guide"]
    assert (recorded["family"], recorded["source"], recorded["pretrained"]) == ("toy", "toy:weights-v1", False)
    loaded = load_bundle(bundle)
    assert loaded.guide.family == "toy" and has_lora(loaded.guide)
    torch.testing.assert_close(loaded.predict(images)[0], model.predict(images)[0])


def test_bundles_record_the_family_and_old_bundles_still_load(tmp_path, tiny_guide_dir):
    model = build_model(ModelConfig(network="unet", input_size=64, widths=[8, 16, 32]), str(tiny_guide_dir))
    bundle = save_bundle(model, tmp_path / "bundle")
    config = json.loads((bundle / "config.json").read_text())
    assert config["guide"]["family"] == "hf-vit"
    del config["guide"]["family"]  # as bundles written before families were recorded
    (bundle / "config.json").write_text(json.dumps(config))
    loaded = load_bundle(bundle)
    assert loaded.guide.family == "hf-vit"
    images = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(loaded.predict(images)[0], model.predict(images)[0])


def test_each_family_declares_its_lora_targets(tiny_guide_dir):
    dinov3 = GuideGenerator.load(str(tiny_guide_dir))
    assert dinov3.lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    dinov2 = HuggingFaceViTGuide(Dinov2Model(config), "dinov2")
    assert dinov2.lora_targets == dinov3.lora_targets  # transformers' ViTs share the attention layout
    add_lora(dinov2, rank=2)
    trainable = [n for n, p in dinov2.named_parameters() if p.requires_grad]
    assert has_lora(dinov2) and len(trainable) == 2 * 4 * 2 and all("lora_" in n for n in trainable)


def test_official_checkpoints_are_their_own_family():
    assert OfficialDINOv3Guide.family == "dinov3-official"
    assert issubclass(OfficialDINOv3Guide, HuggingFaceViTGuide)  # converted, then run as a Hugging Face ViT
