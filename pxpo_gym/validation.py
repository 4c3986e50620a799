"""The env's input checks: actions, batch sizes and devices refused with a message that names the argument,
the value and what is allowed, before any state changes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def check_actions(actions: Any, want: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Validates a batch of actions; returns it as float32.

    Raises:
        TypeError: not a torch tensor, not dense, or not a floating dtype.
        ValueError: shape other than ``want``, another device, NaN or inf.
    """
    if not isinstance(actions, torch.Tensor):
        raise TypeError(
            f"actions must be a torch.Tensor of shape {want} on {device}, got "
            f"{type(actions).__name__} (wrap numpy envs with gymnasium.wrappers.vector.ArrayConversion)"
        )
    if actions.layout != torch.strided:
        raise TypeError(f"actions must be a dense (strided) tensor, got layout={actions.layout}")
    if not actions.is_floating_point():
        raise TypeError(f"actions must have a floating dtype, got dtype={actions.dtype}")
    if tuple(actions.shape) != want:
        raise ValueError(f"actions must have shape {want}, got shape {tuple(actions.shape)}")
    if actions.device != device and not (
        actions.device.type == device.type == "cuda" and device.index is None
    ):
        raise ValueError(f"actions must be on device {device}, got device {actions.device}")
    if not bool(torch.isfinite(actions).all()):
        raise ValueError(f"actions contain {int((~torch.isfinite(actions)).sum())} NaN or inf values")
    return actions.float()


def parse_num_envs(num_envs: Any) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got num_envs={num_envs!r}")
    return int(num_envs)


def parse_device(device: Any) -> torch.device:
    """``device`` -> torch.device, refusing one this torch build or machine cannot use."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda', got device={device!r}"
        ) from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available to this torch ({torch.__version__}); use device='cpu'"
        )
    return parsed
