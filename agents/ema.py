"""An exponential moving average of the policy's trainable weights, for evaluation.

After every optimizer step: ema <- decay * ema + (1 - decay) * theta, for the
trainable parameters only (all weights, or LoRA's), so it costs one copy of what
training changes. ``swapped_in`` puts the averaged weights into the policy for
the duration of a ``with`` block (evaluation) and restores the trained ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EMA:
    """EMA of a module's trainable parameters.

    Args:
        module: the policy.
        decay: in [0, 1); 0.99 averages over roughly the last 100 optimizer steps.

    Raises:
        ValueError: decay outside [0, 1).
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got ema_decay={decay}")
        self.decay = decay
        self.module = module
        self.shadow = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self) -> None:
        """ema <- decay * ema + (1 - decay) * theta, after an optimizer step."""
        for name, param in self.module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the module inside the block; the trained ones restored after."""
        params = dict(self.module.named_parameters())
        trained = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in trained.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ValueError(
                f"EMA state does not match the policy: {len(set(state) ^ set(self.shadow))} names differ"
            )
        self.shadow = {name: value.clone() for name, value in state.items()}
