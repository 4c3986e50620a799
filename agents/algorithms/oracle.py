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

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pxpo_gym.cli import Checked
from pxpo_gym.sampling import Episode, rollout

from .base import Algorithm

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def differentiable_rollout(
    envs: Any, action_fn: EpsFn, seed: int | None = None, backprop_steps: int = 0, options: dict | None = None
) -> Episode:
    """Denoises one lock-step batch through ``envs`` with gradients flowing from the reward to the actions
    (``pxpo_gym.sampling.rollout`` with gradients on).

    Args:
        envs: a ``DiffusionDenoiseVectorEnv`` (or a wrapper of one) whose reward is differentiable.
        action_fn: the policy, ``action_fn(sample, timestep, context) -> action``.
        seed: passed to ``envs.reset``; None continues the env's generators.
        backprop_steps: K > 0 keeps gradients through the last K steps only; 0: all steps.
        options: passed to ``envs.reset`` (e.g. ``{"context": ids, "noise": noise}``).

    Returns:
        The ``Episode``: ``rewards`` (N,) with the autograd graph, the images and maps detached.
    """
    episode = rollout(envs, action_fn, seed, options, grad_steps=backprop_steps)  # gradients where enabled
    return dataclasses.replace(
        episode, images=episode.images.detach(), image_reward_maps=episode.image_reward_maps.detach()
    )


def reward_gradient(
    policy: torch.nn.Module, envs: Any, action_fn: EpsFn, seed: int | None = None, backprop_steps: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flattened gradient of the batch's mean reward w.r.t. the policy's trainable weights.

    Returns:
        (gradient (P,), rewards (N,) detached). Leaves the policy's ``.grad`` cleared.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    rewards = differentiable_rollout(envs, action_fn, seed, backprop_steps).rewards
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
    action_fn: EpsFn,
    step: Callable[[torch.Tensor], torch.Tensor],
    num_batches: int,
    first_seed: int | None,
    backprop_steps: int = 0,
) -> tuple[dict[str, float], Episode]:
    """One epoch of the exact-gradient baseline: per batch, denoise it with gradients on and hand the negated
    mean reward to ``step`` (backward and one clipped optimizer step; returns the gradient norm).

    Args:
        first_seed: seeds the env at the epoch's first batch (the run's first epoch); None continues.

    Returns:
        (metrics: loss, grad_norm and NaN approx_kl / clipfrac, the epoch's images as one ``Episode``).
    """
    batches, grad_norm = [], None
    for batch in range(num_batches):
        episode = differentiable_rollout(envs, action_fn, first_seed if batch == 0 else None, backprop_steps)
        norm = step(-episode.rewards.mean())
        grad_norm = norm if grad_norm is None else grad_norm + norm
        batches.append(dataclasses.replace(episode, rewards=episode.rewards.detach()))
    tensors = [f.name for f in dataclasses.fields(Episode) if f.name != "component_names"]
    out = Episode(
        **{name: torch.cat([getattr(b, name) for b in batches]) for name in tensors},
        component_names=batches[0].component_names,
    )
    metrics = {
        "loss": -out.rewards.mean().item(),
        "approx_kl": math.nan,
        "clipfrac": math.nan,
        "grad_norm": (grad_norm / num_batches).item(),
    }
    return metrics, out


def trainer_epoch(trainer: Any) -> tuple[dict[str, float], Episode]:
    """One oracle epoch of an ``agents.trainer.Trainer`` (its env, policy, optimizer step and config)."""
    cfg = trainer.config

    def step(loss: torch.Tensor) -> torch.Tensor:
        trainer.scaler.scale(loss).backward()
        return trainer.optimizer_step()

    return oracle_epoch(
        trainer.envs,
        trainer.action,
        step,
        cfg.sampling.images_per_epoch // cfg.optimiser.train_batch_size,
        cfg.run.seed if trainer.epoch == 0 else None,
        trainer.algo.config.backprop_steps,
    )


@dataclass(frozen=True)
class OracleConfig(Checked):
    """The oracle's one knob."""

    backprop_steps: int = 0
    """Backpropagate through the last K steps only (DRaFT-K); 0: through every step."""

    def check(self) -> None:
        if not (isinstance(self.backprop_steps, int) and self.backprop_steps >= 0):
            raise ValueError(
                f"backprop_steps must be an int >= 0, got backprop_steps={self.backprop_steps!r}"
            )


class Oracle(Algorithm):
    """The exact-gradient baseline as an algorithm: it samples and trains in one pass (``epoch``), so it has
    no advantages or loss of its own; the reward must be differentiable (checked in ``attach``)."""

    name = "oracle"
    config_class = OracleConfig
    samples_with_gradients = True

    def attach(self, trainer: Any) -> None:
        from ..credit import reward_has_gradient

        check_differentiable(
            reward_has_gradient(trainer.envs.unwrapped), trainer.envs.unwrapped.reward_fn.name
        )

    def advantages(self, rewards, reward_maps, contexts):  # noqa: ANN001, ANN201
        raise RuntimeError("the oracle backpropagates the reward itself: it has no advantages")

    def loss(self, logp_pixels, old_logp_pixels, advantages, num_channels, step_weight=None):  # noqa: ANN001, ANN201
        raise RuntimeError("the oracle backpropagates the reward itself: it has no policy-gradient loss")

    def epoch(self, trainer: Any) -> tuple[dict[str, float], Episode]:
        trainer.policy.train()
        metrics, episode = trainer_epoch(trainer)
        metrics["sample_seconds"] = math.nan  # sampling and training are one pass
        return metrics, episode
