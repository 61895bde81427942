"""The guide generator: patch grid order, frozen eval-mode backbone, every way of loading weights."""

import pytest
import torch
from transformers import (
    DINOv3ViTConfig,
    DINOv3ViTModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from guidino.guides import (
    DEFAULT_GUIDE,
    GUIDE_ENV,
    IMAGENET_MEAN,
    IMAGENET_STD,
    GuideGenerator,
    GuideNotFoundError,
    resolve_guide_source,
)
from guidino.guides.dinov3_conversion import convert_official_state_dict
from guidino.guides.hf_vit import HuggingFaceViTGuide, make_tiny_guide
from guidino.networks import segdino_layers

HINTS = ("--guide", GUIDE_ENV, "hf auth login")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_guide(tmp_path_factory.mktemp("tiny") / "guide")


@pytest.fixture(scope="module")
def guide(tiny_dir):
    """Shared by the tests that leave it unchanged."""
    return GuideGenerator.load(str(tiny_dir))


def _seeded(factory, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _dinov2(registers):
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=16)
    if registers:
        return _seeded(lambda: Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **common)))
    return _seeded(lambda: Dinov2Model(Dinov2Config(**common)))


def _images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model", ["dinov3", "dinov2_registers", "dinov2"])
def test_patch_grid_is_pinned(tiny_dir, model):
    guide = (
        GuideGenerator.load(str(tiny_dir))
        if model == "dinov3"
        else HuggingFaceViTGuide(_dinov2(registers=model == "dinov2_registers"), model)
    )
    image = _images(1, 3, 64, 96)  # a 4 x 6 patch grid: non-square pins raster order
    patches = [(2, 4), (3, 1), (0, 5)]
    batch = image.repeat(1 + len(patches), 1, 1, 1)
    for n, (row, col) in enumerate(patches, start=1):
        window = batch[n, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16]
        window.copy_(1 - window)
    grids = guide(batch)
    for n, (row, col) in enumerate(patches, start=1):
        change = (grids[n] - grids[0]).norm(dim=0)
        assert change.shape == (4, 6)
        assert divmod(int(change.argmax()), 6) == (row, col)


@pytest.mark.parametrize("height, width", [(16, 16), (64, 96), (80, 32)])
def test_output_shape_grey_and_rgb(guide, height, width):
    grey = _images(2, 1, height, width)
    grids = guide(torch.cat([grey.repeat(1, 3, 1, 1), _images(1, 3, height, width)]))
    assert grids.shape == (3, guide.embed_dim, height // 16, width // 16)
    torch.testing.assert_close(guide(grey), grids[:2])


def test_imagenet_normalisation_and_token_slicing(tiny_dir, guide):
    model = DINOv3ViTModel.from_pretrained(tiny_dir).eval()
    image = _images(2, 3, 32, 48)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    tokens = model(pixel_values=(image - mean) / std).last_hidden_state
    patch_tokens = tokens[:, 1 + 4 :]  # CLS, 4 registers, then the 2 x 3 patches in raster order
    expected = patch_tokens.reshape(2, 2, 3, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(guide(image), expected)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 3, 60, 64), "60x64 is not a multiple of the patch size 16"),
        ((1, 1, 64, 40), "64x40 is not a multiple of the patch size 16"),
        ((1, 2, 64, 64), "expected float images"),
        ((3, 64, 64), "expected float images"),
    ],
)
def test_bad_input_shape_raises(guide, shape, message):
    with pytest.raises(ValueError, match=message):
        guide(torch.rand(*shape))


def test_integer_images_refused(guide):
    with pytest.raises(ValueError, match="float"):
        guide(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_backbone_frozen_and_in_eval_under_a_training_parent(tiny_dir):
    guide = GuideGenerator.load(str(tiny_dir))
    parent = torch.nn.ModuleDict({"guide": guide, "head": torch.nn.Conv2d(64, 1, 1)})
    parent.train()
    assert guide.training and parent["head"].training
    assert not any(module.training for module in guide.encoder.modules())
    assert not any(p.requires_grad for p in guide.parameters())
    image = _images(1, 3, 64, 64)
    first = guide(image)
    torch.testing.assert_close(guide(image), first, rtol=0, atol=0)
    assert not first.requires_grad

    guide.encoder.train()  # what the override prevents: RoPE augmentation makes features random
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        assert not torch.allclose(
            guide.backbone(pixel_values=image).last_hidden_state, guide.backbone(pixel_values=image).last_hidden_state
        )


def test_intermediate_layers(guide):
    image = _images(2, 1, 32, 64)
    grids = guide(image, layers=[0, 1, 3])
    assert len(grids) == 3
    assert all(grid.shape == (2, 64, 2, 4) for grid in grids)
    assert not torch.allclose(grids[0], grids[1])
    torch.testing.assert_close(grids[-1], guide(image))  # block 3 is the last one: the final norm applies to all
    assert len(guide(image, layers=segdino_layers(guide.num_layers))) == 4
    with pytest.raises(ValueError, match="out of range"):
        guide(image, layers=[4])


def test_segdino_layers():
    assert segdino_layers(12) == [2, 5, 8, 11]
    assert segdino_layers(24) == [4, 11, 17, 23]
    assert segdino_layers(4) == [0, 1, 2, 3]
    assert segdino_layers(40) == [9, 19, 29, 39]
    assert segdino_layers(2) == [0, 1]


def test_load_from_hf_folder_records_source_and_shape(tiny_dir):
    guide = GuideGenerator.load(tiny_dir)
    assert guide.source == str(tiny_dir)
    assert (guide.embed_dim, guide.patch_size, guide.num_register_tokens, guide.num_layers) == (64, 16, 4, 4)
    assert not guide.pretrained  # make_tiny_guide's random weights say so


def test_source_resolution(monkeypatch, tiny_dir):
    monkeypatch.delenv(GUIDE_ENV, raising=False)
    assert resolve_guide_source() == DEFAULT_GUIDE
    monkeypatch.setenv(GUIDE_ENV, str(tiny_dir))
    assert resolve_guide_source() == str(tiny_dir)
    assert resolve_guide_source("other/model") == "other/model"
    assert GuideGenerator.load().source == str(tiny_dir)


def test_weights_hash(tmp_path, tiny_dir, guide):
    again = GuideGenerator.load(tiny_dir)
    assert len(guide.weights_hash()) == 64
    assert guide.weights_hash() == again.weights_hash()
    guide.backbone.save_pretrained(tmp_path / "resaved")
    resaved = GuideGenerator.load(tmp_path / "resaved")
    assert resaved.weights_hash() == guide.weights_hash()
    assert not resaved.pretrained
    other = GuideGenerator.load(make_tiny_guide(tmp_path / "other", seed=1))
    assert other.weights_hash() != guide.weights_hash()


# --- official DINOv3 checkpoints (facebookresearch/dinov3 key names) --------------------------------------


def _to_official(model):
    """The inverse of the conversion, written from the official layout: fused qkv with a masked k bias, etc."""
    config, hf = model.config, model.state_dict()
    dim, head_dim = config.hidden_size, config.hidden_size // config.num_attention_heads
    official = {
        "cls_token": hf["embeddings.cls_token"],
        "mask_token": hf["embeddings.mask_token"].reshape(1, dim),
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.bias"],
        "rope_embed.periods": config.rope_theta ** (2 * torch.arange(head_dim // 4) / (head_dim // 2)),
        "norm.weight": hf["norm.weight"],
        "norm.bias": hf["norm.bias"],
    }
    if config.num_register_tokens:
        official["storage_tokens"] = hf["embeddings.register_tokens"]
    mlp = (
        {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"}
        if config.use_gated_mlp
        else {"up_proj": "fc1", "down_proj": "fc2"}
    )
    for i in range(config.num_hidden_layers):
        block, layer = f"blocks.{i}.", f"model.layer.{i}."
        attention = layer + "attention."
        official[block + "attn.qkv.weight"] = torch.cat([hf[f"{attention}{p}_proj.weight"] for p in "qkv"])
        if config.query_bias:
            q_bias = hf[attention + "q_proj.bias"]
            official[block + "attn.qkv.bias"] = torch.cat(
                [q_bias, torch.randn_like(q_bias), hf[attention + "v_proj.bias"]]
            )
            official[block + "attn.qkv.bias_mask"] = torch.cat(
                [torch.ones_like(q_bias), torch.zeros_like(q_bias), torch.ones_like(q_bias)]
            )
        official[block + "attn.proj.weight"] = hf[attention + "o_proj.weight"]
        official[block + "attn.proj.bias"] = hf[attention + "o_proj.bias"]
        for norm in ("norm1", "norm2"):
            official[f"{block}{norm}.weight"] = hf[f"{layer}{norm}.weight"]
            official[f"{block}{norm}.bias"] = hf[f"{layer}{norm}.bias"]
        official[block + "ls1.gamma"] = hf[layer + "layer_scale1.lambda1"]
        official[block + "ls2.gamma"] = hf[layer + "layer_scale2.lambda1"]
        for hf_name, official_name in mlp.items():
            official[f"{block}mlp.{official_name}.weight"] = hf[f"{layer}mlp.{hf_name}.weight"]
            official[f"{block}mlp.{official_name}.bias"] = hf[f"{layer}mlp.{hf_name}.bias"]
    return official


@pytest.mark.parametrize(
    "variant",
    [
        dict(num_register_tokens=4),
        dict(num_register_tokens=0, use_gated_mlp=True, hidden_act="silu", num_attention_heads=4),
    ],
    ids=["vit_registers", "swiglu_no_registers"],
)
def test_official_pth_gives_the_hf_model_outputs(tmp_path, variant):
    base = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=2)
    config = DINOv3ViTConfig(**{**base, **variant})
    model = _seeded(lambda: DINOv3ViTModel(config)).eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        for parameter in model.parameters():  # no zero biases or unit scales: a swapped tensor must show
            parameter.add_(0.1 * torch.randn_like(parameter))
    path = tmp_path / "dinov3_tiny_pretrain.pth"
    torch.save(_to_official(model), path)

    loaded = GuideGenerator.load(str(path))
    reference = HuggingFaceViTGuide(model, "hf")
    assert loaded.source == str(path) and loaded.pretrained
    assert loaded.num_register_tokens == config.num_register_tokens
    image = _images(2, 3, 48, 32)
    torch.testing.assert_close(loaded(image), reference(image))
    torch.testing.assert_close(loaded(image, layers=[0])[0], reference(image, layers=[0])[0])
    assert loaded.weights_hash() == reference.weights_hash()


@pytest.mark.parametrize(
    "name, shape",
    [
        ("ViT-S/16", dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6)),
        ("ViT-L/16", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)),
        (
            "ViT-7B/16",
            dict(
                hidden_size=4096,
                intermediate_size=8192,
                num_hidden_layers=40,
                num_attention_heads=32,
                use_gated_mlp=True,
                hidden_act="silu",
                query_bias=False,
                value_bias=False,
            ),
        ),
    ],
)
def test_official_config_inferred_from_shapes(name, shape):
    config = DINOv3ViTConfig(num_register_tokens=4, **shape)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = DINOv3ViTModel(config)
    inferred, converted = convert_official_state_dict(_to_official(model))
    for key, value in shape.items():
        assert getattr(inferred, key) == value, (name, key)
    assert (inferred.num_register_tokens, inferred.patch_size, inferred.key_bias) == (4, 16, False)
    assert inferred.rope_theta == pytest.approx(100.0, rel=1e-5)
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    assert {key: tensor.shape for key, tensor in converted.items()} == expected


def test_official_checkpoint_with_unknown_keys_refused(tmp_path):
    model = _seeded(
        lambda: DINOv3ViTModel(
            DINOv3ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
        )
    )
    official = _to_official(model)
    official["blocks.0.attn.extra.weight"] = torch.zeros(2)
    path = tmp_path / "odd.pth"
    torch.save(official, path)
    with pytest.raises(ValueError, match=r"odd\.pth.*blocks\.0\.attn\.extra\.weight"):
        GuideGenerator.load(str(path))


@pytest.mark.parametrize("content", [b"definitely not a checkpoint", "not_a_dict", "wrong_keys"])
def test_corrupt_checkpoint_named_in_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    if content == "not_a_dict":
        torch.save([torch.zeros(3)], path)
    elif content == "wrong_keys":
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.pth"):
        GuideGenerator.load(str(path))


def test_corrupt_hf_folder_named_in_error(tmp_path, tiny_dir):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_dir / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="broken"):
        GuideGenerator.load(folder)


@pytest.mark.parametrize("kind", ["missing_file", "missing_folder", "folder_without_config"])
def test_missing_weights_raise_not_found_with_hints(tmp_path, kind):
    source = tmp_path / ("dinov3.pth" if kind == "missing_file" else "guide")
    if kind == "folder_without_config":
        source.mkdir()
    with pytest.raises(GuideNotFoundError) as error:
        GuideGenerator.load(str(source))
    assert str(source) in str(error.value)
    assert all(hint in str(error.value) for hint in HINTS)


def test_hub_id_offline_raises_not_found_with_hints(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GuideNotFoundError) as error:
        GuideGenerator.load("guidino-tests/no-such-guide")
    message = str(error.value)
    assert "guidino-tests/no-such-guide" in message and "cache" in message
    assert all(hint in message for hint in HINTS)


def test_dinov2_through_the_same_class(tmp_path):
    for registers in (False, True):
        model = _dinov2(registers)
        model.save_pretrained(tmp_path / str(registers))
        guide = GuideGenerator.load(tmp_path / str(registers))
        assert type(guide.backbone) is type(model) and guide.pretrained
        assert guide.num_register_tokens == (4 if registers else 0)
        image = _images(2, 1, 64, 96)
        assert guide(image).shape == (2, 32, 4, 6)
        grids = guide(image, layers=[0, 1])
        assert [grid.shape for grid in grids] == [(2, 32, 4, 6)] * 2
        torch.testing.assert_close(grids[1], guide(image))
        assert not any(p.requires_grad for p in guide.parameters())


def test_behind_a_proxy_the_hub_is_tried_even_when_its_name_does_not_resolve_here(monkeypatch):
    """Where only the proxy resolves names, the DNS check alone would force offline mode: the proxy the environment
    names is honoured (its request then says whether it got through); no_proxy for the hub brings the check back."""
    import socket

    from guidino.guides import hf_vit

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no name resolution here")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not hf_vit._hub_reachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hf_vit._hub_reachable()
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    assert not hf_vit._hub_reachable()
