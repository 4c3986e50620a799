"""Colours for rewards: names and triples to RGB, and per-pixel closeness to a colour."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(images (B, 3, H, W) in [0, 1], contexts (B,)) -> (B, H, W) map or (B,) scalars``."""


def as_rgb(color: Sequence[float] | str, name: str) -> torch.Tensor:
    """An RGB triple in [0, 1] from floats or a colour name/hex understood by matplotlib."""
    if isinstance(color, str):
        from matplotlib.colors import to_rgb

        try:
            color = to_rgb(color)
        except ValueError as err:
            raise ValueError(f"{name}={color!r} is not a colour name or #rrggbb") from err
    rgb = torch.as_tensor(color, dtype=torch.float32)
    if rgb.shape != (3,) or not bool(((rgb >= 0) & (rgb <= 1)).all()):
        raise ValueError(f"{name} must be 3 floats in [0, 1] or a colour name, got {color!r}")
    return rgb


def closeness(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Euclidean RGB distance / sqrt(3): (B, 3, H, W) vs broadcastable target -> (B, H, W)."""
    return 1 - (images - target).norm(dim=1) / math.sqrt(3)
