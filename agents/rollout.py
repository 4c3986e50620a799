"""Collecting trajectories through the vector env with the current policy.

Each env step stores x_t, the step's transition coefficients (as the env
publishes them) and the per-pixel log-likelihood of the step actually taken,
computed with ``pxpo_gym.ddim.step_log_prob``: the one log-density every agent
uses. Everything stays batched on the env's device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from pxpo_gym.ddim import TransitionCoefficients, step_log_prob
from pxpo_gym.rewards import pool_to_grid
from pxpo_gym.sampling import Episode, rollout


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trajectories(Episode):
    """A batch of N complete episodes of T steps: the ``Episode`` (images, image-resolution reward maps,
    rewards, contexts, component rewards) and every step training needs.

    Attributes:
        samples: (N, T + 1, C, h, w) x_T ... x_0 as visited.
        timesteps: (N, T) training-schedule timestep of each step (int64; float32 sigma x 1000 on flow models).
        coeffs: (N, T, 3) float32 (coef_sample, coef_eps, std_dev_t) of each step.
        logp_pixels: (N, T, h, w) per-pixel (channel-summed) log-likelihood under the sampler.
        grid_reward_maps: (N, h, w) the reward maps pooled to the sample grid.
    """

    samples: torch.Tensor
    timesteps: torch.Tensor
    coeffs: torch.Tensor
    logp_pixels: torch.Tensor
    grid_reward_maps: torch.Tensor

    @staticmethod
    def cat(parts: list[Trajectories]) -> Trajectories:
        tensors = [f.name for f in dataclasses.fields(Trajectories) if f.name != "component_names"]
        joined = {name: torch.cat([getattr(p, name) for p in parts]) for name in tensors}
        return Trajectories(**joined, component_names=parts[0].component_names)


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
    """Runs one lock-step batch of episodes (one per env, ``pxpo_gym.sampling.rollout``) and records
    everything training needs.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one).
        eps_fn: ``eps_fn(sample, timestep, context) -> eps`` on the env's tensors (the policy).
        seed: passed to ``envs.reset``; None continues the env's generators.
        options: passed to ``envs.reset`` (e.g. ``{"context": ids}``).

    Returns:
        ``Trajectories`` with N = num_envs.
    """
    samples, timesteps, coeffs, logps = [], [], [], []
    core = envs.unwrapped

    def record(obs: dict, eps: torch.Tensor, next_obs: dict, info: dict) -> None:
        step = torch.stack([info["coef_sample"], info["coef_eps"], info["std_dev_t"]], dim=-1)  # (B, 3)
        logp = step_log_prob(
            next_obs["sample"], obs["sample"], eps.float(), coefficients_from(step), core.schedule.log_density
        )
        if not samples:
            samples.append(obs["sample"])
        samples.append(next_obs["sample"])
        timesteps.append(obs["timestep"][:, 0])
        coeffs.append(step)
        logps.append(logp.sum(dim=1))  # (B, h, w): a pixel's channels summed

    episode = rollout(envs, eps_fn, seed, options, on_step=record)
    return Trajectories(
        **{f.name: getattr(episode, f.name) for f in dataclasses.fields(Episode)},
        samples=torch.stack(samples, dim=1),
        timesteps=torch.stack(timesteps, dim=1),
        coeffs=torch.stack(coeffs, dim=1),
        logp_pixels=torch.stack(logps, dim=1),
        grid_reward_maps=pool_to_grid(episode.image_reward_maps, tuple(samples[0].shape[-2:])),
    )
