"""Summarising a suite: plot, samples-to-threshold table, markdown summary."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np

from agents.metrics import read_metrics
from benchmarks.analysis import confidence_band, mean_curve, samples_to_threshold, summarise
from benchmarks.tasks import TASKS

RUNS_COMMIT_FILE = "runs_commit.txt"
"""Written by the suite before it trains: the commit whose code made the runs."""
FRACTIONS = (0.5, 0.9)
SMOOTH_EPOCHS = 3
"""Trailing moving-average window applied to curves before thresholds are found."""


def git_commit() -> str:
    """Short hash of HEAD (empty outside a git checkout)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def load_curves(cfg) -> tuple[dict[str, dict[str, list[np.ndarray]]], np.ndarray, dict[str, float]]:
    """task -> label -> per-seed reward curves, the shared images axis, and per task the
    noise of one epoch's mean reward (2 standard errors, from the first epochs' spread)."""
    from benchmarks.suite import run_dir

    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    noise: dict[str, float] = {}
    images = None
    for task in cfg.tasks:
        curves[task] = {}
        first_stds = []
        for label, _, _ in cfg.labels():
            runs = []
            for seed in cfg.seeds:
                rows = read_metrics(run_dir(cfg, task, label, seed) / "metrics.csv")[: cfg.num_epochs]
                runs.append(np.array([r["reward_mean"] for r in rows]))
                first_stds.append(rows[0]["reward_std"])
                images = np.array([r["images"] for r in rows])
            curves[task][label] = runs
        noise[task] = 2 * float(np.median(first_stds)) / np.sqrt(cfg.sample_batch_size)
    return curves, images, noise


def plot(curves, images, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for label, runs in curves[task].items():
            mean = mean_curve(runs)
            low, high = confidence_band(runs)
            (line,) = ax.plot(images, mean, label=label)
            ax.fill_between(images, low, high, color=line.get_color(), alpha=0.2)
        seeds = len(next(iter(curves[task].values())))
        ax.set_title(f"{task} ({seeds} seed{'s' if seeds > 1 else ''})")
        ax.set_xlabel("images generated")
        ax.grid(alpha=0.3)
    for ax, task in zip(axes[0], tasks):
        # Keep the axes on the means: with 2 seeds a t-interval can be 10x wider than the data.
        means = np.concatenate([mean_curve(runs) for runs in curves[task].values()])
        span = max(float(means.max() - means.min()), 1e-6)
        ax.set_ylim(means.min() - 0.5 * span, means.max() + 0.5 * span)
    axes[0, 0].set_ylabel("mean reward (95% CI over seeds)")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(task: str, table: dict[str, dict[float, list[float]]], finals: dict[str, np.ndarray]) -> str:
    """One honest sentence comparing DDPO and PXPO on a task.

    First how many seeds reached 90% of the best improvement; when both reached
    it in the same number of seeds, the median images; always the final rewards.
    """
    if not {"ddpo", "pxpo"} <= set(table):
        return ""
    algos = ("ddpo", "pxpo")
    reached = {a: np.asarray(table[a][0.9], dtype=float) for a in algos}
    hits = {a: int((~np.isnan(reached[a])).sum()) for a in algos}
    n = len(reached["ddpo"])
    final = f"final reward DDPO {finals['ddpo'].mean():.3f}, PXPO {finals['pxpo'].mean():.3f}"
    if hits["ddpo"] == hits["pxpo"] == 0:
        return f"**{task}**: neither reached 90% of the best improvement in the budget ({final})."
    if hits["ddpo"] != hits["pxpo"]:
        more, less = ("pxpo", "ddpo") if hits["pxpo"] > hits["ddpo"] else ("ddpo", "pxpo")
        return (
            f"**{task}**: {more.upper()} reached 90% of the best improvement in {hits[more]}/{n} seeds "
            f"(median {np.nanmedian(reached[more]):.0f} images), {less.upper()} in {hits[less]}/{n} ({final})."
        )
    med = {a: float(np.nanmedian(reached[a])) for a in algos}
    ratio = med["ddpo"] / med["pxpo"]
    if abs(ratio - 1) < 0.15:
        who = "no clear difference in images"
    elif ratio > 1:
        who = f"PXPO needed {ratio:.1f}x fewer images"
    else:
        who = f"DDPO needed {1 / ratio:.1f}x fewer images"
    return (
        f"**{task}**: both reached 90% in {hits['pxpo']}/{n} seeds; {who} "
        f"(median PXPO {med['pxpo']:.0f}, DDPO {med['ddpo']:.0f}; {final})."
    )


def best_learning_rates(cfg, curves) -> dict[str, float]:
    """Per algorithm, the swept learning rate with the largest area under the reward curve.

    Area = mean reward over all epochs, averaged over tasks and seeds: it rewards
    learning early (sample efficiency), not just the final value.
    """
    best: dict[str, tuple[float, float]] = {}
    for label, algo, lr in cfg.labels():
        area = float(np.mean([np.mean(c) for task in curves for c in curves[task][label]]))
        if algo not in best or area > best[algo][1]:
            best[algo] = (lr, area)
    return {algo: lr for algo, (lr, _) in best.items()}


def write_report(cfg) -> str:
    """Writes OUT/plot.png, OUT/table.csv and OUT/summary.md; returns the summary."""
    out = Path(cfg.out)
    curves, images, noise = load_curves(cfg)
    plot(curves, images, out / "plot.png")
    rows, verdicts = [], []
    for task, by_label in curves.items():
        table = samples_to_threshold(by_label, images, FRACTIONS, SMOOTH_EPOCHS, noise[task])
        finals = {label: np.array([c[-1] for c in runs]) for label, runs in by_label.items()}
        for label, runs in by_label.items():
            starts = np.array([c[0] for c in runs])
            rows.append(
                {
                    "task": task,
                    "algo": label,
                    "seeds": len(runs),
                    "start_reward": f"{starts.mean():.4f}",
                    "final_reward": f"{finals[label].mean():.4f} +- {finals[label].std():.4f}",
                    "images_to_50pct": summarise(table[label][0.5]),
                    "images_to_90pct": summarise(table[label][0.9]),
                }
            )
        verdicts.append(verdict(task, table, finals))
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    commit = git_commit()
    recorded = out / RUNS_COMMIT_FILE
    runs_commit = recorded.read_text().strip() if recorded.is_file() else "unrecorded"
    lines = [
        f"# Sample-efficiency suite: {out.name}",
        "",
        f"{len(cfg.seeds)} seed(s), {cfg.num_epochs} epochs x {cfg.sample_batch_size} images, "
        f"{cfg.num_inference_steps} DDIM steps, estimator '{cfg.estimator}', train batch {cfg.train_batch_size}; "
        f"runs made at commit {runs_commit}, report written at commit {commit or 'unknown'}.",
        "Images-to-threshold: images a run needed to reach its own start + 50% / 90% of the best "
        "improvement any algorithm's seed-mean curve showed on the task; median [min-max] over seeds. "
        f"Curves are smoothed over {SMOOTH_EPOCHS} epochs (trailing) first; an improvement within "
        "2 standard errors of one epoch's mean reward counts as none ('not reached' for all).",
        "",
        "| task | algo | seeds | start | final (mean +- std) | images to 50% | images to 90% |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['task']} | {r['algo']} | {r['seeds']} | {r['start_reward']} | {r['final_reward']} | "
        f"{r['images_to_50pct']} | {r['images_to_90pct']} |"
        for r in rows
    ]
    lines += ["", *[f"- {v}" for v in verdicts if v]]
    if any(len(cfg.learning_rates(a)) > 1 for a in cfg.algos):
        best = best_learning_rates(cfg, curves)
        (out / "best_learning_rates.json").write_text(json.dumps(best, indent=1) + "\n")
        lines += [
            "",
            "Best learning rate per algorithm (largest mean reward over all epochs, tasks and seeds): "
            + ", ".join(f"{a} {lr:g}" for a, lr in best.items()),
        ]
    lines += ["", "Tasks:"]
    lines += [f"- {t}: {TASKS[t].description}" for t in cfg.tasks]
    lines += ["", "![plot](plot.png)", ""]
    summary = "\n".join(lines)
    (out / "summary.md").write_text(summary)
    return summary
