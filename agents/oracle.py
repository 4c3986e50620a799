"""The exact-gradient baseline: backpropagate a differentiable reward through the sampler.

For rewards that are differentiable functions of the image (colour, target map,
segmentation), the reward's exact gradient with respect to the policy's weights
exists: run the DDIM chain with gradients on, the noise z fixed
(reparameterisation), and backpropagate the mean reward through every step, the
decoder and the reward (DRaFT, Clark et al. arXiv 2309.17400; AlignProp, Prabhudesai
et al. arXiv 2310.03739). No RL estimator can beat it per image on such a reward,
so it is the ceiling the suite judges DDPO and PXPO against. It needs what RL does
not: a reward gradient. Human or black-box feedback (and JPEG size) has none.

The chain is the env itself, stepped with the policy's noise predictions while
autograd records: the same schedule, noise, contexts and decoder as the RL agents.
``backprop_steps = K > 0`` is DRaFT-K: only the last K steps carry gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from agents.rollout import component_rewards

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class OracleBatch(NamedTuple):
    """What one oracle epoch leaves for logging (the fields image grids read from ``Trajectories``)."""

    images: torch.Tensor
    """(N, 3, H, W) in [0, 1]."""
    image_reward_maps: torch.Tensor
    """(N, H, W)."""
    contexts: torch.Tensor
    """(N,) int64."""
    rewards: torch.Tensor
    """(N,) detached."""
    component_rewards: torch.Tensor
    """(N, K) a weighted reward's per-component rewards; (N, 0) otherwise."""


def differentiable_rollout(
    envs: Any, eps_fn: EpsFn, seed: int | None = None, backprop_steps: int = 0, options: dict | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Denoises one lock-step batch through ``envs`` with gradients flowing from the reward to eps.

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one) whose reward is differentiable.
        eps_fn: the policy, ``eps_fn(sample, timestep, context) -> eps``.
        seed: passed to ``envs.reset``; None continues the env's generators.
        backprop_steps: K > 0 keeps gradients through the last K steps only; 0: all steps.
        options: passed to ``envs.reset`` (e.g. ``{"context": ids, "noise": noise}``).

    Returns:
        (rewards (N,) with the autograd graph, terminal info: ``image``, ``reward_map``
        detached, ``context`` (N,) and ``component_rewards`` (N, K)).
    """
    core = envs.unwrapped
    num_steps = core.num_steps
    first_grad_step = 0 if backprop_steps <= 0 else max(0, num_steps - backprop_steps)
    obs, _ = envs.reset(seed=seed, options=options)
    contexts = obs["context"][:, 0].clone()
    for k in range(num_steps):
        with torch.set_grad_enabled(k >= first_grad_step and torch.is_grad_enabled()):
            eps = eps_fn(obs["sample"], obs["timestep"], obs["context"])
        obs, rewards, terminated, _, info = envs.step(eps)
    assert bool(terminated.all()), "lock-step episodes end together"
    return rewards, {
        "image": info["image"].detach(),
        "reward_map": info["reward_map"].detach(),
        "context": contexts,
        "component_rewards": component_rewards(info, rewards),
    }


def reward_gradient(
    policy: torch.nn.Module, envs: Any, eps_fn: EpsFn, seed: int | None = None, backprop_steps: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flattened gradient of the batch's mean reward w.r.t. the policy's trainable weights.

    Returns:
        (gradient (P,), rewards (N,) detached). Leaves the policy's ``.grad`` cleared.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    rewards, _ = differentiable_rollout(envs, eps_fn, seed, backprop_steps)
    grads = torch.autograd.grad(rewards.mean(), params, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
    return flat, rewards.detach()


def check_differentiable(has_gradient: bool, reward_name: str) -> None:
    """Refuses the oracle on a reward whose output has no gradient w.r.t. the image
    (``has_gradient``: ``agents.credit.reward_has_gradient`` of the env)."""
    if not has_gradient:
        raise ValueError(
            f"algo='oracle' backpropagates the reward through the sampler, but reward={reward_name!r} "
            "has no gradient with respect to the image (e.g. JPEG size); use 'ddpo' or 'pxpo'"
        )


def oracle_epoch(
    envs: Any,
    eps_fn: EpsFn,
    step: Callable[[torch.Tensor], torch.Tensor],
    num_batches: int,
    first_seed: int | None,
    backprop_steps: int = 0,
) -> tuple[dict[str, float], OracleBatch]:
    """One epoch of the exact-gradient baseline: per batch, denoise it with gradients on and hand the negated
    mean reward to ``step`` (backward and one clipped optimizer step; returns the gradient norm).

    Args:
        first_seed: seeds the env at the epoch's first batch (the run's first epoch); None continues.

    Returns:
        (metrics: loss, grad_norm and NaN approx_kl / clipfrac, the epoch's images as one ``OracleBatch``).
    """
    batches, grad_norm = [], None
    for batch in range(num_batches):
        rewards, info = differentiable_rollout(
            envs, eps_fn, first_seed if batch == 0 else None, backprop_steps
        )
        norm = step(-rewards.mean())
        grad_norm = norm if grad_norm is None else grad_norm + norm
        batches.append(
            OracleBatch(
                info["image"],
                info["reward_map"],
                info["context"],
                rewards.detach(),
                info["component_rewards"],
            )
        )
    out = OracleBatch(*(torch.cat(parts) for parts in zip(*batches)))
    metrics = {
        "loss": -out.rewards.mean().item(),
        "approx_kl": math.nan,
        "clipfrac": math.nan,
        "grad_norm": (grad_norm / num_batches).item(),
    }
    return metrics, out


def trainer_epoch(trainer: Any) -> tuple[dict[str, float], OracleBatch]:
    """One oracle epoch of an ``agents.trainer.Trainer`` (its env, policy, optimizer step and config)."""
    cfg = trainer.config

    def step(loss: torch.Tensor) -> torch.Tensor:
        trainer.scaler.scale(loss).backward()
        return trainer.optimizer_step()

    return oracle_epoch(
        trainer.envs,
        trainer.eps,
        step,
        cfg.images_per_epoch // cfg.train_batch_size,
        cfg.seed if trainer.epoch == 0 else None,
        cfg.backprop_steps,
    )
