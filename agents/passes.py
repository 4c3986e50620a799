"""Counting network passes: the cost of a run in the unit every method pays, whatever its hardware.

One pass is one image through the denoiser once: a forward of a batch of B samples is B
passes, and a forward whose output carries gradients (a backward follows: the loss's, the
oracle's, a footprint probe's) counts 3 B, its backward counted as 2. Classifier-free
guidance's doubled batch counts double. The policy and the frozen reference both count;
held-out evaluation does not (``paused``): it measures the run, it does not train it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

BACKWARD_PASSES = 2
"""A backward pass costs this many forward passes."""


class PassCounter:
    """Counts passes through the given modules (forward hooks; each module once, however often given).

    Args:
        modules: the networks to count (e.g. the policy and the reference noise models).
    """

    def __init__(self, modules: Iterable[torch.nn.Module]) -> None:
        self.total = 0
        """Passes counted so far (cumulative over the run, restored on resume)."""
        self.counting = True
        self._handles = []
        seen: set[int] = set()
        for module in modules:
            if id(module) not in seen:
                seen.add(id(module))
                self._handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not self.counting or not inputs or not torch.is_tensor(inputs[0]):
            return
        batch = int(inputs[0].shape[0])
        grads = torch.is_tensor(output) and output.requires_grad
        self.total += batch * (1 + BACKWARD_PASSES if grads else 1)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Passes inside this block are not counted (held-out evaluation)."""
        before, self.counting = self.counting, False
        try:
            yield
        finally:
            self.counting = before

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
