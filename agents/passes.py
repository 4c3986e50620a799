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
        if inputs and torch.is_tensor(inputs[0]):
            self.add(int(inputs[0].shape[0]), torch.is_tensor(output) and output.requires_grad)

    def add(self, batch: int, backward: bool = False) -> None:
        """Counts a forward of ``batch`` images through a network the counter does not hook (a shared one,
        e.g. the env's frozen model as the reference), and its backward if one follows."""
        if self.counting:
            self.total += batch * (1 + BACKWARD_PASSES if backward else 1)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Passes inside this block are not counted (held-out evaluation)."""
        before, self.counting = self.counting, False
        try:
            yield
        finally:
            self.counting = before

    def __deepcopy__(self, memo: dict) -> PassCounter:
        """A copy of a counted module (e.g. a snapshot of the policy) is not the run's network: its hooks get
        an inert counter (the handles themselves cannot be copied)."""
        inert = PassCounter([])
        inert.counting = False
        return inert

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
