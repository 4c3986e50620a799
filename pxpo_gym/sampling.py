"""The one rollout loop: a policy run through the vector env, and what a batch of episodes leaves.

``rollout`` resets the env and steps every env to the end with a policy; an
``on_step`` hook sees each transition (``agents.trajectories.collect`` records the
trajectories training needs through it), and ``grad_steps`` lets gradients flow
through the last steps only (the exact-gradient oracle). ``run_policy`` is the
loop without gradients. Every rollout returns an ``Episode`` (``agents.trajectories``'
``Trajectories`` extends it), whose field names say their resolution:
``image_reward_maps`` at image resolution, ``grid_reward_maps`` on the sample grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Policy = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``policy(sample, timestep, context) -> action`` on the env's observation tensors. A policy that keeps
state along its episode (PXPO's pinned pixels, ``pxpo_gym.pinning.PinnedPolicy``) also defines
``on_step(obs, action, next_obs, info)``, which ``rollout`` calls after every step."""
StepHook = Callable[[dict, torch.Tensor, dict, dict], None]
"""``on_step(obs, action, next_obs, info)``: called after every env step."""


@dataclass(frozen=True)
class Episode:
    """The terminal outcome of one lock-step batch of B episodes.

    Attributes:
        images: (B, 3, H, W) decoded x_0 in [0, 1].
        image_reward_maps: (B, H, W) per-pixel rewards at image resolution.
        rewards: (B,) aggregated rewards (with the autograd graph after a rollout with ``grad_steps``).
        contexts: (B,) int64 context ids.
        component_rewards: (B, K) a weighted reward's aggregated reward per component (detached); (B, 0)
            for a plain reward.
        component_names: the K components' names, in column order.
    """

    images: torch.Tensor
    image_reward_maps: torch.Tensor
    rewards: torch.Tensor
    contexts: torch.Tensor
    component_rewards: torch.Tensor
    component_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def components(self) -> dict[str, torch.Tensor]:
        """Each component's (B,) rewards by name (empty for a plain reward)."""
        return {name: self.component_rewards[:, k] for k, name in enumerate(self.component_names)}


def component_rewards(info: dict, rewards: torch.Tensor) -> torch.Tensor:
    """(B, K) the terminal step's per-component rewards (``info["reward_components"]``), (B, 0) if none."""
    parts = info.get("reward_components", {})
    if not parts:
        return rewards.new_zeros((rewards.shape[0], 0))
    return torch.stack([part.detach() for part in parts.values()], dim=1)


def rollout(
    envs: Any,
    policy: Policy,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    on_step: StepHook | None = None,
    grad_steps: int = 0,
) -> Episode:
    """Resets ``envs`` and steps every env to the end with ``policy``.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one, e.g. from ``gym.make_vec``).
        policy: ``policy(sample, timestep, context) -> action``; its own ``on_step``, if it has one, is
            called after every step, before ``on_step``.
        seed, options: passed to ``envs.reset``; a None seed continues the env's generators.
        on_step: called with ``(obs, action, next_obs, info)`` after every step.
        grad_steps: where gradients are enabled, K > 0 computes the policy's actions with gradients in
            the last K steps only (DRaFT-K); 0: in every step.

    Returns:
        The batch's terminal ``Episode``.
    """
    core = envs.unwrapped
    first_grad_step = 0 if grad_steps <= 0 else max(0, core.num_steps - grad_steps)
    obs, _ = envs.reset(seed=seed, options=options)
    contexts = obs["context"][:, 0].clone()
    for k in range(core.num_steps):
        with torch.set_grad_enabled(torch.is_grad_enabled() and k >= first_grad_step):
            action = policy(obs["sample"], obs["timestep"], obs["context"])
        next_obs, rewards, terminated, _, info = envs.step(action)
        for hook in (getattr(policy, "on_step", None), on_step):
            if hook is not None:
                hook(obs, action, next_obs, info)
        obs = next_obs
    assert bool(terminated.all()), "lock-step episodes end together"
    return Episode(
        images=info["image"],
        image_reward_maps=info["reward_map"],
        rewards=rewards,
        contexts=contexts,
        component_rewards=component_rewards(info, rewards),
        component_names=tuple(info.get("reward_components", {})),
    )


@torch.no_grad()
def run_policy(
    envs: Any,
    model: Policy | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> Episode:
    """``rollout`` without gradients, the env's pretrained model as the default policy.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one, e.g. from ``gym.make_vec``).
        model: ``model(sample, timestep, context) -> action``; if None the env's own sampler (its model, with an
            export's pinned pixels pinned as training pinned them: ``DiffusionDenoiseVectorEnv.policy``).
        seed, options: passed to ``envs.reset``.
    """
    return rollout(envs, envs.unwrapped.policy() if model is None else model, seed, options)
