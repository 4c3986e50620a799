"""Rewards of the breadth suite whose pixels are not independent of each other.

The built-ins in ``pxpo_gym.rewards`` score each pixel by itself (colour, a
painted target) or through a network. The rewards here break PXPO's premise on
purpose, each in one way, so that a default chosen on them is safe on rewards
nobody here wrote (``benchmarks.suite.tasks`` tags each with its family):

- near-local: ``blurred_color`` scores a pixel by its neighbourhood's mean
  closeness to a colour (a box blur of ``color``);
- partial: ``frame`` scores a border of the image and is exactly 0 inside;
- content-dependent (which pixels count depends on the image): ``shape_color``
  scores the shape's pixels, ``background_color`` the background's, where the
  shape is told from the background by its distance to the border's median
  colour (``foreground``);
- interacting (pixels coupled through one number of the image): ``gated_shape``
  scores shape pixels red and background pixels blue, all scaled by a gate on how
  much foreground is left (a flat image scores 0); ``color_budget`` scores each
  pixel's closeness to a colour minus a penalty, shared by every pixel, on the
  image's mean closeness beyond a budget;
- relational: ``symmetry`` scores a pixel by how like its mirror pixel it is;
  ``shape_position`` scores the shape's pixels by how close the shape's centroid
  is to a wanted position;
- scalar: ``contrast``, the std of the image's luminance, one number per image.

Every function takes images (B, 3, H, W) in [0, 1] and contexts (B,) and is
differentiable in the images; sizes are relative, so any resolution works.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from pxpo_gym.colors import RewardFn, as_rgb, closeness

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luminance weights."""
FOREGROUND_DISTANCE = 0.3
"""``foreground``: RGB distance from the background colour at which a pixel is half foreground."""
FOREGROUND_SOFTNESS = 0.05
"""``foreground``: the width of the sigmoid around FOREGROUND_DISTANCE."""


def _positive(value: float, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    return float(value)


def _fraction(value: float, name: str, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {name}={value!r}")
    return float(value)


def background_color(images: torch.Tensor) -> torch.Tensor:
    """(B, 3): each image's background colour, the per-channel median of its border pixels."""
    border = torch.cat(
        [images[:, :, 0, :], images[:, :, -1, :], images[:, :, 1:-1, 0], images[:, :, 1:-1, -1]], dim=2
    )  # (B, 3, 2W + 2H - 4)
    return border.median(dim=2).values


def foreground(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) in (0, 1): how much each pixel belongs to the shape, a sigmoid of its RGB distance from the
    background colour (``background_color``) around FOREGROUND_DISTANCE. Soft, so that it has a gradient."""
    distance = (images - background_color(images)[:, :, None, None]).norm(dim=1)  # (B, H, W)
    return torch.sigmoid((distance - FOREGROUND_DISTANCE) / FOREGROUND_SOFTNESS)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W): BT.601 luminance."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    return (images * weights[None, :, None, None]).sum(dim=1)


def blurred_color_reward(target: Sequence[float] | str = "red", size: int = 3) -> RewardFn:
    """Near-local: the mean closeness to ``target`` over each pixel's size x size neighbourhood
    (edges padded by replication), in [0, 1].

    Args:
        target: a colour (3 floats in [0, 1] or a name).
        size: the odd width of the box, >= 3.
    """
    rgb = as_rgb(target, "target")
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd int >= 3, got size={size!r}")

    def blurred_color(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        close = closeness(images, rgb.to(images.device)[None, :, None, None])[:, None]  # (B, 1, H, W)
        padded = torch.nn.functional.pad(close, [size // 2] * 4, mode="replicate")
        return torch.nn.functional.avg_pool2d(padded, size, stride=1)[:, 0]

    return blurred_color


def frame_mask(height: int, width: int, width_fraction: float) -> torch.Tensor:
    """(H, W) bool: the border of the image ``width_fraction`` of its height (at least one pixel) thick."""
    band = max(1, round(width_fraction * min(height, width)))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = True, True, True, True
    return mask


def frame_reward(target: Sequence[float] | str = "green", width_fraction: float = 0.1875) -> RewardFn:
    """Partial: closeness to ``target`` on a frame around the image (3 pixels of 16 by default); exactly 0
    inside it, whatever the inside shows."""
    rgb = as_rgb(target, "target")
    width_fraction = _fraction(width_fraction, "width_fraction", 0.0, 0.5)

    def frame(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        mask = frame_mask(*images.shape[2:], width_fraction).to(images.device)
        return closeness(images, rgb.to(images.device)[None, :, None, None]) * mask

    return frame


def shape_color_reward(target: Sequence[float] | str = "red") -> RewardFn:
    """Content-dependent: closeness to ``target`` weighted by how much the pixel is shape (``foreground``);
    about 0 on the background. Painting the whole image the target colour scores 0: the border then has it
    too, and nothing stands out from the background."""
    rgb = as_rgb(target, "target")

    def shape_color(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return foreground(images) * closeness(images, rgb.to(images.device)[None, :, None, None])

    return shape_color


def background_color_reward(target: Sequence[float] | str = "white") -> RewardFn:
    """Content-dependent: closeness to ``target`` weighted by how much the pixel is background (1 -
    ``foreground``); about 0 on the shape."""
    rgb = as_rgb(target, "target")

    def background(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return (1 - foreground(images)) * closeness(images, rgb.to(images.device)[None, :, None, None])

    return background


def gated_shape_reward(
    shape: Sequence[float] | str = "red", background: Sequence[float] | str = "blue", gate: float = 0.15
) -> RewardFn:
    """Interacting: shape pixels close to ``shape``, background pixels close to ``background``
    (f * close(shape) + (1 - f) * close(background), f = ``foreground``), all multiplied by the image's gate
    min(1, mean(f) / gate). An image with less than ``gate`` of its area in the shape loses reward at every
    pixel; a flat image scores 0. The embedded model's images hold about 0.12 of their area in the shape (by
    ``foreground``), so at ``gate=0.05`` the gate is open on most of them and binds on the faintest."""
    shape_rgb, background_rgb = as_rgb(shape, "shape"), as_rgb(background, "background")
    gate = _fraction(gate, "gate", 1e-3, 1.0)

    def gated_shape(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        fg = foreground(images)  # (B, H, W)
        close_shape = closeness(images, shape_rgb.to(images.device)[None, :, None, None])
        close_background = closeness(images, background_rgb.to(images.device)[None, :, None, None])
        opened = (fg.mean(dim=(1, 2)) / gate).clamp(max=1.0)  # (B,)
        return opened[:, None, None] * (fg * close_shape + (1 - fg) * close_background)

    return gated_shape


def color_budget_reward(
    target: Sequence[float] | str = "red", budget: float = 0.6, penalty: float = 3.0
) -> RewardFn:
    """Interacting: each pixel's closeness c to ``target`` minus ``penalty`` x max(0, mean(c) - ``budget``),
    the same penalty at every pixel of the image. The image's mean reward is m - penalty x max(0, m -
    budget), best at m = budget; each pixel alone gains by moving to the target."""
    rgb = as_rgb(target, "target")
    budget = _fraction(budget, "budget")
    penalty = _positive(penalty, "penalty")

    def color_budget(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        close = closeness(images, rgb.to(images.device)[None, :, None, None])  # (B, H, W)
        over = (close.mean(dim=(1, 2)) - budget).clamp(min=0)  # (B,)
        return close - penalty * over[:, None, None]

    return color_budget


def symmetry_reward() -> RewardFn:
    """Relational: 1 - the mean absolute RGB difference between a pixel and its mirror across the vertical
    midline, in [0, 1]. A pixel's reward depends on its mirror pixel as much as on itself."""

    def symmetry(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return 1 - (images - images.flip(dims=(3,))).abs().mean(dim=1)

    return symmetry


def shape_position_reward(x: float = 0.3, y: float = 0.5) -> RewardFn:
    """Relational: each pixel's ``foreground`` f times 1 - 2 x the distance from the shape's centroid (the
    f-weighted mean position, coordinates in [0, 1] of the width and height) to (x, y), floored at 0. Moving
    one pixel moves every shape pixel's reward through the centroid."""
    x, y = _fraction(x, "x"), _fraction(y, "y")

    def shape_position(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        fg = foreground(images)  # (B, H, W)
        height, width = fg.shape[1:]
        rows = (torch.arange(height, device=images.device, dtype=fg.dtype) + 0.5) / height
        cols = (torch.arange(width, device=images.device, dtype=fg.dtype) + 0.5) / width
        mass = fg.sum(dim=(1, 2)).clamp(min=1e-6)  # (B,)
        cy = (fg * rows[None, :, None]).sum(dim=(1, 2)) / mass
        cx = (fg * cols[None, None, :]).sum(dim=(1, 2)) / mass
        distance = ((cx - x).square() + (cy - y).square()).sqrt()
        return fg * (1 - 2 * distance).clamp(min=0)[:, None, None]

    return shape_position


def contrast_reward() -> RewardFn:
    """Scalar: the standard deviation of the image's luminance, one number per image (about 0.5 at most)."""

    def contrast(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return luminance(images).flatten(1).std(dim=1)

    return contrast


def gradient_target_reward(
    dark: Sequence[float] | str = "black", light: Sequence[float] | str = "white"
) -> RewardFn:
    """Pixel-local: per-pixel closeness to a horizontal ramp from ``dark`` (left column) to ``light`` (right
    column)."""
    dark_rgb, light_rgb = as_rgb(dark, "dark"), as_rgb(light, "light")

    def gradient_target(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        width = images.shape[3]
        ramp = torch.linspace(0, 1, width, device=images.device, dtype=images.dtype)  # (W,)
        low, high = dark_rgb.to(images.device), light_rgb.to(images.device)
        target = low[:, None] + (high - low)[:, None] * ramp[None]  # (3, W)
        return closeness(images, target[None, :, None, :])

    return gradient_target


SUITE_REWARDS: dict[str, Callable[..., RewardFn]] = {
    "blurred_color": blurred_color_reward,
    "frame": frame_reward,
    "shape_color": shape_color_reward,
    "background_color": background_color_reward,
    "gated_shape": gated_shape_reward,
    "color_budget": color_budget_reward,
    "symmetry": symmetry_reward,
    "shape_position": shape_position_reward,
    "contrast": contrast_reward,
    "gradient_target": gradient_target_reward,
}
"""The breadth suite's reward factories, registered among ``pxpo_gym.rewards.REWARDS``."""
