"""Small rewards and an env builder that PXPO's credit, silent-pixel and locality tests share (named by
import path, 'tests.agents.toy_rewards:NAME', where a test passes a reward to the env)."""

from __future__ import annotations

import gymnasium as gym
import torch

import pxpo_gym  # noqa: F401  (registers the env)


def tiny_core(model_dir, reward: str):
    """The core env of 2 slots on the tiny model with the given reward."""
    return gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(model_dir), reward=reward).unwrapped


def brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=1)


def box_brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """A reward with a known 3x3 footprint: the mean brightness of the pixel's 3x3 neighbourhood."""
    gray = images.mean(dim=1, keepdim=True)
    return torch.nn.functional.avg_pool2d(gray, 3, stride=1, padding=1, count_include_pad=True)[:, 0]


def right_neighbour_brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """A reward with a known one-sided footprint: pixel q scores the brightness of q + (0, 1)."""
    gray = images.mean(dim=1)
    out = torch.zeros_like(gray)
    out[..., :-1] = gray[..., 1:]
    return out


def region_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Scores the left half's redness; the right half scores 0 whatever it shows."""
    out = images[:, 0].clone()
    out[..., images.shape[-1] // 2 :] = 0.0
    return out


def mean_red_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """The image's mean redness at every pixel: no pixel is silent while the images vary."""
    return images[:, 0].mean(dim=(1, 2))[:, None, None].expand(-1, *images.shape[2:]).contiguous()


def gated_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Redness where the image's mean green is under 0.3 (no noise image passes), else 0."""
    gate = (images[:, 1].mean(dim=(1, 2)) < 0.3).float()
    return images[:, 0] * gate[:, None, None]


def raised_region_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Blueness on the left half; the right half a constant of the context (0.5, 0.6, 0.7): never looked at,
    and above the rest of the map's minimum."""
    out = images[:, 2].clone()
    out[..., 4:] = 0.5 + 0.1 * contexts.to(out)[:, None, None]
    return out


def rare_bright_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    return (images.amax(dim=1) > 0.97).float()
