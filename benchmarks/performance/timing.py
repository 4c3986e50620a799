"""Timing helpers shared by the performance benchmarks."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Waits for queued GPU work so that wall-clock times are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's where torch runs on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
