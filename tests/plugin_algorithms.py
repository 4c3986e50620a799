"""Algorithms as an outside user writes them (public modules only), and broken ones, for tests/agents/test_algorithms.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.algorithms.base import Algorithm
from agents.algorithms.oracle import Oracle
from agents.losses import PolicyGradientConfig, ratio_stats


@dataclass(frozen=True)
class BatchBaselineConfig(PolicyGradientConfig):
    baseline: str = "batch"
    """'batch': advantages are rewards less the batch mean, over the batch std; 'none': the raw rewards."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline not in ("batch", "none"):
            raise ValueError(f"baseline must be 'batch' or 'none', got baseline={self.baseline!r}")


class BatchBaseline(Algorithm):
    """REINFORCE with a batch-mean baseline: one advantage per image, the score function of the mean
    log-likelihood over elements, each step weighted."""

    name = "batch-baseline"
    config_class = BatchBaselineConfig

    def advantages(self, rewards, reward_maps, contexts):
        if self.config.baseline == "none":
            return rewards.clone()
        return (rewards - rewards.mean()) / (rewards.std() + 1e-6)

    def loss(self, logp_pixels, old_logp_pixels, advantages, num_channels, step_weight=None):
        elements = num_channels * logp_pixels[0].numel()
        logp = logp_pixels.sum(dim=(1, 2)) / elements
        old = old_logp_pixels.sum(dim=(1, 2)) / elements
        per_image = -advantages * logp * (1.0 if step_weight is None else step_weight)
        return per_image.mean(), ratio_stats(logp - old, self.config.clip_range)


class NoLoss(Algorithm):
    config_class = PolicyGradientConfig

    def advantages(self, rewards, reward_maps, contexts):
        return rewards


class NotAnAlgorithm:
    config_class = PolicyGradientConfig

    def advantages(self, rewards, reward_maps, contexts):
        return rewards

    def loss(self, *args):
        return torch.zeros(()), {}


not_a_class = 3


class OracleCopy(Oracle):
    """An algorithm of one's own that backpropagates through its sampler, as the oracle does."""

    name = "oracle-copy"
