"""The trainable policy: a copy of the env's pretrained noise model, full or LoRA.

The env's own model stays frozen (the reference). Full fine-tuning trains a float32 deep copy. With
``lora_rank > 0`` the copy's modules are new but its base weights are the env model's own tensors
(shared, frozen, in the env's dtype: no second copy of the model is held), and peft injects LoRA
adapters (float32) into the copy's named modules (attention projections by default, as DDPO does):
the reference costs no memory beyond the adapters.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from pxpo_gym.deprecation import moved_names
from pxpo_gym.models import NoiseModel

LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
"""diffusers' attention projection names: DDPO's LoRA targets."""


def make_policy(
    model: NoiseModel, lora_rank: int = 0, lora_targets: Sequence[str] = LORA_TARGETS
) -> NoiseModel:
    """A trainable deep copy of ``model``.

    Args:
        model: the env's pretrained ``NoiseModel`` (left untouched).
        lora_rank: 0 for full fine-tuning, else the LoRA rank.
        lora_targets: module names (suffixes) that receive LoRA adapters.

    Raises:
        ValueError: negative rank, or no module matches ``lora_targets``.
        ImportError: LoRA asked for without peft installed (``pip install pxpo-gym[lora]``).
    """
    if lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0 (0 = full fine-tuning), got lora_rank={lora_rank}")
    if lora_rank == 0:
        policy = copy.deepcopy(model).float().train()
        policy.compute_dtype = torch.float32  # autocast, not the weights' dtype, sets the precision
        return policy.requires_grad_(True)
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("LoRA needs peft: pip install 'pxpo-gym[lora]'") from err
    names = [name for name, _ in model.net.named_modules()]
    if not any(name.endswith(tuple(lora_targets)) for name in names):
        raise ValueError(f"lora_targets={list(lora_targets)} match no module of the model")
    # New modules around the same tensors: the frozen base is shared with the env's model, not copied.
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    policy = copy.deepcopy(model, memo=shared).train()
    policy.requires_grad_(False)
    config = LoraConfig(
        r=lora_rank, lora_alpha=lora_rank, target_modules=list(lora_targets), init_lora_weights=True
    )
    policy.net = inject_adapter_in_model(config, policy.net)
    for name, param in policy.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # the adapters train in float32 over a half-precision base
        param.requires_grad_("lora_" in name)
    return policy


def trainable_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes, by name (all weights, or only LoRA's)."""
    return {name: p.detach() for name, p in policy.named_parameters() if p.requires_grad}


__getattr__ = moved_names(__name__, {"guided_output": "pxpo_gym.guidance:guided_output"})
