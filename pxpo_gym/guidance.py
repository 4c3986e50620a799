"""Classifier-free guidance: the action f(x, null) + s (f(x, c) - f(x, null)), both halves in one pass.

The env's own sampler (``DiffusionDenoiseVectorEnv.policy``, what ``TrainedPipeline`` and ``agents.evaluate``
draw with) and the agents' policy guide with the same function, so an export of a guided run samples as
the run did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

Policy = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def check_guidance(
    guidance_scale: Any, null_context: int | None, name: str = "guidance_scale", model: str = ""
) -> float:
    """``guidance_scale`` as a float.

    Args:
        guidance_scale: the value to check.
        null_context: the model's "no context" id, or None (then only 1 is allowed).
        name: how the messages name the value (e.g. where it was read from).
        model: how the messages name the model.

    Raises:
        ValueError: not a finite number >= 1, or guidance (!= 1) asked of a model without a null context.
    """
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise ValueError(f"{name} must be a number >= 1 (1: no guidance), got {guidance_scale!r}")
    scale = float(guidance_scale)
    if not math.isfinite(scale) or scale < 1:
        raise ValueError(f"{name} must be a finite number >= 1 (1: no guidance), got {guidance_scale!r}")
    if scale != 1 and null_context is None:
        raise ValueError(
            f"{name}={scale} needs a model with a null context{' (' + model + ' has none)' if model else ''} "
            "(pxpo_gym.json 'null_context'); use guidance_scale=1"
        )
    return scale


def guided_output(
    policy: Policy,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    guidance_scale: float,
    null_context: int | None,
) -> torch.Tensor:
    """The network's output (the action: noise or velocity), with classifier-free guidance when ``guidance_scale != 1``.

    output = f(x, null) + s * (f(x, c) - f(x, null)), with the conditional and
    unconditional halves in one batched forward pass.

    Args:
        sample: (B, C, h, w); timestep, context: (B,) or (B, 1) int64.
        guidance_scale: s; 1 disables guidance.
        null_context: the model's "no context" id (required when s != 1).

    Returns:
        (B, C, h, w) model output (the policy's own dtype; float32 for ``NoiseModel``).
    """
    if guidance_scale == 1.0:
        return policy(sample, timestep, context)
    batch = sample.shape[0]
    context = context.reshape(-1)
    both = policy(
        torch.cat([sample, sample]),
        torch.cat([timestep.reshape(-1), timestep.reshape(-1)]),
        torch.cat([context, torch.full_like(context, null_context)]),
    )
    cond, uncond = both[:batch], both[batch:]
    return uncond + guidance_scale * (cond - uncond)


def guided(policy: Policy, guidance_scale: float, null_context: int | None) -> Policy:
    """``policy`` itself when ``guidance_scale`` is 1, else ``policy`` guided (``guided_output``)."""
    if guidance_scale == 1.0:
        return policy

    def guided_policy(sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return guided_output(policy, sample, timestep, context, guidance_scale, null_context)

    return guided_policy
