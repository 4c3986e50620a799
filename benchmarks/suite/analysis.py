"""Turning runs' reward curves into sample-efficiency numbers.

Curves are per-epoch mean rewards against cumulative images generated,
smoothed by a trailing moving average (``smooth``, 3 epochs in the reports) so
that one lucky batch does not count as reaching a threshold. For one task, the
*best improvement seen* is the largest rise, over all algorithms, of the
seed-averaged curve above its own first epoch (the pretrained model's reward:
every run samples its first epoch before any update). A run reaches a fraction
f when its curve first gets to ``start + f * best_improvement``. An improvement
smaller than the noise of one epoch's mean reward counts as none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: point e averages epochs max(0, e - window + 1) .. e."""
    curve = np.asarray(curve, dtype=float)
    cumsum = np.concatenate([[0.0], np.cumsum(curve)])
    ends = np.arange(1, len(curve) + 1)
    starts = np.maximum(0, ends - window)
    return (cumsum[ends] - cumsum[starts]) / (ends - starts)


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


def best_improvement(curves_by_algo: dict[str, Sequence[np.ndarray]], noise: float = 0.0) -> float:
    """Largest rise of any algorithm's seed-mean curve above its first point; 0 if not above ``noise``."""
    best = 0.0
    for curves in curves_by_algo.values():
        mean = mean_curve(curves)
        best = max(best, float(mean.max() - mean[0]))
    return best if best > noise else 0.0


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
    window: int = 1,
    noise: float = 0.0,
) -> dict[str, dict[float, list[float]]]:
    """Per algorithm and fraction, the images each seed needed (``nan``: never reached).

    Each seed's target is its own first-epoch reward plus ``fraction`` times the
    task's best improvement, so seeds with different starting points compare
    fairly. Curves are smoothed over ``window`` epochs first; an improvement not
    above ``noise`` counts as none (every entry ``nan``).
    """
    curves_by_algo = {a: [smooth(c, window) for c in curves] for a, curves in curves_by_algo.items()}
    best = best_improvement(curves_by_algo, noise)
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
