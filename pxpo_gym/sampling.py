"""Running a noise model through the vector env: the pretrained sampler as a policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Episode:
    """The outcome of one batch of episodes.

    Attributes:
        images: (B, 3, H, W) decoded x_0 in [0, 1].
        reward_maps: (B, H, W) per-pixel rewards.
        rewards: (B,) aggregated rewards.
        contexts: (B,) int64 context ids.
        components: a weighted reward's (B,) aggregated reward per component, by name (else empty).
    """

    images: torch.Tensor
    reward_maps: torch.Tensor
    rewards: torch.Tensor
    contexts: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def run_policy(
    envs: Any,
    model: torch.nn.Module | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> Episode:
    """Resets ``envs`` and denoises every env to the end with ``model`` as the policy.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one, e.g. from ``gym.make_vec``).
        model: ``model(sample, timestep, context) -> eps``; the env's pretrained model if None.
        seed, options: passed to ``envs.reset``.

    Returns:
        The terminal ``Episode`` of every env.
    """
    core = envs.unwrapped
    model = core.model if model is None else model
    obs, _ = envs.reset(seed=seed, options=options)
    contexts = obs["context"][:, 0].clone()
    for _ in range(core.num_steps):
        obs, rewards, terminated, _, info = envs.step(model(obs["sample"], obs["timestep"], obs["context"]))
    assert bool(terminated.all()), "lock-step episodes end together"
    return Episode(
        info["image"], info["reward_map"], rewards, contexts, dict(info.get("reward_components", {}))
    )
