"""Summarising a suite: plot, samples-to-threshold table, markdown summary."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from agents.config import flat_view
from agents.metrics import read_metrics
from benchmarks.provenance import git_commit, provenance
from benchmarks.suite.analysis import confidence_band, mean_curve, samples_to_threshold, smooth, summarise
from benchmarks.suite.breadth import main_label, write_breadth_report
from benchmarks.suite.grid import read_runs_commits, run_dir
from benchmarks.suite.tasks import TASKS

FRACTIONS = (0.5, 0.9)
SMOOTH_EPOCHS = 3
"""Trailing moving-average window applied to curves before thresholds are found."""


FIDELITY_KEEP = 0.75
"""A run 'holds fidelity' while its held-out shape-match rate is >= this x the pretrained model's."""
COLLAPSE = 0.5
"""A run 'collapsed' when its final shape-match rate is < this x the pretrained model's."""


def run_complete(cfg, task: str, label: str) -> bool:
    """Whether every seed of an arm on a task has its whole metrics.csv (the grid's budget)."""
    for seed in cfg.seeds:
        path = run_dir(cfg, task, label, seed) / "metrics.csv"
        if not path.is_file() or len(read_metrics(path)) < cfg.epochs(task):
            return False
    return True


def missing_arms(cfg) -> list[str]:
    """'label on task' for every arm of the grid whose runs are not all complete (left out of the report)."""
    return [
        f"{arm.label} on {task}"
        for task in cfg.tasks
        for arm in cfg.arms(task)
        if not run_complete(cfg, task, arm.label)
    ]


def load_curves(
    cfg,
) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict[str, np.ndarray], dict[str, float]]:
    """task -> label -> per-seed reward curves, per task the images axis, and per task the
    noise of one epoch's mean reward (2 standard errors, from the first epochs' spread).

    Every curve starts with the pretrained model's reward at 0 images: per seed, the first
    epoch of an RL arm (sampled before any update; the oracle's env draws the same first
    images). The oracle's own first epoch already includes images drawn after an update.
    An arm whose runs are not all complete (``missing_arms``) is left out.
    """
    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    noise: dict[str, float] = {}
    images: dict[str, np.ndarray] = {}
    for task in cfg.tasks:
        raw: dict[str, list[list[dict[str, float]]]] = {}
        for arm in cfg.arms(task):
            if not run_complete(cfg, task, arm.label):
                continue
            raw[arm.label] = [
                read_metrics(run_dir(cfg, task, arm.label, seed) / "metrics.csv")[: cfg.epochs(task)]
                for seed in cfg.seeds
            ]
        rl = [label for label in raw if not label.startswith("oracle")] or list(raw)
        pretrained = [raw[rl[0]][i][0]["reward_mean"] for i in range(len(cfg.seeds))]
        curves[task] = {
            label: [
                np.array([pretrained[i]] + [r["reward_mean"] for r in rows]) for i, rows in enumerate(runs)
            ]
            for label, runs in raw.items()
        }
        images[task] = np.array([0.0] + [r["images"] for r in raw[rl[0]][0]])
        first_stds = [rows[0]["reward_std"] for label in rl for rows in raw[label]]
        noise[task] = 2 * float(np.median(first_stds)) / np.sqrt(cfg.sample_batch_size)
    return curves, images, noise


def load_evals(cfg) -> dict[str, dict[str, list[dict[str, np.ndarray]]]]:
    """task -> label -> per seed: held-out ``images``, ``eval_reward``, ``fidelity_shape``,
    ``fidelity_distance`` arrays, the pretrained model's point first (images 0)."""
    out: dict[str, dict[str, list[dict[str, np.ndarray]]]] = {}
    for task in cfg.tasks:
        out[task] = {}
        for arm in cfg.arms(task):
            if not run_complete(cfg, task, arm.label):
                continue
            seeds = []
            for seed in cfg.seeds:
                folder = run_dir(cfg, task, arm.label, seed)
                reference = folder / "eval_reference.json"
                if not reference.is_file():
                    continue
                rows = [json.loads(reference.read_text())]
                rows += [
                    r
                    for r in read_metrics(folder / "metrics.csv")[: cfg.epochs(task)]
                    if not np.isnan(r["eval_reward"])
                ]
                keys = ("images", "eval_reward", "fidelity_shape", "fidelity_distance")
                keys += ("fidelity_silent", "fidelity_scored")  # absent (NaN) in runs made before them
                keys += (
                    "alone_reward",
                    "alone_silent",
                    "fidelity_seam",
                )  # the weights without PXPO's pin (NaN without one)
                seeds.append({k: np.array([float(r.get(k, np.nan)) for r in rows]) for k in keys})
            if seeds:
                out[task][arm.label] = seeds
    return out


def fidelity_summary(seeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Over seeds: final shape rate and distance, collapsed runs, and the held-out reward
    gained at the last evaluation that still held fidelity (``FIDELITY_KEEP``)."""
    finals_shape = np.array([s["fidelity_shape"][-1] for s in seeds])
    reference_shape = np.array([s["fidelity_shape"][0] for s in seeds])
    gains = []
    for s in seeds:
        held = s["fidelity_shape"] >= FIDELITY_KEEP * s["fidelity_shape"][0]
        if np.isnan(s["fidelity_shape"][0]):
            held = np.ones_like(held)
        last = np.nonzero(held)[0][-1]  # index 0 (the pretrained model) always holds
        gains.append(s["eval_reward"][last] - s["eval_reward"][0])
    return {
        "reference_shape": float(np.mean(reference_shape)),
        "final_shape": float(np.mean(finals_shape)),
        "final_distance": float(np.mean([s["fidelity_distance"][-1] for s in seeds])),
        "final_silent": float(np.mean([s["fidelity_silent"][-1] for s in seeds])),
        "final_scored": float(np.mean([s["fidelity_scored"][-1] for s in seeds])),
        "final_alone_silent": float(np.mean([s["alone_silent"][-1] for s in seeds])),
        "final_seam": float(np.mean([s["fidelity_seam"][-1] for s in seeds])),
        "collapsed": int(np.sum(finals_shape < COLLAPSE * reference_shape)),
        "gain_at_fidelity": float(np.mean(gains)),
        "final_eval_gain": float(np.mean([s["eval_reward"][-1] - s["eval_reward"][0] for s in seeds])),
    }


def plot(curves, images, evals, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(curves)
    rows = 4 if any(evals.get(t) for t in tasks) else 1
    fig, axes = plt.subplots(rows, len(tasks), figsize=(4.2 * len(tasks), 3.2 * rows), squeeze=False)
    many = max(len(by_label) for by_label in curves.values()) > 6  # a sweep: no bands, legend outside
    for ax, task in zip(axes[0], tasks):
        for label, runs in curves[task].items():
            mean = mean_curve(runs)
            style = {"ddpo": "-", "pxpo": "--", "oracle": ":"}.get(label.split("-")[0], "-")
            (line,) = ax.plot(images[task], mean, style, label=label)
            if not many:
                low, high = confidence_band(runs)
                ax.fill_between(images[task], low, high, color=line.get_color(), alpha=0.2)
        seeds = len(next(iter(curves[task].values())))
        ax.set_title(f"{task} ({seeds} seed{'s' if seeds > 1 else ''})")
        ax.grid(alpha=0.3)
        # Keep the axes on the means: with 2 seeds a t-interval can be 10x wider than the data.
        means = np.concatenate([mean_curve(runs) for runs in curves[task].values()])
        span = max(float(means.max() - means.min()), 1e-6)
        ax.set_ylim(means.min() - 0.5 * span, means.max() + 0.5 * span)
    axes[0, 0].set_ylabel("mean reward" + ("" if many else " (95% CI over seeds)"))
    if many:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:  # the panel with the most curves (JPEG has no oracle)
        max(axes[0], key=lambda ax: len(ax.get_legend_handles_labels()[1])).legend(fontsize=8)
    if rows == 4:
        names = (
            ("eval_reward", "held-out reward"),
            ("fidelity_shape", "held-out shape match"),
            ("fidelity_distance", "RMS distance to pretrained"),
        )
        for row, (key, ylabel) in enumerate(names, start=1):
            for ax, task in zip(axes[row], tasks):
                for label, seeds in evals.get(task, {}).items():
                    x = seeds[0]["images"]
                    ax.plot(x, np.mean([s[key] for s in seeds], axis=0), marker=".", label=label)
                ax.grid(alpha=0.3)
            axes[row, 0].set_ylabel(ylabel)
    for ax in axes[-1]:
        ax.set_xlabel("images generated")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def verdict(task: str, table: dict[str, dict[float, list[float]]], finals: dict[str, np.ndarray]) -> str:
    """One honest sentence comparing DDPO and PXPO on a task (their main arms: ``benchmarks.suite.breadth.main_label``).

    First how many seeds reached 90% of the best improvement; when both reached
    it in the same number of seeds, the median images; always the final rewards.
    """
    labels = {algo: main_label(list(table), algo) for algo in ("ddpo", "pxpo")}
    if None in labels.values():
        return ""
    algos = ("ddpo", "pxpo")
    reached = {a: np.asarray(table[labels[a]][0.9], dtype=float) for a in algos}
    finals = {a: finals[labels[a]] for a in algos}
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


def arm_scores(cfg, curves) -> dict[str, float]:
    """Per arm (label), the normalised area under its reward curve.

    Each task's curves are measured in units of that task's best improvement (the largest rise
    of any arm's seed-mean curve above the pretrained reward, usually the oracle's), so a task
    whose rewards move little (painted feedback) counts as much as one whose rewards move a lot
    (colour). Area = mean over epochs of (reward - start) / best improvement, averaged over the
    tasks and seeds: it rewards learning early (sample efficiency), not just the final value.
    """
    scale = {}
    for task, by_label in curves.items():
        scale[task] = max(float((mean_curve(runs) - mean_curve(runs)[0]).max()) for runs in by_label.values())
        scale[task] = scale[task] if scale[task] > 0 else 1.0
    scores = {}
    for arm in cfg.arms():
        areas = [
            float(np.mean(c - c[0])) / scale[task]
            for task in curves
            if arm.label in curves[task]
            for c in curves[task][arm.label]
        ]
        if areas:  # an arm with no complete runs has no score
            scores[arm.label] = float(np.mean(areas))
    return scores


def best_settings(cfg, curves) -> dict[str, dict]:
    """Per algorithm, the swept settings (learning rate, clip range, variant's fields) of its arm with the
    largest ``arm_scores``."""
    scores = arm_scores(cfg, curves)
    best: dict[str, tuple[dict, float]] = {}
    for arm in cfg.arms():
        if arm.label not in scores:
            continue
        if arm.algo not in best or scores[arm.label] > best[arm.algo][1]:
            best[arm.algo] = (dict(arm.overrides), scores[arm.label])
    return {algo: settings for algo, (settings, _) in best.items()}


def oracle_share(runs: list[np.ndarray], oracle: list[np.ndarray] | None) -> str:
    """Mean over seeds of (final - start) / (the oracle's mean final - start), finals smoothed."""
    if not oracle:
        return ""
    oracle_gain = float(np.mean([smooth(c, SMOOTH_EPOCHS)[-1] - c[0] for c in oracle]))
    if oracle_gain <= 0:
        return "oracle gained nothing"
    shares = [(smooth(c, SMOOTH_EPOCHS)[-1] - c[0]) / oracle_gain for c in runs]
    return f"{np.mean(shares):.2f}"


def loss_diagnostics(cfg, task: str, label: str) -> dict[str, str]:
    """Mean over epochs and seeds of clipfrac and approx_kl (blank for the oracle)."""
    rows = [
        r
        for seed in cfg.seeds
        for r in read_metrics(run_dir(cfg, task, label, seed) / "metrics.csv")[: cfg.epochs(task)]
    ]
    clipfrac = np.array([r["clipfrac"] for r in rows])
    kl = np.array([r["approx_kl"] for r in rows])
    if np.isnan(clipfrac).all():
        return {"clipfrac": "", "approx_kl": ""}
    return {"clipfrac": f"{np.nanmean(clipfrac):.3f}", "approx_kl": f"{np.nanmean(kl):.3g}"}


def fidelity_verdict(task: str, evals: dict[str, list[dict[str, np.ndarray]]]) -> str:
    """Which runs kept the pretrained model's content, and the reward gained while they did."""
    if not evals:
        return ""
    parts = []
    for label, seeds in evals.items():
        f = fidelity_summary(seeds)
        collapsed = f" ({f['collapsed']}/{len(seeds)} runs collapsed)" if f["collapsed"] else ""
        parts.append(
            f"{label} shape match {f['reference_shape']:.2f} -> {f['final_shape']:.2f}{collapsed}, "
            f"held-out reward +{f['gain_at_fidelity']:.3f} while fidelity held"
        )
    return f"**{task}** fidelity: " + "; ".join(parts) + "."


def cost_to(rows: list[dict[str, float]], images: float) -> tuple[float, float]:
    """(network passes, seconds of sampling and training) a run had spent when it had generated ``images``
    (an epoch end, as ``images_to_reach`` returns; 0 images: nothing spent); NaN when it never got there.
    Passes are None for runs whose metrics predate the pass count."""
    if math.isnan(images):
        return math.nan, math.nan
    if images == 0:
        return 0.0, 0.0
    for k, row in enumerate(rows):
        if row["images"] == images:
            passes = row.get("passes", math.nan)
            return (None if math.isnan(passes) else float(passes)), float(
                sum(r["seconds"] for r in rows[: k + 1])
            )
    return math.nan, math.nan


def costs_to_threshold(cfg, task: str, label: str, reached: list[float]) -> tuple[list, list[float]]:
    """Per seed, the passes and seconds its run spent to reach a threshold (``reached``: images per seed)."""
    passes, seconds = [], []
    for seed, images in zip(cfg.seeds, reached):
        rows = read_metrics(run_dir(cfg, task, label, seed) / "metrics.csv")[: cfg.epochs(task)]
        p, s = cost_to(rows, images)
        passes.append(p)
        seconds.append(s)
    return passes, seconds


def summarise_cost(values: list, scale: float) -> str:
    """``summarise`` of costs in units of ``scale`` (passes in thousands); '-' where the runs were not
    counted (metrics from before the pass count)."""
    if any(v is None for v in values):
        return "-"
    return summarise([v / scale for v in values])


SEEDS_FILE = "seeds.csv"
"""One row per run (task, arm, seed): what the summary's means and ranges are made of."""


def write_seed_table(cfg, curves, images, noise, evals, path: Path) -> None:
    """Writes every run's own numbers: training reward at the start, at its peak (epoch mean) and at
    the end; images to 50% / 90% of the task's best improvement; PXPO's silent-pixel share at the
    first and the last epoch; and the held-out reward, shape match and distances at the first and
    the last evaluation."""
    fields = [
        "task", "algo", "seed", "start_reward", "peak_reward", "peak_images", "final_reward",
        "images_to_50pct", "images_to_90pct", "passes_to_50pct", "passes_to_90pct", "seconds_to_50pct",
        "seconds_to_90pct", "silent_fraction_first", "silent_fraction_last",
        "eval_reward_start", "eval_reward_final", "shape_match_start", "shape_match_final",
        "distance_final", "silent_distance_final", "scored_distance_final",
        "alone_reward_final", "alone_silent_distance_final", "seam_final",
    ]  # fmt: skip
    rows = []
    for task, by_label in curves.items():
        table = samples_to_threshold(by_label, images[task], FRACTIONS, SMOOTH_EPOCHS, noise[task])
        for label, runs in by_label.items():
            held = evals.get(task, {}).get(label, [])
            for i, (seed, curve) in enumerate(zip(cfg.seeds, runs)):
                metrics = read_metrics(run_dir(cfg, task, label, seed) / "metrics.csv")[: cfg.epochs(task)]
                silent = [m.get("silent_fraction", np.nan) for m in metrics]
                peak = int(np.argmax(curve))
                row = {
                    "task": task,
                    "algo": label,
                    "seed": seed,
                    "start_reward": curve[0],
                    "peak_reward": curve[peak],
                    "peak_images": images[task][peak],
                    "final_reward": curve[-1],
                    "images_to_50pct": table[label][0.5][i],
                    "images_to_90pct": table[label][0.9][i],
                    **{
                        f"{kind}_to_{int(f * 100)}pct": value
                        for f in FRACTIONS
                        for kind, value in zip(("passes", "seconds"), cost_to(metrics, table[label][f][i]))
                    },
                    "silent_fraction_first": silent[0] if silent else np.nan,
                    "silent_fraction_last": silent[-1] if silent else np.nan,
                }
                e = held[i] if i < len(held) else None
                for key, column, at in (
                    ("eval_reward_start", "eval_reward", 0),
                    ("eval_reward_final", "eval_reward", -1),
                    ("shape_match_start", "fidelity_shape", 0),
                    ("shape_match_final", "fidelity_shape", -1),
                    ("distance_final", "fidelity_distance", -1),
                    ("silent_distance_final", "fidelity_silent", -1),
                    ("scored_distance_final", "fidelity_scored", -1),
                    ("alone_reward_final", "alone_reward", -1),
                    ("alone_silent_distance_final", "alone_silent", -1),
                    ("seam_final", "fidelity_seam", -1),
                ):
                    row[key] = float(e[column][at]) if e is not None else np.nan
                rows.append({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def sampler_note(cfg) -> str:
    """A sentence naming the arms whose training images come from another sampler than the others' (steps
    outside their trained window sampled without noise), or ''."""
    labels = set()
    for task in cfg.tasks:
        for arm in cfg.arms(task):
            path = run_dir(cfg, task, arm.label, cfg.seeds[0]) / "config.json"
            saved = flat_view(json.loads(path.read_text())) if path.is_file() else {}
            if saved.get("step_window") and saved.get("window_outside") == "deterministic":
                labels.add(arm.label)
    if not labels:
        return ""
    return (
        f" The training rewards of {', '.join(sorted(labels))} are of images sampled without noise outside "
        "their trained steps (window_outside 'deterministic'), another sampler than the other arms': compare "
        "those arms on the held-out columns (python -m benchmarks.suite.passes reads a held-out curve)."
    )


def write_report(cfg) -> str:
    """Writes OUT/plot.png, OUT/table.csv, OUT/seeds.csv and OUT/summary.md; returns the summary."""
    out = Path(cfg.out)
    curves, images, noise = load_curves(cfg)
    evals = load_evals(cfg)
    plot(curves, images, evals, out / "plot.png")
    rows, verdicts = [], []
    for task, by_label in curves.items():
        table = samples_to_threshold(by_label, images[task], FRACTIONS, SMOOTH_EPOCHS, noise[task])
        finals = {label: np.array([c[-1] for c in runs]) for label, runs in by_label.items()}
        oracle = next((runs for label, runs in by_label.items() if label.startswith("oracle")), None)
        for label, runs in by_label.items():
            starts = np.array([c[0] for c in runs])
            fid = fidelity_summary(evals[task][label]) if label in evals.get(task, {}) else None
            rows.append(
                {
                    "task": task,
                    "algo": label,
                    "seeds": len(runs),
                    "start_reward": f"{starts.mean():.4f}",
                    "final_reward": f"{finals[label].mean():.4f} +- {finals[label].std():.4f}",
                    "images_to_50pct": summarise(table[label][0.5]),
                    "images_to_90pct": summarise(table[label][0.9]),
                    **dict(
                        zip(
                            ("passes_to_90pct", "seconds_to_90pct"),
                            (
                                summarise_cost(cost, scale)
                                for cost, scale in zip(
                                    costs_to_threshold(cfg, task, label, table[label][0.9]), (1000.0, 1.0)
                                )
                            ),
                        )
                    ),
                    "share_of_oracle_gain": oracle_share(runs, oracle)
                    if not label.startswith("oracle")
                    else "",
                    "shape_match": f"{fid['reference_shape']:.2f} -> {fid['final_shape']:.2f}" if fid else "",
                    "distance": f"{fid['final_distance']:.3f}" if fid else "",
                    "silent_distance": f"{fid['final_silent']:.3f}"
                    + (
                        f" (weights alone {fid['final_alone_silent']:.3f})"
                        if not np.isnan(fid["final_alone_silent"])
                        else ""
                    )
                    + (f", seam {fid['final_seam']:.2f}" if not np.isnan(fid["final_seam"]) else "")
                    if fid and not np.isnan(fid["final_silent"])
                    else "",
                    "scored_distance": f"{fid['final_scored']:.3f}"
                    if fid and not np.isnan(fid["final_scored"])
                    else "",
                    "collapsed": f"{fid['collapsed']}/{len(runs)}" if fid else "",
                    "gain_at_fidelity": f"{fid['gain_at_fidelity']:+.3f}" if fid else "",
                    **loss_diagnostics(cfg, task, label),
                }
            )
        verdicts.append(verdict(task, table, finals))
        verdicts.append(fidelity_verdict(task, evals.get(task, {})))
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_seed_table(cfg, curves, images, noise, evals, out / SEEDS_FILE)
    commit = git_commit()
    by_commit: dict[str, list[str]] = {}
    for task, made_at in read_runs_commits(out, cfg.tasks).items():
        if task in cfg.tasks:
            by_commit.setdefault(made_at, []).append(task)
    runs_commit = "; ".join(f"{c} ({', '.join(t)})" for c, t in by_commit.items()) or "unrecorded"
    budgets = ", ".join(f"{t} {cfg.epochs(t) * cfg.sample_batch_size}" for t in cfg.tasks)
    lines = [
        f"# Sample-efficiency suite: {out.name}",
        "",
        f"{len(cfg.seeds)} seed(s), {cfg.sample_batch_size} images per epoch (images per run: {budgets}), "
        f"{cfg.num_inference_steps} DDIM steps, estimator '{cfg.estimator}', train batch {cfg.train_batch_size}, "
        f"step weighting '{cfg.step_weighting}'; runs made at commit {runs_commit}, report written at "
        f"commit {commit or 'unknown'}.{sampler_note(cfg)}",
        "Images-to-threshold: images a run needed to reach its own start + 50% / 90% of the best "
        "improvement any arm's seed-mean curve showed on the task (usually the oracle's); median "
        "[min-max] over seeds; passes (agents.passes: one image through the network once, a backward "
        "counted as 2; evaluation not counted) and seconds (sampling and training, one torch thread per "
        f"run) spent by then, likewise. Curves are smoothed over {SMOOTH_EPOCHS} epochs (trailing) first; an "
        "improvement within 2 standard errors of one epoch's mean reward counts as none. "
        "Oracle share: the run's gain (smoothed final - start) over the exact-gradient oracle's. "
        "Fidelity (held-out, fixed noise): shape match = fraction of images in which the segmentation "
        "net finds one shape of the conditioned class (pretrained -> final); distance = RMS RGB distance "
        f"to the pretrained model's image from the same noise; collapsed = final shape match < {COLLAPSE} x "
        f"pretrained; gain at fidelity = held-out reward gained at the last evaluation whose shape match "
        f"was still >= {FIDELITY_KEEP} x pretrained; silent / scored distance: the same distance over the "
        "pixels the reward never scores (their reward is the same in every pretrained held-out image) and "
        "over the others (tasks with such pixels only); weights alone: the silent distance of PXPO's weights "
        "sampled without its pin (where it pins); seam: the squared step between neighbouring pixels across the "
        "edge of the silent pixels over the pretrained images' own (1: no seam). clipfrac and approx_kl: means over epochs and seeds.",
        "",
        "| task | algo | seeds | start | final (mean +- std) | images to 50% | images to 90% "
        "| thousand passes to 90% | seconds to 90% | oracle share "
        "| shape match | distance | silent distance | scored distance | collapsed | gain at fidelity "
        "| clipfrac | approx_kl |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    missing = missing_arms(cfg)
    if missing:
        lines += ["", f"Not in this report (runs missing or incomplete): {', '.join(missing)}."]
    lines += ["", *[f"- {v}" for v in verdicts if v]]
    if len(cfg.arms()) > len(cfg.algos):  # a sweep or a comparison: some algorithm has several arms
        best = best_settings(cfg, curves)
        scores = {"scores": arm_scores(cfg, curves), "best": best}
        (out / "arm_scores.json").write_text(
            json.dumps({**provenance("benchmarks.suite"), **scores}, indent=1) + "\n"
        )
        lines += [
            "",
            "Best settings per algorithm (largest area under the reward curve, each task in units of its best "
            "improvement, averaged over tasks and seeds): "
            + "; ".join(
                f"{a} " + ", ".join(f"{k} {v:g}" for k, v in settings.items() if isinstance(v, float))
                for a, settings in best.items()
            ),
        ]
    lines += write_breadth_report(cfg, curves, images, noise, evals, out)
    lines += ["", "Tasks:"]
    lines += [f"- {t} ({TASKS[t].family}, {TASKS[t].split}): {TASKS[t].description}" for t in cfg.tasks]
    lines += ["", "![plot](plot.png)", ""]
    summary = "\n".join(lines)
    (out / "summary.md").write_text(summary)
    return summary
