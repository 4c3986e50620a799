"""DenseFlow-GRPO (Guo et al., "ImageDoctor: Diagnosing Text-to-Image Generation via Grounded Image
Reasoning", arXiv 2510.01010) as an algorithm plug-in: Flow-GRPO with a per-pixel reward map.

Each pixel's advantage is its reward normalised within its prompt's group at that pixel,
A_ip = (R_ip - mean_group R_.p) / (std_group R_.p + 1e-4), clipped to +-adv_clip_max. The ratio is
clipped per image while the gradient flows per pixel: the image's ratio r_i = exp(mean over elements of
log p_theta - log p_old) decides, as PPO's clip does, whether the image is outside the trust region in the
direction of a pixel's advantage (r_i > 1 + e where A_ip > 0, r_i < 1 - e where A_ip < 0); elsewhere the
pixel contributes A_ip times its own ratio r_ip, whose gradient is A_ip r_ip grad log p_ip. Reduction as
PXPO's: the sum over pixels over C h w. Every step enters with weight 1.

The form follows the method as the paper describes it (per-pixel group advantages, a per-image clip, a
per-pixel gradient); no public code of it is known to us.
"""

from __future__ import annotations

import torch

from agents.losses import ratio_stats
from benchmarks.suite.peers.flow_grpo import FlowGRPO, FlowGRPOConfig
from benchmarks.suite.peers.groups import group_normalise

DenseFlowGRPOConfig = FlowGRPOConfig
"""Its options are Flow-GRPO's (group_eps: added to each pixel's group std)."""


class DenseFlowGRPO(FlowGRPO):
    """DenseFlow-GRPO's per-pixel group advantages and per-image clipped, per-pixel loss (module docstring);
    Flow-GRPO's options, element-scaled clip range and uniform step weights."""

    name = "denseflow-grpo"

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        adv = group_normalise(reward_maps, contexts, self.config.group_eps)  # (N, h, w)
        return adv.clamp(-self.config.adv_clip_max, self.config.adv_clip_max)

    def loss(self, logp_pixels, old_logp_pixels, advantages, num_channels, step_weight=None):
        elements = num_channels * logp_pixels[0].numel()
        pixel_logratio = logp_pixels - old_logp_pixels  # (B, h, w)
        image_logratio = pixel_logratio.sum(dim=(1, 2)) / elements  # (B,)
        if self.config.estimator == "sf":
            terms = -advantages * logp_pixels
        else:
            ratio = image_logratio.exp()[:, None, None].detach()
            e = self.config.clip_range
            outside = ((advantages > 0) & (ratio > 1 + e)) | ((advantages < 0) & (ratio < 1 - e))
            terms = torch.where(outside, torch.zeros_like(advantages), -advantages * pixel_logratio.exp())
        per_image = terms.sum(dim=(1, 2)) / elements
        if step_weight is not None:
            per_image = per_image * step_weight
        return per_image.mean(), ratio_stats(image_logratio, self.config.clip_range)
