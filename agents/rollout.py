"""Collecting trajectories through the vector env with the current policy.

Each env step stores x_t, the step's transition coefficients (as the env
publishes them) and the per-pixel log-likelihood of the step actually taken,
computed with ``pxpo_gym.ddim.step_log_prob``: the one log-density every agent
uses. Everything stays batched on the env's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pxpo_gym.ddim import TransitionCoefficients, step_log_prob
from pxpo_gym.rewards import pool_to_grid


@dataclass
class Trajectories:
    """A batch of N complete episodes of T steps.

    Attributes:
        samples: (N, T + 1, C, h, w) x_T ... x_0 as visited.
        timesteps: (N, T) training-schedule timestep of each step (int64; float32 sigma x 1000 on flow models).
        contexts: (N,) int64.
        coeffs: (N, T, 3) float32 (coef_sample, coef_eps, std_dev_t) of each step.
        logp_pixels: (N, T, h, w) per-pixel (channel-summed) log-likelihood under the sampler.
        rewards: (N,) float32 aggregated rewards.
        reward_maps: (N, h, w) reward maps pooled to the sample grid.
        images: (N, 3, H, W) decoded images in [0, 1].
        image_reward_maps: (N, H, W) reward maps at image resolution.
        component_rewards: (N, K) each component's aggregated reward, for a weighted reward of
            K components (``pxpo_gym.rewards.WeightedReward``); (N, 0) otherwise.
    """

    samples: torch.Tensor
    timesteps: torch.Tensor
    contexts: torch.Tensor
    coeffs: torch.Tensor
    logp_pixels: torch.Tensor
    rewards: torch.Tensor
    reward_maps: torch.Tensor
    images: torch.Tensor
    image_reward_maps: torch.Tensor
    component_rewards: torch.Tensor

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @staticmethod
    def cat(parts: list[Trajectories]) -> Trajectories:
        fields = Trajectories.__dataclass_fields__
        return Trajectories(**{name: torch.cat([getattr(p, name) for p in parts]) for name in fields})


def coefficients_from(coeffs: torch.Tensor) -> TransitionCoefficients:
    """(..., 3) stacked coefficients -> ``TransitionCoefficients`` of (...,) tensors."""
    return TransitionCoefficients(coeffs[..., 0], coeffs[..., 1], coeffs[..., 2])


@torch.no_grad()
def collect(
    envs,
    eps_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int | None = None,
    options: dict | None = None,
) -> Trajectories:
    """Runs one lock-step batch of episodes (one per env) and records everything training needs.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one).
        eps_fn: ``eps_fn(sample, timestep, context) -> eps`` on the env's tensors (the policy).
        seed: passed to ``envs.reset``; None continues the env's generators.
        options: passed to ``envs.reset`` (e.g. ``{"context": ids}``).

    Returns:
        ``Trajectories`` with N = num_envs.
    """
    core = envs.unwrapped
    obs, _ = envs.reset(seed=seed, options=options)
    samples, timesteps, coeffs, logps = [obs["sample"]], [], [], []
    for _ in range(core.num_steps):
        eps = eps_fn(obs["sample"], obs["timestep"], obs["context"])
        next_obs, rewards, terminated, _, info = envs.step(eps)
        step = torch.stack([info["coef_sample"], info["coef_eps"], info["std_dev_t"]], dim=-1)  # (B, 3)
        logp = step_log_prob(next_obs["sample"], obs["sample"], eps.float(), coefficients_from(step))
        samples.append(next_obs["sample"])
        timesteps.append(obs["timestep"][:, 0])
        coeffs.append(step)
        logps.append(logp.sum(dim=1))  # (B, h, w): a pixel's channels summed
        obs = next_obs
    assert bool(terminated.all()), "lock-step episodes end together"
    grid = tuple(samples[0].shape[-2:])
    return Trajectories(
        samples=torch.stack(samples, dim=1),
        timesteps=torch.stack(timesteps, dim=1),
        contexts=obs["context"][:, 0].clone(),
        coeffs=torch.stack(coeffs, dim=1),
        logp_pixels=torch.stack(logps, dim=1),
        rewards=rewards,
        reward_maps=pool_to_grid(info["reward_map"], grid),
        images=info["image"],
        image_reward_maps=info["reward_map"],
        component_rewards=component_rewards(info, rewards),
    )


def component_rewards(info: dict, rewards: torch.Tensor) -> torch.Tensor:
    """(B, K) the terminal step's per-component rewards (``info["reward_components"]``), (B, 0) if none."""
    parts = info.get("reward_components", {})
    if not parts:
        return rewards.new_zeros((rewards.shape[0], 0))
    return torch.stack([part.detach() for part in parts.values()], dim=1)
