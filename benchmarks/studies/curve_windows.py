"""Runs' logged curves in windows of epochs: where a curve climbs, where it is flat.

The suite's tables give each run's start, peak and final reward; a plot shows the
curves. This puts numbers on the shape between them: for each arm (a folder of
``seedK/metrics.csv`` runs, as the suite writes them) the mean of each logged
column over consecutive windows of epochs, per seed and over seeds. Windows are
non-overlapping and full (a trailing partial window is dropped); a NaN in a column
(a metric the run does not log) makes that window's value NaN.

    python -m benchmarks.studies.curve_windows \\
        --arms ddpo=benchmarks/results/full/runs/segmentation/ddpo \\
               pxpo=benchmarks/results/full/runs/segmentation/pxpo \\
        --columns reward_mean silent_kl --window 8 --out outputs/benchmarks/windows.json

The runs' folders are not committed; the suite command that wrote them rebuilds them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.provenance import provenance, write_result


@dataclass(frozen=True)
class WindowsConfig:
    """Window means of logged columns for several arms' runs."""

    arms: tuple[str, ...]
    """LABEL=FOLDER pairs; FOLDER holds one ``seed*/metrics.csv`` per seed (a suite's OUT/runs/TASK/ARM)."""
    columns: tuple[str, ...] = ("reward_mean",)
    """metrics.csv columns to average."""
    window: int = 8
    """Epochs per window (8 x 32 images = 256 images in the suite)."""
    out: str = "outputs/benchmarks/curve_windows.json"
    """Output JSON file."""


def window_means(values: np.ndarray, window: int) -> np.ndarray:
    """(E,) per-epoch values -> (E // window,) means of consecutive full windows."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got window={window}")
    full = len(values) // window
    return np.asarray(values[: full * window], dtype=float).reshape(full, window).mean(axis=1)


def read_arm(
    folder: str | Path, columns: tuple[str, ...]
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """(seed names, (E,) images at each epoch's end, {column: (S, E) values}) of an arm's runs.

    Raises:
        ValueError: no ``seed*/metrics.csv`` in ``folder``, a missing column, or seeds of different lengths.
    """
    files = sorted(Path(folder).glob("seed*/metrics.csv"))
    if not files:
        raise ValueError(f"arm folder {str(folder)!r} has no seed*/metrics.csv")
    seeds, images, values = [], None, {c: [] for c in columns}
    for path in files:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise ValueError(f"{path} has no epochs")
        for column in (*columns, "images"):
            if column not in rows[0]:
                raise ValueError(f"{path} has no column {column!r}; it has {sorted(rows[0])}")
        run_images = np.array([float(r["images"]) for r in rows])
        if images is not None and len(run_images) != len(images):
            raise ValueError(f"{path} has {len(run_images)} epochs, {files[0]} has {len(images)}")
        images = run_images if images is None else images
        seeds.append(path.parent.name)
        for column in columns:
            values[column].append([float(r[column]) if r[column] != "" else math.nan for r in rows])
    return seeds, images, {c: np.asarray(v, dtype=float) for c, v in values.items()}


def _rounded(values: np.ndarray) -> list:
    return [None if math.isnan(v) else round(float(v), 5) for v in np.asarray(values).ravel()]


def measure(cfg: WindowsConfig) -> dict:
    result: dict = {**provenance("benchmarks.studies.curve_windows"), "window_epochs": cfg.window, "arms": {}}
    for spec in cfg.arms:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            raise ValueError(f"arms entries must be LABEL=FOLDER, got {spec!r}")
        seeds, images, values = read_arm(folder, cfg.columns)
        full = len(images) // cfg.window
        if full == 0:
            raise ValueError(f"arm {label!r} has {len(images)} epochs, fewer than window={cfg.window}")
        ends = images[: full * cfg.window].reshape(full, cfg.window)
        arm = {
            "folder": folder,
            "seeds": seeds,
            "window_images": [[int(a), int(b)] for a, b in ends[:, [0, -1]]],
        }
        for column, per_seed in values.items():
            windows = np.stack([window_means(v, cfg.window) for v in per_seed])  # (S, W)
            arm[column] = {"mean": _rounded(windows.mean(axis=0)), "per_seed": [_rounded(w) for w in windows]}
        result["arms"][label] = arm
    return result


def main(cfg: WindowsConfig) -> dict:
    result = measure(cfg)
    out = write_result(cfg.out, result)
    for label, arm in result["arms"].items():
        spans = ", ".join(f"{a}-{b}" for a, b in arm["window_images"])
        print(f"{label} ({len(arm['seeds'])} seeds; windows ending at images {spans}):")
        for column in cfg.columns:
            print(f"  {column}: " + " ".join("nan" if v is None else f"{v:.4g}" for v in arm[column]["mean"]))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(WindowsConfig)), "benchmarks.studies.curve_windows")
