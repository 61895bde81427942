"""Meta's official DINOv3 state dict (facebookresearch/dinov3 key names) as transformers' ``DINOv3ViTModel``
config and state dict: the names, the RoPE period, the layer scales a checkpoint may leave out.
"""

import re

import torch
from transformers import DINOv3ViTConfig

# Official DINOv3 names -> DINOv3ViTModel names. Per block: (module path -> module path); "gamma" -> "lambda1".
_TOP_LEVEL_KEYS = {
    "cls_token": "embeddings.cls_token",
    "storage_tokens": "embeddings.register_tokens",
    "mask_token": "embeddings.mask_token",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_BLOCK_MODULES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.o_proj",
    "ls1": "layer_scale1",
    "ls2": "layer_scale2",
    "mlp.fc1": "mlp.up_proj",
    "mlp.fc2": "mlp.down_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.up_proj",
    "mlp.w3": "mlp.down_proj",
}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(\w+)")
# Separate norms for the CLS / register outputs only; the guide discards those tokens.
_CLS_ONLY_NORMS = ("cls_norm.", "local_cls_norm.")
_DEFAULT_ROPE_THETA = 100.0


def _rope_theta(periods, head_dim):
    """DINOv3 stores RoPE periods base ** (4 i / head_dim); recover the base and check the form."""
    if periods is None:
        return _DEFAULT_ROPE_THETA
    periods = periods.double()
    theta = float(periods[1] ** (head_dim / 4)) if periods.numel() > 1 else _DEFAULT_ROPE_THETA
    expected = theta ** (4 * torch.arange(periods.numel(), dtype=torch.float64) / head_dim)
    if not torch.allclose(periods, expected, rtol=1e-4):
        raise ValueError("unsupported RoPE periods (not of the form base ** (4 i / head_dim))")
    return theta


def convert_official_state_dict(state_dict):
    """Official DINOv3 ViT state dict -> (``DINOv3ViTConfig``, state dict for ``DINOv3ViTModel``).

    The configuration is read from the tensors: width, depth, head size (from the RoPE periods, else 64),
    register tokens, MLP width, SwiGLU or GELU MLP, biases, layer scale. Unknown keys raise ValueError.
    """
    sd = dict(state_dict)
    for key in ("cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"):
        if key not in sd:
            raise ValueError(f"no {key!r} tensor: not an official DINOv3 ViT checkpoint")
    dim = sd["cls_token"].shape[-1]
    periods = sd.pop("rope_embed.periods", None)
    head_dim = 4 * periods.numel() if periods is not None else 64
    if dim % head_dim:
        raise ValueError(f"width {dim} is not a multiple of the head size {head_dim}")
    depth = 1 + max(int(m.group(1)) for m in map(_BLOCK_KEY.fullmatch, sd) if m)
    gated = "blocks.0.mlp.w1.weight" in sd
    mlp_in = "blocks.0.mlp.w1" if gated else "blocks.0.mlp.fc1"
    qkv_bias = "blocks.0.attn.qkv.bias" in sd
    k_bias_masked = "blocks.0.attn.qkv.bias_mask" in sd
    patch_weight = sd["patch_embed.proj.weight"]
    config = DINOv3ViTConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=dim // head_dim,
        intermediate_size=sd[f"{mlp_in}.weight"].shape[0],
        patch_size=patch_weight.shape[-1],
        num_channels=patch_weight.shape[1],
        num_register_tokens=sd["storage_tokens"].shape[1] if "storage_tokens" in sd else 0,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        query_bias=qkv_bias,
        key_bias=qkv_bias and not k_bias_masked,
        value_bias=qkv_bias,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        mlp_bias=f"{mlp_in}.bias" in sd,
        rope_theta=_rope_theta(periods, head_dim),
    )

    converted, unknown = {}, []
    for key, value in sd.items():
        block = _BLOCK_KEY.fullmatch(key)
        index, module, param = block.groups() if block else (None, None, None)
        if key in _TOP_LEVEL_KEYS:
            converted[_TOP_LEVEL_KEYS[key]] = value.reshape(1, 1, dim) if key == "mask_token" else value
        elif key.startswith(_CLS_ONLY_NORMS) or (module == "attn.qkv" and param == "bias_mask"):
            continue
        elif module == "attn.qkv":
            masked = param == "bias" and k_bias_masked
            if masked:  # the official model multiplies its qkv bias by this mask, which zeroes the k part
                value = value * sd[f"blocks.{index}.attn.qkv.bias_mask"].to(value.dtype)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                if not (masked and name == "k_proj"):
                    converted[f"model.layer.{index}.attention.{name}.{param}"] = part
        elif module in _BLOCK_MODULES:
            converted[f"model.layer.{index}.{_BLOCK_MODULES[module]}.{'lambda1' if param == 'gamma' else param}"] = (
                value
            )
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unknown tensors {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    if "storage_tokens" not in sd:
        converted["embeddings.register_tokens"] = torch.zeros(1, 0, dim)
    if "blocks.0.ls1.gamma" not in sd:  # no layer scale: the identity scale
        for index in range(depth):
            for scale in ("layer_scale1", "layer_scale2"):
                converted[f"model.layer.{index}.{scale}.lambda1"] = torch.ones(dim)
    return config, converted
