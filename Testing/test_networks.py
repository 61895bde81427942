"""Gated segmentation networks: shapes, where the guide acts, errors, and that they can learn."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from guidino.networks import (
    PoolFormerBlock,
    SegDINOHead,
    UNet,
    WNet,
    build_network,
    count_parameters,
    deep_supervision_weights,
)

SMALL = {"unet": {"widths": (8, 16, 32, 64)}, "wnet": {"widths": (8, 16, 32, 64), "global_widths": (4, 8, 8, 16)}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one thread is faster, and steady when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(name, **kwargs):
    """A small network in eval mode, with BatchNorm statistics from a few batches of noise."""
    torch.manual_seed(0)
    net = build_network(name, 3, 1, **SMALL[name], **kwargs).train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # plain average over the warm-up batches
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 3, 32, 32))
    return net.eval()


def capture_input(module):
    """Record the first positional input of every call of ``module``."""
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_default_networks_output_full_resolution_logits(name, size):
    torch.manual_seed(0)
    net = build_network(name, 3, 2)
    x, guide = torch.randn(2, 3, *size), torch.rand(2, 1, 4, 6)
    with torch.no_grad():
        net.eval()
        assert net(x, guide).shape == (2, 2, *size)
        assert net(x).shape == (2, 2, *size)
        net.train()
        out = net(x, guide)
    if name == "unet":
        assert out.shape == (2, 2, *size)
    else:  # deep supervision: five scales, full resolution first, each at its own size
        h, w = size
        assert [tuple(o.shape) for o in out] == [(2, 2, h >> i, w >> i) for i in range(5)]


def test_wnet_deep_supervision_follows_flag_and_depth():
    net = WNet(widths=(8, 16, 32), global_widths=(4, 8, 8), deep_supervision=False).train()
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 1, 32, 32)
    net.deep_supervision = True
    assert [o.shape[-1] for o in net(x)] == [32, 16, 8]  # fewer stages, fewer scales


def test_deep_supervision_weights_halve_and_sum_to_one():
    w = deep_supervision_weights(5)
    assert sum(w) == pytest.approx(1.0)
    assert [a / b for a, b in itertools.pairwise(w)] == pytest.approx([2.0] * 4)
    assert deep_supervision_weights(1) == [1.0]
    with pytest.raises(ValueError):
        deep_supervision_weights(0)


@pytest.mark.parametrize("guide_size", [(4, 4), (6, 8), (48, 64)])
@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_output_depends_on_guide(name, guide_size):
    net = small(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 64)
    g1, g2 = torch.rand(2, 1, *guide_size), torch.rand(2, 1, *guide_size)
    with torch.no_grad():
        y1, y2, y0 = net(x, g1), net(x, g2), net(x)
    assert torch.isfinite(y1).all() and torch.isfinite(y0).all()
    assert (y1 - y2).abs().max() > 1e-3
    assert (y1 - y0).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_no_gate_stages_means_guide_has_no_effect(name):
    net = small(name, gate_stages=[])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y0 = net(x)
        assert torch.equal(net(x, torch.rand(2, 1, 2, 2)), y0)
        assert torch.equal(net(x, torch.zeros(2, 1, 2, 2)), y0)


@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_gating_acts_only_on_the_listed_stage_never_on_the_image(name):
    net = small(name, gate_stages=[2])
    x = torch.randn(2, 3, 32, 32)
    image, stage1_out, stage2_out = (capture_input(net.encoder[i]) for i in (0, 2, 3))
    g1, g2 = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        y1, y2 = net(x, g1), net(x, g2)
    assert all(torch.equal(seen, x) for seen in image)
    assert torch.equal(stage1_out[0], stage1_out[1])  # stages before 2 untouched
    assert not torch.allclose(stage2_out[0], stage2_out[1])
    assert (y1 - y2).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_gating_multiplies_the_stage_feature_map_by_the_resized_guide(name):
    net = small(name, gate_stages=[0])
    x = torch.randn(2, 3, 32, 48)
    gated = capture_input(net.encoder[1])  # stage 0's output, after gating
    coarse = torch.rand(2, 1, 4, 6)
    with torch.no_grad():
        for guide in (None, torch.ones(2, 1, 32, 48), torch.full((2, 1, 32, 48), 0.5), coarse):
            net(x, guide)
    plain, ones, half, resized = gated
    assert torch.equal(ones, plain)
    assert torch.equal(half, plain * 0.5)
    expected = plain * F.interpolate(coarse, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, expected)


@pytest.mark.parametrize("name", ["unet", "wnet"])
def test_channels_last_and_bf16_autocast(name):
    net = small(name).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, torch.rand(2, 1, 2, 2))
    assert y.shape == (2, 1, 32, 32) and torch.isfinite(y.float()).all()


def test_poolformer_block_mixes_with_avgpool_minus_identity():
    torch.manual_seed(0)
    block = PoolFormerBlock(6)
    torch.nn.init.zeros_(block.mlp[2].weight)
    torch.nn.init.zeros_(block.mlp[2].bias)
    x = torch.randn(2, 6, 8, 8)
    y = F.group_norm(x, 1)
    mixed = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False) - y
    torch.testing.assert_close(block(x), x + mixed)


def test_bad_inputs_and_names_raise_helpful_errors():
    net = small("unet")
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="guide"):
        net(torch.randn(2, 3, 32, 32), torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="unet.*wnet"):
        build_network("vnet", 3, 1)
    with pytest.raises(ValueError, match="gate_stages"):
        UNet(widths=(8, 16), gate_stages=[2])


def test_build_network_passes_configuration():
    net = build_network("WNet", 1, 4, gate_stages=[1, 3], widths=(8, 16, 32, 64), global_widths=(4, 4, 8, 8))
    assert isinstance(net, WNet) and net.gate_stages == (1, 3) and net.widths == (8, 16, 32, 64)
    assert net.encoder[0][0][0].in_channels == 1 and net.heads[0].out_channels == 4
    assert isinstance(build_network("unet", 3, 1), UNet)


def test_segdino_head_shapes():
    torch.manual_seed(0)
    head = SegDINOHead(embed_dim=24, num_layers=4, out_channels=3, hidden=16).eval()
    grids = [torch.randn(2, 24, 8, 10) for _ in range(4)]
    assert head(grids, (128, 160)).shape == (2, 3, 128, 160)
    with pytest.raises(ValueError, match="4 feature grids"):
        head(grids[:3], (128, 160))


def test_count_parameters_counts_trainable_and_total():
    net = small("wnet")
    total = sum(p.numel() for p in net.parameters())
    assert count_parameters(net) == (total, total)
    for p in net.global_branch.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in net.global_branch.parameters())
    assert frozen > 0 and count_parameters(net) == (total - frozen, total)


def test_unet_overfits_a_disk():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mask = (((yy - 13) ** 2 + (xx - 18) ** 2) < 64).float()[None, None]
    image = mask + 0.3 * torch.randn_like(mask)
    net = UNet(in_channels=1, widths=(8, 16, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def dice(prob):
        return (2 * (prob * mask).sum() + 1e-6) / (prob.sum() + mask.sum() + 1e-6)

    for _ in range(60):
        logits = net(image)
        loss = F.binary_cross_entropy_with_logits(logits, mask) + 1 - dice(torch.sigmoid(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert dice((net.eval()(image) > 0).float()) > 0.9
