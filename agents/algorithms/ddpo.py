"""DDPO: denoising diffusion policy optimisation (Black et al., arXiv 2305.13301).

One scalar reward per image weights the log-likelihood of every denoising step.
The per-step log-likelihood is the MEAN over the sample's elements (as in the
reference code), which is what makes its PPO clip range of 1e-4 meaningful.
Advantages: each image's reward normalised by its context's recent rewards
(``agents.advantages``), clipped. Loss: ``agents.losses.ddpo_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..advantages import ContextStats
from ..losses import PolicyGradientConfig, ddpo_loss
from .base import Algorithm


@dataclass(frozen=True)
class DDPOConfig(PolicyGradientConfig):
    """DDPO's knobs. Defaults follow the DDPO reference code (clip range 1e-4 on the mean log-ratio, scaled
    for the sample's element count)."""

    clip_range: float | None = None  # type: ignore[assignment]
    """PPO clip range on the ratio of per-element means; None: the reference's 1e-4 scaled for the sample's
    element count, 1e-4 x sqrt(16384 / (C h w)) (``agents.config.ddpo_clip_range``; 4.6e-4 on the default
    model), resolved when the trainer knows the model."""


class DDPO(Algorithm):
    """DDPO's advantages (one per image) and loss.

    Args:
        config: ``DDPOConfig``.
        num_contexts: number of context ids for the per-context statistics.
        map_shape: (h, w) of the sample grid (unused: DDPO's rewards are scalars).
    """

    name = "ddpo"
    config_class = DDPOConfig

    def __init__(self, config: DDPOConfig, num_contexts: int, map_shape: tuple[int, int]) -> None:
        if config.clip_range is None:
            raise ValueError(
                "clip_range=None is DDPO's default scaled for the sample's element count, resolved by the "
                "trainer (TrainConfig.algo_config); building DDPO yourself, give it a number (ddpo_clip_range)"
            )
        super().__init__(config, num_contexts, map_shape)
        self.stats = ContextStats(num_contexts, config.stat_buffer_size, config.stat_min_count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The advantage statistics, for checkpoints."""
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict(state)

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """(N,) normalised, clipped advantages of the (N,) rewards; ``reward_maps`` (N, h, w) unused."""
        adv = self.stats.update(contexts, rewards)
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
