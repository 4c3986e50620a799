"""Whether today's code reproduces a suite's committed runs, bit for bit.

A default changes; the runs it does not touch should not need re-running. This
re-runs the first epochs of chosen grid cells exactly as the preset would run them
now (``benchmarks.suite.grid.train_config``: today's defaults, the cell's seed) and
compares the logged columns, epoch by epoch, with the runs' own ``metrics.csv``.
On CPU runs are deterministic, so "reproduced" means equal floats, not close ones.

    python -m benchmarks.suite.reproduce --runs benchmarks/results/full \\
        --tasks color target_map region --label pxpo --out outputs/benchmarks/reproduce.json

The runs' folders are not committed; the suite command that wrote them rebuilds them.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.provenance import provenance, write_result
from benchmarks.suite.grid import PRESETS, run_dir, train_config


@dataclass(frozen=True)
class ReproduceConfig:
    """Which cells of which preset's runs to re-run, and for how long."""

    runs: str
    """The suite's output folder holding runs/TASK/LABEL/seedK/metrics.csv."""
    preset: str = "full"
    """The preset those runs came from (benchmarks.suite.grid.PRESETS)."""
    tasks: tuple[str, ...] = ("color", "target_map", "region")
    """Tasks to check."""
    label: str = "pxpo"
    """The arm's label in the preset (e.g. 'pxpo', 'ddpo')."""
    seeds: tuple[int, ...] = (0,)
    """Seeds to check."""
    epochs: int = 4
    """Epochs re-run and compared (from the first)."""
    columns: tuple[str, ...] = ("reward_mean", "reward_std", "loss", "approx_kl", "grad_norm")
    """metrics.csv columns that must be equal."""
    out: str = "outputs/benchmarks/reproduce.json"
    """Output JSON file."""


def _committed(path: Path, columns: tuple[str, ...], epochs: int) -> list[dict[str, float]]:
    from agents.metrics import read_metrics

    if not path.is_file():
        raise ValueError(f"no committed run at {path}: run the suite there first")
    rows = read_metrics(path)
    if len(rows) < epochs:
        raise ValueError(f"{path} has {len(rows)} epochs, fewer than epochs={epochs}")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; it has {sorted(rows[0])}")
    return [{c: row[c] for c in columns} for row in rows[:epochs]]


def measure(cfg: ReproduceConfig) -> dict:
    from agents.runs import train

    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got preset={cfg.preset!r}")
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got epochs={cfg.epochs}")
    suite = replace(PRESETS[cfg.preset](), out=cfg.runs)
    result: dict = {
        **provenance("benchmarks.suite.reproduce"),
        "preset": cfg.preset,
        "epochs": cfg.epochs,
        "cells": [],
    }
    for task in cfg.tasks:
        arms = {arm.label: arm for arm in suite.arms(task)}
        if cfg.label not in arms:
            raise ValueError(f"label must be one of {sorted(arms)} on task {task!r}, got label={cfg.label!r}")
        for seed in cfg.seeds:
            committed = _committed(
                run_dir(suite, task, cfg.label, seed) / "metrics.csv", cfg.columns, cfg.epochs
            )
            with tempfile.TemporaryDirectory() as tmp:
                config = train_config(suite, task, arms[cfg.label], seed, Path(tmp) / "run")
                rerun = train(config.replace(num_epochs=cfg.epochs, overwrite=True))
                chosen = Path(tmp) / "run" / "credit.json"
                credit = (
                    json.loads(chosen.read_text())["chosen"]
                    if chosen.is_file()
                    else getattr(config.algorithm, "credit", None)
                )
            if (
                getattr(config.algorithm, "credit", None) == "checked" and rerun
            ):  # the credit its last epoch trained with
                credit = "pixel" if rerun[-1].get("credit_pixel") == 1 else "image"
            equal = [all(same(new[c], old[c]) for c in cfg.columns) for new, old in zip(rerun, committed)]
            result["cells"].append(
                {
                    "task": task,
                    "label": cfg.label,
                    "seed": seed,
                    "credit": credit,
                    "equal_per_epoch": equal,
                    "rerun": [{c: row[c] for c in cfg.columns} for row in rerun],
                    "committed": committed,
                }
            )
    result["all_equal"] = all(all(cell["equal_per_epoch"]) for cell in result["cells"])
    return result


def same(new: float, old: float) -> bool:
    """Equal floats, NaN equal to NaN (a column the algorithm does not fill, e.g. the oracle's approx_kl)."""
    return new == old or (math.isnan(new) and math.isnan(old))


def main(cfg: ReproduceConfig) -> dict:
    result = measure(cfg)
    out = write_result(cfg.out, result)
    for cell in result["cells"]:
        verdict = "bit for bit" if all(cell["equal_per_epoch"]) else f"DIFFERENT {cell['equal_per_epoch']}"
        print(f"{cell['task']} {cell['label']} seed {cell['seed']} (credit {cell['credit']}): {verdict}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(ReproduceConfig)), "benchmarks.suite.reproduce")
