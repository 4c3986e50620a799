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
import torch.nn.functional as F

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


class HeldPolicy:
    """A policy whose held pixels follow the pretrained model's trajectory from the same noise (PXPO's
    ``silent_mode='hold'``: an inpainting-style constraint on the state, not on the weights).

    Beside the episode it tracks the reference trajectory x^ref_t that the pretrained model would have
    visited from the same x_T and the same step noise. At a held pixel the action is the pretrained
    model's noise prediction on x^ref_t, so the step lands where the reference's does; elsewhere it is
    the policy's. The env's step is x_{t-1} = a x_t + b eps + s z, so from the step actually taken the
    reference's next state is x^ref_{t-1} = x_{t-1} + a (x^ref_t - x_t) + b (eps^ref - eps) (no division
    by s: exact for deterministic samplers too). At held pixels both differences are 0, so the held
    pixels of every state, x_0 included, are the pretrained model's exactly. Use one instance per
    episode batch (``pxpo_gym.sampling.rollout`` calls its ``on_step``).

    A float ``held`` (``pin_weights``: a band at the pin's edge) blends the two predictions,
    w eps^ref + (1 - w) eps: w = 1 is held exactly, 0 is the policy's alone, and in between the
    pixel's state moves between the two trajectories, so a held part meets a repainted one through a
    ramp instead of a hard edge.

    Args:
        policy: ``policy(sample, timestep, context) -> eps`` (the trained model).
        reference: the same signature, the frozen pretrained model (no gradients needed).
        held: (num_contexts, h, w) bool, or float weights in [0, 1], each context's held pixels on the
            sample grid.
    """

    def __init__(self, policy: Callable, reference: Callable, held: torch.Tensor) -> None:
        self.policy = policy
        self.reference = reference
        self.held = held
        self.reference_sample: torch.Tensor | None = None
        self.reference_eps: torch.Tensor | None = None

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.reference_sample is None:  # the episode's first step: both start from x_T
            self.reference_sample = sample.clone()
        self.reference_eps = self.reference(self.reference_sample, timestep, context).float()
        eps = self.policy(sample, timestep, context).float()
        return blend(eps, self.reference_eps, self.held[context.reshape(-1)])

    def on_step(self, obs: dict, action: torch.Tensor, next_obs: dict, info: dict) -> None:
        shape = (-1, *([1] * (action.dim() - 1)))
        a, b = info["coef_sample"].reshape(shape), info["coef_eps"].reshape(shape)
        self.reference_sample = (
            next_obs["sample"]
            + a * (self.reference_sample - obs["sample"])
            + b * (self.reference_eps - action.float())
        )


def blend(eps: torch.Tensor, reference_eps: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """The action with the held pixels' weight on the reference's: (B, C, h, w) from held (B, h, w), bool
    (the reference's where True) or float in [0, 1] (w reference + (1 - w) eps; exact at 0 and 1)."""
    weight = held.to(eps.device)[:, None]  # (B, 1, h, w)
    if weight.dtype == torch.bool:
        return torch.where(weight, reference_eps, eps)
    return torch.lerp(eps, reference_eps, weight.to(eps.dtype))


MAX_PIN_BAND = 64
"""The widest pin band a run or an export may name."""


def pin_weights(held: torch.Tensor, band: int) -> torch.Tensor:
    """PXPO's pin with a band at its edge: (num_contexts, h, w) bool -> float weights in [0, 1].

    A held pixel at chessboard distance d from the nearest free pixel weighs min(1, d / (band + 1)): the
    ``band`` held pixels nearest the edge ramp from the policy's prediction to the reference's, the rest
    are held exactly; free pixels weigh 0. band 0 is the hard pin. The image border is not an edge.
    """
    if not 0 <= band <= MAX_PIN_BAND:
        raise ValueError(f"band must be in [0, {MAX_PIN_BAND}], got band={band}")
    weight = held.float()
    if band == 0 or not bool(held.any()):
        return weight
    reached = (~held).float()[:, None]  # (C, 1, h, w): pixels within distance d of a free pixel
    for d in range(1, band + 1):
        reached = F.max_pool2d(reached, kernel_size=3, stride=1, padding=1)  # the border pads with -inf
        ring = held & (reached[:, 0] > 0) & (weight == 1)
        weight = torch.where(ring, torch.full_like(weight, d / (band + 1)), weight)
    return weight


def pinned_policy(mode: str, policy: Callable, reference: Callable, held: torch.Tensor) -> Callable:
    """A policy with PXPO's silent pixels pinned to the pretrained model, for one batch of episodes.

    Args:
        mode: 'hold' (``HeldPolicy``: the held pixels' state follows the reference's trajectory) or
            'freeze' (the action there is the reference's on the current state).
        policy, reference: ``(sample, timestep, context) -> eps``.
        held: (num_contexts, h, w) bool, or float weights (``pin_weights``).
    """
    if mode == "hold":
        return HeldPolicy(policy, reference, held)
    if mode != "freeze":
        raise ValueError(f"mode must be 'hold' or 'freeze', got mode={mode!r}")

    def frozen(sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        eps = policy(sample, timestep, context).float()
        return blend(eps, reference(sample, timestep, context).float(), held[context.reshape(-1)])

    return frozen


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
