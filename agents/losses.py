"""The policy-gradient losses of DDPO and PXPO, as pure functions, and the knobs they share.

Every function takes tensors and returns tensors: no state, no logging. Shapes:
B samples (one denoising step each), h x w the sample grid, C its channels.

- DDPO (Black et al., arXiv 2305.13301): one scalar advantage per sample, the
  per-step log-likelihood is the MEAN over the sample's C h w elements (as in the
  reference code). SF (paper Eq. 4): -A log p. IS (Eq. 5): PPO's clipped surrogate
  with one ratio per sample.
- PXPO (Kordzanganeh et al., arXiv 2404.04356): an advantage per pixel weights
  that pixel's log-likelihood (channels summed), reduced as
  -(1 / (C h w)) sum_ij A_ij sum_c log p(x^{c,ij}), so that a constant map gives
  DDPO-SF's loss exactly (scale 1). IS: one ratio per pixel, clipped per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pxpo_gym.cli import Checked


@dataclass(frozen=True)
class PolicyGradientConfig(Checked):
    """What DDPO and PXPO share: the estimator, PPO clipping, advantage clipping and buffers."""

    estimator: Literal["sf", "is"] = "is"
    """'sf': score function (on-policy); 'is': importance sampling with PPO clipping."""
    clip_range: float | None = 1e-4
    """PPO clip range on the ratio (None only where the algorithm scales its own: DDPO)."""
    adv_clip_max: float = 5.0
    """Advantages are clipped to [-adv_clip_max, adv_clip_max] (DDPO reference: 5)."""
    stat_buffer_size: int = 32
    """Recent rewards kept per context for normalisation (DDPO reference: 16-32)."""
    stat_min_count: int = 16
    """Rewards a context needs before its own statistics replace the batch's (DDPO reference: 16)."""
    group_size: int | None = None
    """GRPO-style group advantages: each epoch draws group_size images of every training context, and each
    reward (PXPO: each pixel's) is normalised by its own group's mean and std instead of the running buffer
    (images per epoch must be group_size x the number of contexts). None: the running buffer."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the frozen pretrained model, per step: the mean over elements of
    KL(p_theta || p_ref) = (b_t (a_theta - a_ref))^2 / (2 sigma_t^2), added to the loss with the step's
    weight. 0: none (and no reference forward pass)."""

    def check(self) -> None:
        if self.estimator not in ("sf", "is"):
            raise ValueError(f"estimator must be 'sf' or 'is', got estimator={self.estimator!r}")
        if self.clip_range is not None and not self.clip_range > 0:  # None: resolved by the trainer (DDPO)
            raise ValueError(f"clip_range must be > 0, got clip_range={self.clip_range}")
        if not self.adv_clip_max > 0:
            raise ValueError(f"adv_clip_max must be > 0, got adv_clip_max={self.adv_clip_max}")
        if not (self.group_size is None or (isinstance(self.group_size, int) and self.group_size >= 2)):
            raise ValueError(
                f"group_size must be None or an int >= 2 (a group of one has no spread), got group_size={self.group_size!r}"
            )
        if not (isinstance(self.kl_coef, (int, float)) and self.kl_coef >= 0):
            raise ValueError(f"kl_coef must be >= 0, got kl_coef={self.kl_coef}")
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


def _weighted_mean(per_sample: torch.Tensor, step_weight: torch.Tensor | None) -> torch.Tensor:
    return (per_sample if step_weight is None else per_sample * step_weight).mean()


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
    return _weighted_mean(per_sample, step_weight), ratio_stats(logratio, clip_range)


def pxpo_loss(
    logp_pixels: torch.Tensor,
    old_logp_pixels: torch.Tensor,
    advantage_maps: torch.Tensor,
    num_channels: int,
    estimator: str,
    clip_range: float,
    step_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PXPO loss of one step for a batch of samples.

    Args:
        logp_pixels: (B, h, w) per-pixel log-likelihood (channels summed), current policy.
        old_logp_pixels: (B, h, w) the same under the sampling policy (no grad).
        advantage_maps: (B, h, w) per-pixel advantages.
        num_channels: C, the sample's channels (for the 1 / (C h w) reduction).
        estimator: "sf" or "is".
        clip_range: per-pixel PPO clip range (used by "is"; diagnostics for both).
        step_weight: (B,) weight of each sample's step (``agents.steps``); None: all 1.

    Returns:
        (scalar loss, diagnostics ``approx_kl`` and ``clipfrac`` over pixels).
    """
    elements = num_channels * logp_pixels[0].numel()
    logratio = logp_pixels - old_logp_pixels  # (B, h, w)
    if estimator == "sf":
        per_pixel = -advantage_maps * logp_pixels
    else:
        per_pixel = clipped_surrogate(advantage_maps, logratio, clip_range)
    per_sample = per_pixel.sum(dim=(1, 2)) / elements  # (B,)
    return _weighted_mean(per_sample, step_weight), ratio_stats(logratio, clip_range)


def kl_penalty(
    kl_map: torch.Tensor,
    step_weight: torch.Tensor,
    kl_coef: float,
    silent: torch.Tensor | None,
    silent_kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The penalties to the pretrained model added to a step's policy-gradient loss.

    - Uniform: ``kl_coef`` x the step-weighted batch mean of each sample's mean KL over its C h w elements.
    - Silent pixels (PXPO): ``silent_kl_coef`` x the step-weighted batch mean of each sample's KL summed
      over its silent pixels' elements, divided by all C h w elements (so a sample whose every pixel is
      silent pays the uniform term's mean).

    Args:
        kl_map: (B, C, h, w) elementwise KL(policy step || pretrained step) (``pxpo_gym.ddim.step_kl``).
        step_weight: (B,) weight of each sample's step (``agents.steps``).
        kl_coef: >= 0; 0 leaves the uniform term out.
        silent: (B, h, w) 1 at silent pixels, 0 elsewhere; None leaves the silent term out.
        silent_kl_coef: >= 0.

    Returns:
        (scalar penalty, detached batch means: ``kl``, the mean KL over each sample's elements, always (it is
        measured, free once the map exists, also with ``kl_coef`` 0), and ``silent_kl`` with ``silent``).
    """
    penalty = kl_map.new_zeros(())
    kl = kl_map.flatten(1).mean(dim=1)  # (B,)
    stats: dict[str, torch.Tensor] = {"kl": kl.detach().mean()}
    if kl_coef:
        penalty = penalty + kl_coef * (step_weight * kl).mean()
    if silent is not None:
        silent_kl = (kl_map.sum(dim=1) * silent).flatten(1).sum(dim=1) / kl_map[0].numel()  # (B,)
        penalty = penalty + silent_kl_coef * (step_weight * silent_kl).mean()
        stats["silent_kl"] = silent_kl.detach().mean()
    return penalty, stats
