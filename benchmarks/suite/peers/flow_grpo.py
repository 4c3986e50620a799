"""Flow-GRPO and Flow-GRPO-Fast (Liu et al., "Flow-GRPO: Training Flow Matching Models via Online RL",
arXiv 2505.05470; the Fast variant from the authors' public code) as algorithm plug-ins.

Flow-GRPO: G images per prompt; each image's advantage is its reward normalised within its prompt's group,
A_i = (R_i - mean_group R) / (std_group R + 1e-4), clipped to +-adv_clip_max; the loss of a step is PPO's
clipped surrogate on the image's ratio r_i = exp(log p_theta - log p_old), the log-densities averaged over
the sample's elements; every SDE step enters with weight 1 (the objective's 1/T sum over t). The KL term
beta D_KL is the trainer's ``--kl-coef`` (docs/environment.md maps beta to it).

Flow-GRPO-Fast trains a window of ``window`` consecutive steps, placed at random in the first half of the
schedule each epoch, and no other step. (The public code also samples deterministically outside the window;
here every step samples with the env's SDE, which the env does not switch per step.)

Groups: the images of one context in the epoch (``benchmarks.suite.peers.groups``). With the suite's random
contexts a group holds about images / contexts images, not exactly G.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.algorithms.base import Algorithm
from agents.losses import PolicyGradientConfig, clipped_surrogate, ratio_stats
from benchmarks.suite.peers.groups import group_normalise


@dataclass(frozen=True)
class FlowGRPOConfig(PolicyGradientConfig):
    group_eps: float = 1e-4
    """Added to the group's std (Flow-GRPO: 1e-4)."""


class FlowGRPO(Algorithm):
    """Flow-GRPO's group-normalised image advantages and clipped image-ratio loss (module docstring)."""

    name = "flow-grpo"
    config_class = FlowGRPOConfig
    default_clip_range = "elements"  # a ratio of per-element means, as DDPO's

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        adv = group_normalise(rewards, contexts, self.config.group_eps)
        return adv.clamp(-self.config.adv_clip_max, self.config.adv_clip_max)

    def loss(self, logp_pixels, old_logp_pixels, advantages, num_channels, step_weight=None):
        elements = num_channels * logp_pixels[0].numel()
        logratio = (logp_pixels - old_logp_pixels).sum(dim=(1, 2)) / elements  # (B,) mean over elements
        if self.config.estimator == "sf":
            per_image = -advantages * logp_pixels.sum(dim=(1, 2)) / elements
        else:
            per_image = clipped_surrogate(advantages, logratio, self.config.clip_range)
        if step_weight is not None:
            per_image = per_image * step_weight
        return per_image.mean(), ratio_stats(logratio, self.config.clip_range)

    def train_steps(self, weights: torch.Tensor, epoch: int) -> torch.Tensor:
        """Every step of the schedule with weight 1."""
        return torch.ones_like(weights)


@dataclass(frozen=True)
class FlowGRPOFastConfig(FlowGRPOConfig):
    window: int = 2
    """Consecutive steps trained per epoch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"window must be an int >= 1, got window={self.window!r}")


class FlowGRPOFast(FlowGRPO):
    """Flow-GRPO trained on a window of steps placed at random in the first half of the schedule."""

    name = "flow-grpo-fast"
    config_class = FlowGRPOFastConfig

    def train_steps(self, weights: torch.Tensor, epoch: int) -> torch.Tensor:
        """Weight 1 on ``window`` consecutive steps starting in the first half (a generator seeded by the
        epoch: the same window on resume), 0 elsewhere."""
        steps = weights.numel()
        window = min(self.config.window, steps)
        last_start = max(0, steps // 2 - window)
        start = int(torch.randint(last_start + 1, (1,), generator=torch.Generator().manual_seed(epoch)))
        out = torch.zeros_like(weights)
        out[start : start + window] = 1.0
        return out
