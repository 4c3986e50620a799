"""Turning runs' reward curves into sample-efficiency numbers.

Curves are per-epoch mean rewards against cumulative images generated. For one
task, the *best improvement seen* is the largest rise, over all algorithms,
of the seed-averaged curve above its own first epoch (the pretrained model's
reward: every run samples its first epoch before any update). A run reaches a
fraction f when its curve first gets to ``start + f * best_improvement``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_curve(curves: Sequence[np.ndarray]) -> np.ndarray:
    """(S, E) reward curves of S seeds -> (E,) mean. All curves must have the same length."""
    return np.asarray(curves, dtype=float).mean(axis=0)


def confidence_band(curves: Sequence[np.ndarray], level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t confidence band of the mean over seeds: (low, high), each (E,).

    With one seed the band collapses to the curve itself.
    """
    arr = np.asarray(curves, dtype=float)
    mean = arr.mean(axis=0)
    if arr.shape[0] < 2:
        return mean, mean
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, arr.shape[0] - 1) * arr.std(axis=0, ddof=1) / math.sqrt(arr.shape[0])
    return mean - half, mean + half


def best_improvement(curves_by_algo: dict[str, Sequence[np.ndarray]]) -> float:
    """Largest rise of any algorithm's seed-mean curve above its first point (>= 0)."""
    best = 0.0
    for curves in curves_by_algo.values():
        mean = mean_curve(curves)
        best = max(best, float(mean.max() - mean[0]))
    return best


def images_to_reach(curve: np.ndarray, images: np.ndarray, target: float) -> float:
    """Images generated when ``curve`` first reaches ``target``; ``nan`` if it never does.

    Args:
        curve: (E,) per-epoch mean reward.
        images: (E,) cumulative images generated at the end of each epoch.
        target: the reward to reach.
    """
    hits = np.nonzero(np.asarray(curve) >= target)[0]
    return float(images[hits[0]]) if hits.size else math.nan


def samples_to_threshold(
    curves_by_algo: dict[str, Sequence[np.ndarray]],
    images: np.ndarray,
    fractions: Sequence[float] = (0.5, 0.9),
) -> dict[str, dict[float, list[float]]]:
    """Per algorithm and fraction, the images each seed needed (``nan``: never reached).

    Each seed's target is its own first-epoch reward plus ``fraction`` times the
    task's best improvement, so seeds with different starting points compare fairly.
    """
    best = best_improvement(curves_by_algo)
    out: dict[str, dict[float, list[float]]] = {}
    for algo, curves in curves_by_algo.items():
        out[algo] = {}
        for fraction in fractions:
            out[algo][fraction] = [
                images_to_reach(np.asarray(c), images, float(c[0]) + fraction * best)
                if best > 0
                else math.nan
                for c in curves
            ]
    return out


def summarise(values: Sequence[float]) -> str:
    """'median [min-max] (k/n reached)' of a list of image counts, nan meaning not reached."""
    arr = np.asarray(values, dtype=float)
    reached = arr[~np.isnan(arr)]
    if reached.size == 0:
        return f"not reached (0/{arr.size})"
    text = f"{np.median(reached):.0f} [{reached.min():.0f}-{reached.max():.0f}]"
    return text + (f" ({reached.size}/{arr.size} reached)" if reached.size < arr.size else "")
