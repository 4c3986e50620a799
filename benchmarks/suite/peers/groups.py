"""Group statistics as GRPO computes them: each image against the other images of its own prompt (context)
in the same epoch, not against a running buffer."""

from __future__ import annotations

import torch


def group_normalise(values: torch.Tensor, contexts: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(values - group mean) / (group std + eps) per context, over the batch's images of that context;
    ``values`` (N, ...) scalar per image or a map per image (normalised per element). std is the population
    std (ddof 0), as numpy's in Flow-GRPO's stat tracker; an element that does not vary over its group
    (a group of one, a pixel the reward never scores) gets 0."""
    out = torch.zeros_like(values, dtype=torch.float32)
    for context in contexts.unique():
        members = contexts == context
        group = values[members].float()
        mean = group.mean(dim=0, keepdim=True)
        std = group.std(dim=0, unbiased=False, keepdim=True)
        centred = group - mean
        out[members] = torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
    return out
