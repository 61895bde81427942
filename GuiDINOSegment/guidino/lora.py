"""LoRA adapters on the guide ViT (peft): attached, saved with peft's own format, and loaded strictly.

The base weights stay frozen and ``GuideGenerator.weights_hash()`` keeps hashing them alone. The ViT runs
in eval mode even while the adapters train, so LoRA dropout would never act; a non-zero dropout is refused.
"""

import warnings
from pathlib import Path

import torch

def has_lora(guide) -> bool:
    """Whether LoRA adapters are attached to the guide."""
    return hasattr(guide.encoder, "peft_config")  # a peft wrapper; no peft import needed to tell


def add_lora(guide, rank=8, alpha=16, dropout=0.0, targets=None):
    """Attach fresh LoRA adapters (rank, alpha) to the ``targets`` linear layers (default: the guide family's
    ``lora_targets``); only they are trainable."""
    from peft import LoraConfig  # peft takes seconds to import: only when LoRA is used

    if dropout:
        raise ValueError("LoRA dropout never acts here: the guide's ViT always runs in eval mode; use dropout=0")
    targets = guide.lora_targets if targets is None else targets
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none")
    return _attach(guide, config)


def save_lora(guide, out_dir) -> Path:
    """Save the adapters (peft's ``save_pretrained``: adapter_config.json + adapter_model.safetensors)."""
    if not has_lora(guide):
        raise ValueError("the guide has no LoRA adapters to save")
    guide.encoder.save_pretrained(str(out_dir))
    return Path(out_dir)


def load_lora(guide, lora_dir):
    """Attach the adapters saved in ``lora_dir``; every tensor must match the model's adapters exactly.

    Missing, unexpected or differently shaped adapter tensors raise ValueError and leave the guide without
    adapters. The loaded adapters are trainable, as after ``add_lora``.
    """
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    lora_dir = Path(lora_dir)
    if not (lora_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{lora_dir} holds no LoRA adapters (no adapter_config.json)")
    config = LoraConfig.from_pretrained(str(lora_dir))
    weights = load_peft_weights(str(lora_dir), device="cpu")
    _attach(guide, config)
    try:
        _check_same_tensors(get_peft_model_state_dict(guide.encoder), weights, lora_dir, "do not match the guide")
        set_peft_model_state_dict(guide.encoder, weights)
        _check_same_tensors(get_peft_model_state_dict(guide.encoder), weights, lora_dir, "did not load", values=True)
    except Exception:
        guide.encoder = guide.encoder.unload()
        raise
    return guide


def _attach(guide, config):
    from peft import get_peft_model

    if has_lora(guide):
        raise ValueError("the guide already has LoRA adapters")
    _check_targets(guide.backbone, config.target_modules)
    config.inference_mode = False
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5; not ours to fix
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        guide.encoder = get_peft_model(guide.backbone, config)
    guide.train(guide.training)
    return guide


def _check_targets(model, targets):
    """peft skips target names that match nothing as long as one matches: refuse them instead."""
    if isinstance(targets, str):  # a regular expression; peft fails if it matches nothing
        return
    linear_names = {
        name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
    }
    missing = sorted(set(targets) - linear_names)
    if missing or not targets:
        raise ValueError(
            f"LoRA targets {missing or '(none)'} are not linear layers of {type(model).__name__}; "
            f"its linear layers are named {sorted(linear_names)}"
        )


def _check_same_tensors(expected, found, lora_dir, problem, values=False):
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    different = [
        key
        for key in sorted(set(expected) & set(found))
        if expected[key].shape != found[key].shape
        or (values and not torch.equal(expected[key].cpu(), found[key].to(expected[key].dtype)))
    ]
    if missing or unexpected or different:
        raise ValueError(
            f"LoRA adapters in {lora_dir} {problem}: missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"{'different' if values else 'differently shaped'} {different[:4]} "
            f"({len(missing)} / {len(unexpected)} / {len(different)} tensors)"
        )
