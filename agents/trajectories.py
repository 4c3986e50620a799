"""Trajectories, and collecting them through the vector env with the current policy (``collect``).

Each env step stores x_t, the step's transition coefficients (as the env
publishes them) and the per-pixel log-likelihood of the step actually taken,
computed with ``pxpo_gym.transition.step_log_prob``: the one log-density every agent
uses; a trained window of steps (``TrainConfig.step_window``) stores those steps
only. Everything stays batched on the env's device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from pxpo_gym.rewards import pool_to_grid
from pxpo_gym.sampling import Episode, rollout
from pxpo_gym.transition import TransitionCoefficients, step_log_prob


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trajectories(Episode):
    """A batch of N complete episodes of T steps: the ``Episode`` (images, image-resolution reward maps,
    rewards, contexts, component rewards) and every step training needs.

    The steps kept are S = ``first_step`` ... ``first_step`` + K - 1 (every step, K = T, unless a window
    was collected): step k of the episode is row k - ``first_step`` of the per-step tensors.

    Attributes:
        samples: (N, K + 1, C, h, w) x at the start of each kept step, then after the last one.
        timesteps: (N, K) training-schedule timestep of each kept step (int64; float32 sigma x 1000 on flow
            models).
        coeffs: (N, K, 3) float32 (coef_sample, coef_model_output, std_dev_t) of each kept step.
        logp_pixels: (N, K, h, w) per-pixel (channel-summed) log-likelihood under the sampler.
        grid_reward_maps: (N, h, w) the reward maps pooled to the sample grid.
        first_step: the episode's index of the first kept step.
    """

    samples: torch.Tensor
    timesteps: torch.Tensor
    coeffs: torch.Tensor
    logp_pixels: torch.Tensor
    grid_reward_maps: torch.Tensor
    first_step: int = 0

    @property
    def kept_steps(self) -> range:
        """The episode's step indices whose tensors are kept."""
        return range(self.first_step, self.first_step + int(self.timesteps.shape[1]))

    @staticmethod
    def cat(parts: list[Trajectories]) -> Trajectories:
        if len({p.first_step for p in parts}) != 1:
            raise ValueError(
                f"cannot join trajectories of different windows: {[p.kept_steps for p in parts]}"
            )
        tensors = [
            f.name
            for f in dataclasses.fields(Trajectories)
            if f.name not in ("component_names", "first_step")
        ]
        joined = {name: torch.cat([getattr(p, name) for p in parts]) for name in tensors}
        return Trajectories(
            **joined, component_names=parts[0].component_names, first_step=parts[0].first_step
        )


def coefficients_from(coeffs: torch.Tensor) -> TransitionCoefficients:
    """(..., 3) stacked coefficients -> ``TransitionCoefficients`` of (...,) tensors."""
    return TransitionCoefficients(coeffs[..., 0], coeffs[..., 1], coeffs[..., 2])


@torch.no_grad()
def collect(
    envs,
    policy: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int | None = None,
    options: dict | None = None,
    keep: range | None = None,
) -> Trajectories:
    """Runs one lock-step batch of episodes (one per env, ``pxpo_gym.sampling.rollout``) and records
    everything training needs.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one).
        policy: ``policy(sample, timestep, context) -> action`` on the env's tensors.
        seed: passed to ``envs.reset``; None continues the env's generators.
        options: passed to ``envs.reset`` (e.g. ``{"context": ids}``).
        keep: the consecutive steps to record (a trained window); None: every step. The others are
            sampled but neither stored nor given a likelihood (they may be deterministic).

    Returns:
        ``Trajectories`` with N = num_envs.
    """
    samples, timesteps, coeffs, logps = [], [], [], []
    core = envs.unwrapped
    keep = range(core.num_steps) if keep is None else keep
    if not len(keep) or keep.step != 1 or keep.start < 0 or keep.stop > core.num_steps:
        raise ValueError(
            f"keep must be a non-empty range of consecutive steps in [0, {core.num_steps}), got {keep}"
        )
    step_index = iter(range(core.num_steps))

    def record(obs: dict, action: torch.Tensor, next_obs: dict, info: dict) -> None:
        if next(step_index) not in keep:
            return
        step = torch.stack(
            [info["coef_sample"], info["coef_model_output"], info["std_dev_t"]], dim=-1
        )  # (B, 3)
        logp = step_log_prob(
            next_obs["sample"],
            obs["sample"],
            action.float(),
            coefficients_from(step),
            core.schedule.log_density,
        )
        if not samples:
            samples.append(obs["sample"])
        samples.append(next_obs["sample"])
        timesteps.append(obs["timestep"][:, 0])
        coeffs.append(step)
        logps.append(logp.sum(dim=1))  # (B, h, w): a pixel's channels summed

    episode = rollout(envs, policy, seed, options, on_step=record)
    sigmas = torch.stack(coeffs, dim=1)[..., 2]  # (N, K): one check per batch, not a host sync per step
    if bool((sigmas == 0).any()):
        raise ValueError(
            "a kept step was sampled without noise (the env's reset option stochastic_steps): it has no "
            "likelihood; keep only the stochastic steps (collect's keep)"
        )
    return Trajectories(
        **{f.name: getattr(episode, f.name) for f in dataclasses.fields(Episode)},
        samples=torch.stack(samples, dim=1),
        timesteps=torch.stack(timesteps, dim=1),
        coeffs=torch.stack(coeffs, dim=1),
        logp_pixels=torch.stack(logps, dim=1),
        grid_reward_maps=pool_to_grid(episode.image_reward_maps, tuple(samples[0].shape[-2:])),
        first_step=keep.start,
    )
