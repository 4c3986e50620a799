"""DDPO: denoising diffusion policy optimisation (Black et al., arXiv 2305.13301).

One scalar reward per image weights the log-likelihood of every denoising step.
The per-step log-likelihood is the MEAN over the sample's elements (as in the
reference code), which is what makes its PPO clip range of 1e-4 meaningful.

- SF (score function, paper Eq. 4): loss = -A * log p(x_{t-1} | x_t, c).
- IS (importance sampling with PPO clipping, paper Eq. 5): ratio
  r = p_theta / p_old per sample per step, loss = max(-A r, -A clip(r, 1 - e, 1 + e)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from agents.advantages import ContextStats


@dataclass(frozen=True)
class DDPOConfig:
    """DDPO's own knobs. Defaults follow the DDPO reference code unless noted."""

    estimator: Literal["sf", "is"] = "is"
    """'sf': score function (on-policy); 'is': importance sampling with PPO clipping."""
    clip_range: float = 1e-4
    """PPO clip range on the ratio (reference: 1e-4, with mean-reduced log-likelihoods)."""
    adv_clip_max: float = 5.0
    """Advantages are clipped to [-adv_clip_max, adv_clip_max] (reference: 5)."""
    stat_buffer_size: int = 32
    """Recent rewards kept per context for normalisation (reference: 16-32)."""
    stat_min_count: int = 16
    """Rewards a context needs before its own statistics replace the batch's (reference: 16)."""

    def __post_init__(self) -> None:
        if self.estimator not in ("sf", "is"):
            raise ValueError(f"estimator must be 'sf' or 'is', got estimator={self.estimator!r}")
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got clip_range={self.clip_range}")
        if not self.adv_clip_max > 0:
            raise ValueError(f"adv_clip_max must be > 0, got adv_clip_max={self.adv_clip_max}")
        if not 1 <= self.stat_min_count <= self.stat_buffer_size:
            raise ValueError(
                f"need 1 <= stat_min_count <= stat_buffer_size, got stat_min_count={self.stat_min_count}, "
                f"stat_buffer_size={self.stat_buffer_size}"
            )


def ratio_stats(logratio: torch.Tensor, clip_range: float) -> dict[str, torch.Tensor]:
    """Diagnostics of a log-ratio tensor of any shape: ``approx_kl`` and ``clipfrac``.

    ``approx_kl`` is 0.5 * mean(logratio^2), the estimator of the DDPO reference code.
    """
    logratio = logratio.detach()
    return {
        "approx_kl": 0.5 * logratio.square().mean(),
        "clipfrac": ((logratio.exp() - 1).abs() > clip_range).float().mean(),
    }


def clipped_surrogate(advantages: torch.Tensor, logratio: torch.Tensor, clip_range: float) -> torch.Tensor:
    """PPO's pessimistic surrogate, elementwise: max(-A r, -A clip(r, 1 - e, 1 + e)).

    Args:
        advantages: any shape.
        logratio: log(p_theta / p_old), same shape.
        clip_range: e > 0.

    Returns:
        Tensor of the same shape (a loss: lower is better).
    """
    ratio = logratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped)


def ddpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    estimator: str,
    clip_range: float,
    step_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DDPO loss of one step for a batch of samples.

    Args:
        logp: (B,) per-step log-likelihood under the current policy, mean over elements.
        old_logp: (B,) the same under the sampling policy (no grad).
        advantages: (B,) normalised, clipped advantages.
        estimator: "sf" or "is".
        clip_range: PPO clip range (used by "is"; diagnostics for both).
        step_weight: (B,) weight of each sample's step (``agents.steps``); None: all 1.

    Returns:
        (scalar loss, diagnostics ``approx_kl`` and ``clipfrac``).
    """
    logratio = logp - old_logp
    if estimator == "sf":
        per_sample = -advantages * logp
    else:
        per_sample = clipped_surrogate(advantages, logratio, clip_range)
    if step_weight is not None:
        per_sample = per_sample * step_weight
    return per_sample.mean(), ratio_stats(logratio, clip_range)


class DDPO:
    """DDPO's advantage computation and loss on per-pixel log-likelihoods.

    Args:
        config: ``DDPOConfig``.
        num_contexts: number of context ids for the per-context statistics.
        map_shape: (h, w) of the sample grid (unused: DDPO's rewards are scalars).
    """

    name = "ddpo"

    def __init__(self, config: DDPOConfig, num_contexts: int, map_shape: tuple[int, int]) -> None:
        self.config = config
        self.stats = ContextStats(num_contexts, config.stat_buffer_size, config.stat_min_count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The advantage statistics, for checkpoints."""
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict(state)

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """Normalised, clipped advantages: (N,) for DDPO, (N, h, w) for PXPO.

        Args:
            rewards: (N,) aggregated rewards.
            reward_maps: (N, h, w) reward maps on the sample grid.
            contexts: (N,) int64 context ids.
        """
        adv = self.stats.update(contexts, rewards)  # DDPO normalises one scalar per image
        return adv.clamp(-self.config.adv_clip_max, self.config.adv_clip_max)

    def loss(
        self,
        logp_pixels: torch.Tensor,
        old_logp_pixels: torch.Tensor,
        advantages: torch.Tensor,
        num_channels: int,
        step_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss from per-pixel (channel-summed) log-likelihoods (B, h, w), advantages (B,)
        and optional per-sample step weights (B,)."""
        elements = num_channels * logp_pixels[0].numel()
        logp = logp_pixels.sum(dim=(1, 2)) / elements  # (B,) mean over C*h*w elements
        old_logp = old_logp_pixels.sum(dim=(1, 2)) / elements
        return ddpo_loss(
            logp, old_logp, advantages, self.config.estimator, self.config.clip_range, step_weight
        )
