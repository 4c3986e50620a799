"""PXPO: pixel-wise policy optimisation (Kordzanganeh et al., arXiv 2404.04356).

DDPO weights a whole step's log-likelihood by one reward. With DDIM's isotropic
Gaussian step the log-likelihood is a sum over elements, and PXPO keeps only
the matching terms: each pixel's reward weights that pixel's log-likelihood,

    grad J = E[ sum_ij r_ij * sum_t grad log p(x_{t-1}^ij | x_t, c) ],

where log p(x^ij) sums the pixel's channels. Our choices, fixed here:

- Reduction (``agents.losses.pxpo_loss``): per step,
  loss = -(1 / (C h w)) * sum_ij A_ij * sum_c log p(x^{c,ij}). With a constant map
  (A_ij = A) this is exactly DDPO-SF's -A * mean-over-elements log p: the "known
  scale" between the two is 1. (The paper's plain sum is C h w times ours; only
  the learning rate absorbs the difference.)
- Advantages: per context and per pixel, (r_ij - mean_ij) / (std + 1e-6) over
  the context's recent reward maps (DDPO's buffer logic: the batch's per-pixel
  statistics until a context has ``stat_min_count`` maps), clipped like DDPO's;
  the std is per pixel, pooled over the map, or per pixel floored at the pooled
  one (``pixel_std``, ``agents.advantages``). A constant map thus gives DDPO's
  scalar advantage at every pixel, whatever ``pixel_std``.
- Hybrid (``image_advantage_weight`` = lambda > 0): A_ij + lambda * A, where A
  is DDPO's image-level advantage of the same image. For rewards whose value at a
  pixel depends on other pixels (a segmentation net judges a pixel by the whole
  shape), the image term credits every pixel with the image's overall success.
  With a constant map both terms equal DDPO's advantage, so PXPO-SF is then
  (1 + lambda) x DDPO-SF (exactly DDPO-SF with lambda = 0); Adam's steps do not
  depend on a constant gradient scale (up to the grad-norm clip).
- Defaults (pooled std, lambda = 1) were picked from ``benchmarks.suite advantages``
  (README, "PXPO's advantages").
- IS variant: one ratio per pixel, clipped per pixel. Per-pixel log-ratios move
  far more per update than DDPO's mean over all elements, so PXPO's clip range
  is PPO's usual 0.2, not DDPO's 1e-4 (the measurements are in the README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.advantages import STD_MODES, ContextStats
from agents.losses import PolicyGradientConfig, pxpo_loss


@dataclass(frozen=True)
class PXPOConfig(PolicyGradientConfig):
    """PXPO's knobs: the shared ones, a per-pixel clip range, and the advantage options."""

    clip_range: float = 0.2
    """PPO clip range on the per-pixel ratio (far larger than DDPO's 1e-4: see the module docstring)."""
    pixel_std: str = "pooled"
    """Std of the per-pixel normalisation: 'pixel', 'pooled' or 'floored' (agents.advantages)."""
    image_advantage_weight: float = 1.0
    """Hybrid advantages: lambda in A_ij + lambda * A_image; 0 is pure per-pixel credit."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pixel_std not in STD_MODES:
            raise ValueError(f"pixel_std must be one of {STD_MODES}, got pixel_std={self.pixel_std!r}")
        if not self.image_advantage_weight >= 0:
            raise ValueError(
                f"image_advantage_weight must be >= 0, got image_advantage_weight={self.image_advantage_weight}"
            )


class PXPO:
    """PXPO's advantages (one per pixel) and loss.

    Args:
        config: ``PXPOConfig``.
        num_contexts: number of context ids for the per-context statistics.
        map_shape: (h, w) of the sample grid the reward maps are pooled to.
    """

    name = "pxpo"

    def __init__(self, config: PXPOConfig, num_contexts: int, map_shape: tuple[int, int]) -> None:
        self.config = config
        buffer, min_count = config.stat_buffer_size, config.stat_min_count
        self.stats = ContextStats(num_contexts, buffer, min_count, tuple(map_shape), config.pixel_std)
        self.image_stats = ContextStats(num_contexts, buffer, min_count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The per-pixel and the image-level advantage statistics, for checkpoints."""
        state = self.stats.state_dict()
        state.update({f"image_{k}": v for k, v in self.image_stats.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict({k: state[k] for k in ("buffer", "count")})
        self.image_stats.load_state_dict({k: state[f"image_{k}"] for k in ("buffer", "count")})

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """(N, h, w) advantage maps: per-pixel normalised maps (+ lambda x image advantages), clipped.

        Args:
            rewards: (N,) aggregated rewards (for the hybrid's image term).
            reward_maps: (N, h, w) reward maps on the sample grid.
            contexts: (N,) int64 context ids.
        """
        adv = self.stats.update(contexts, reward_maps)
        image_adv = self.image_stats.update(contexts, rewards)  # kept in step even when lambda = 0
        if self.config.image_advantage_weight:
            adv = adv + self.config.image_advantage_weight * image_adv[:, None, None]
        return adv.clamp(-self.config.adv_clip_max, self.config.adv_clip_max)

    def loss(
        self,
        logp_pixels: torch.Tensor,
        old_logp_pixels: torch.Tensor,
        advantages: torch.Tensor,
        num_channels: int,
        step_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss from per-pixel log-likelihoods (B, h, w), advantage maps (B, h, w) and
        optional per-sample step weights (B,)."""
        return pxpo_loss(
            logp_pixels,
            old_logp_pixels,
            advantages,
            num_channels,
            self.config.estimator,
            self.config.clip_range,
            step_weight,
        )
