"""Passes to target on held-out images: what a window of trained steps (issue 35) saves, arm against arm.

    python -m benchmarks.suite.passes passes-train --out benchmarks/results/passes_train
    python -m benchmarks.suite.passes passes-test --out benchmarks/results/passes_test

Reads a suite folder whose runs were evaluated every epoch (``eval_every=1``) and writes ``passes.csv``
(one row per run) and ``passes.md`` (one row per task and arm) beside its report. Progress is read on the
held-out images (fixed noise, every step sampled as the run's sampler says), not on the training images:
an arm that samples the steps outside its window without noise ('-det') draws its training images from
another sampler, so its training reward is not comparable with the others'. Per run:

- start: the pretrained model's held-out reward (``eval_reference.json``), final: the mean of the last
  ``SMOOTH_EPOCHS`` evaluations;
- passes to 90% of its own gain: network passes (``agents.passes``) spent when the held-out curve,
  smoothed over ``SMOOTH_EPOCHS`` evaluations, first reaches start + 0.9 (final - start);
- passes to 90% of the task's best gain: the same with the best arm's seed-mean gain (the suite's target);
- seconds: sampling and training (one torch thread), to the same point.

Per arm against its baseline arm (``--baseline``; by default the first arm of the same algorithm): the ratio of the median passes
to 90% of its own gain (baseline / arm: above 1 is fewer passes), and whether its final held-out reward is
within one standard deviation (over seeds) of the baseline's.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import tyro

from agents.metrics import read_metrics
from benchmarks.provenance import provenance
from benchmarks.suite.analysis import smooth
from benchmarks.suite.grid import PRESETS, SuiteConfig, read_runs_commits, run_dir
from benchmarks.suite.report import SMOOTH_EPOCHS

FRACTION = 0.9
PRECISION = 1e-4
"""The table's rounding: 'within 1 std' allows at least this much below the baseline (a baseline whose seeds
all end at the same value has std 0)."""


@dataclasses.dataclass
class Run:
    """One run's held-out curve (start first) and its cumulative cost at each point."""

    rewards: np.ndarray
    passes: np.ndarray
    seconds: np.ndarray
    shape: float = math.nan
    """Held-out shape match at the last evaluation (fidelity: a reward won by erasing content shows here)."""
    distance: float = math.nan
    """Held-out RMS distance to the pretrained model's images at the last evaluation."""

    @property
    def start(self) -> float:
        return float(self.rewards[0])

    @property
    def final(self) -> float:
        return float(self.rewards[-SMOOTH_EPOCHS:].mean())


def load_run(folder: Path, epochs: int) -> Run:
    """A run's held-out curve and costs; refuses a run not evaluated at every epoch."""
    rows = read_metrics(folder / "metrics.csv")[:epochs]
    if len(rows) < epochs:
        raise ValueError(f"{folder}: {len(rows)} of {epochs} epochs done")
    held = [row.get("eval_reward", math.nan) for row in rows]
    if any(math.isnan(value) for value in held):
        raise ValueError(f"{folder}: not evaluated at every epoch (the suite's eval_every must be 1)")
    reference = json.loads((folder / "eval_reference.json").read_text())["eval_reward"]
    passes = [row.get("passes", math.nan) for row in rows]
    seconds = np.cumsum([row["seconds"] for row in rows])
    last = rows[-1]
    return Run(
        np.array([reference, *held]),
        np.array([0.0, *passes]),
        np.array([0.0, *seconds]),
        last.get("fidelity_shape", math.nan),
        last.get("fidelity_distance", math.nan),
    )


def cost_to(run: Run, target: float) -> tuple[float, float]:
    """(passes, seconds) spent when the smoothed held-out curve first reaches ``target``; NaN if never."""
    hits = np.nonzero(smooth(run.rewards, SMOOTH_EPOCHS) >= target)[0]
    if not hits.size:
        return math.nan, math.nan
    return float(run.passes[hits[0]]), float(run.seconds[hits[0]])


def median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if len(finite) == len(values) else math.nan


def write_passes(cfg: SuiteConfig, baseline: str | None = None) -> str:
    """Writes OUT/passes.csv and OUT/passes.md; returns the markdown."""
    out = Path(cfg.out)
    rows, lines = [], []
    lines.append(f"# Passes to target on held-out images: {out.name}\n")
    lines.append(
        f"{len(cfg.seeds)} seeds; held-out reward every epoch ({cfg.eval_images} images, fixed noise, every step "
        f"sampled as the run's sampler says); curves smoothed over {SMOOTH_EPOCHS} evaluations; final = mean of "
        f"the last {SMOOTH_EPOCHS}. Passes: network passes of sampling and training (backward = 2, evaluation "
        "not counted), thousands, median over seeds (NaN: a seed never got there). Seconds: sampling and "
        "training on one torch thread per run, two runs at a time on 2 cores. Ratio: the baseline's (the first arm of "
        "the same algorithm unless the command names one) median "
        "passes to 90% of its own gain over the arm's (above 1: fewer passes). Within 1 std: the arm's mean final "
        "held-out reward is no more than one standard deviation (over the baseline's seeds; at least 1e-4) below the "
        "baseline's. A run whose final held-out reward is not above its start has no own target (nan). Shape match "
        "and distance: held-out fidelity at the last evaluation, mean over seeds (the pretrained model's shape "
        "match is about 0.9, its distance 0).\n"
    )
    lines.append(
        "| task | arm | start | final (mean +- std) | within 1 std | shape match | distance | kpasses/image | "
        "kpasses to 90% own | ratio | seconds to 90% own | kpasses to 90% best | seconds to 90% best |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task in cfg.tasks:
        arms = cfg.arms(task)
        runs = {
            arm.label: [load_run(run_dir(cfg, task, arm.label, seed), cfg.epochs(task)) for seed in cfg.seeds]
            for arm in arms
        }
        first_of = {}  # each algorithm's first arm: its baseline unless one is given
        for arm in arms:
            first_of.setdefault(arm.algo, arm.label)
        base_of = {arm.label: baseline or first_of[arm.algo] for arm in arms}
        means = {label: np.mean([r.rewards for r in rs], axis=0) for label, rs in runs.items()}
        best = max(float(smooth(m, SMOOTH_EPOCHS).max() - m[0]) for m in means.values())
        summary = {}
        for label, rs in runs.items():
            # a run that gained nothing has no own target: never reached
            own = [
                cost_to(r, r.start + FRACTION * (r.final - r.start))
                if r.final > r.start
                else (math.nan, math.nan)
                for r in rs
            ]
            task_best = [cost_to(r, r.start + FRACTION * best) for r in rs]
            finals = [r.final for r in rs]
            per_image = rs[0].passes[-1] / (cfg.epochs(task) * cfg.sample_batch_size)
            summary[label] = (own, task_best, finals, per_image, rs)
            for seed, r, o, b in zip(cfg.seeds, rs, own, task_best):
                rows.append(
                    dict(task=task, arm=label, seed=seed, start=r.start, final=r.final, passes=r.passes[-1],
                         passes_to_90pct_own=o[0], seconds_to_90pct_own=o[1],
                         passes_to_90pct_best=b[0], seconds_to_90pct_best=b[1])
                )  # fmt: skip
        for label, (own, task_best, finals, per_image, rs) in summary.items():
            base_own, _, base_finals, _, _ = summary[base_of[label]]
            base_passes = median([p for p, _ in base_own])
            passes = median([p for p, _ in own])
            ratio = base_passes / passes if passes and not math.isnan(passes) else math.nan
            within = np.mean(finals) >= np.mean(base_finals) - max(np.std(base_finals, ddof=1), PRECISION)
            lines.append(
                f"| {task} | {label} | {rs[0].start:.4f} | {np.mean(finals):.4f} +- {np.std(finals, ddof=1):.4f} | "
                f"{'yes' if within else 'no'} | {np.mean([r.shape for r in rs]):.2f} | "
                f"{np.mean([r.distance for r in rs]):.3f} | {per_image / 1000:.3f} | {passes / 1000:.1f} | {ratio:.2f}x | "
                f"{median([s for _, s in own]):.0f} | {median([p for p, _ in task_best]) / 1000:.1f} | "
                f"{median([s for _, s in task_best]):.0f} |"
            )
    with open(out / "passes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    made = provenance("benchmarks.suite.passes")
    runs_made = sorted(set(read_runs_commits(out, cfg.tasks).values()))
    lines.append("")
    lines.append(
        f"Runs made at commit {' + '.join(runs_made) or '?'}; table written by `{made['command']}` at {made['commit']}."
    )
    text = "\n".join(lines) + "\n"
    (out / "passes.md").write_text(text)
    return text


@dataclasses.dataclass(frozen=True)
class PassesConfig:
    """Writes the passes tables of a finished suite folder."""

    preset: tyro.conf.Positional[str]
    """The suite preset whose grid the folder holds (benchmarks.suite.grid.PRESETS)."""
    out: str
    """The suite folder."""
    baseline: str = ""
    """The arm every other is compared with (empty: each algorithm's first arm)."""


def main(cfg: PassesConfig) -> None:
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    suite = dataclasses.replace(PRESETS[cfg.preset](), out=cfg.out)
    print(write_passes(suite, cfg.baseline or None))


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(PassesConfig)), "benchmarks.suite.passes")
