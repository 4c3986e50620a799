"""The breadth suite's verdicts: per task, whether PXPO met its targets against DDPO, and per split and
family, the same summed up (``python -m benchmarks.suite breadth``; the tasks and their split are in
``benchmarks.suite.tasks``).

Targets, per task, PXPO's arm against DDPO's (both at the sweep's settings):

- safe: PXPO's final reward (mean over seeds) >= DDPO's minus one std of DDPO's finals, and no PXPO
  seed ends below its own start where DDPO's mean rises;
- faster (pixel-local and partial tasks only): PXPO's median images to 90% of the task's best
  improvement <= DDPO's / ``SPEEDUP``.

Gains are in units of the task's best improvement (the largest rise of any arm's seed-mean curve, the
oracle's where it runs), so that families whose rewards move by different amounts average fairly.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from benchmarks.suite.analysis import mean_curve, samples_to_threshold
from benchmarks.suite.tasks import FAMILIES, SPLITS, TASKS

SPEEDUP = 1.8
"""The faster target: PXPO needs at most 1 / SPEEDUP of DDPO's images to 90% (pixel-local, partial)."""
FAST_FAMILIES = ("pixel-local", "partial")
FAMILY_FILE = "families.csv"
TARGETS_FILE = "targets.csv"


def main_label(labels: list[str], algo: str) -> str | None:
    """The arm of ``algo`` a verdict reads: the one named ``algo`` or ``algo-default``; else the first."""
    for name in (algo, f"{algo}-default"):
        if name in labels:
            return name
    return next((label for label in labels if label.split("-")[0] == algo), None)


def task_targets(
    task: str, by_label: dict[str, list[np.ndarray]], images: np.ndarray, noise: float, evals: dict
) -> dict:
    """Per task, PXPO's targets against DDPO (module docstring), each arm's gain in units of the task's
    best improvement and its final held-out shape match. Curves: label -> per-seed reward curves starting
    at the pretrained model's reward; evals: label -> per-seed held-out evaluations (benchmarks.suite.report)."""
    scale = max(float((mean_curve(runs) - mean_curve(runs)[0]).max()) for runs in by_label.values())
    scale = scale if scale > 0 else float("nan")
    table = samples_to_threshold(by_label, images, (0.9,), 3, noise)
    gains = {label: float(np.mean([c[-1] - c[0] for c in runs])) / scale for label, runs in by_label.items()}
    to90 = {label: _median(table[label][0.9]) for label in by_label}
    shape = {
        label: float(np.mean([s["fidelity_shape"][-1] for s in seeds])) for label, seeds in evals.items()
    }
    row: dict = {"task": task, "family": TASKS[task].family, "split": TASKS[task].split}
    ddpo, pxpo = main_label(list(by_label), "ddpo"), main_label(list(by_label), "pxpo")
    if ddpo is None or pxpo is None:
        return {**row, "gains": gains, "to90": to90, "shape": shape}
    d_final = np.array([c[-1] for c in by_label[ddpo]])
    p_final = np.array([c[-1] for c in by_label[pxpo]])
    d_start = np.array([c[0] for c in by_label[ddpo]])
    ddpo_rises = d_final.mean() > d_start.mean()
    p_fell = int(sum(c[-1] < c[0] for c in by_label[pxpo]))
    row.update(
        ddpo_final=float(d_final.mean()),
        ddpo_std=float(d_final.std()),
        pxpo_final=float(p_final.mean()),
        pxpo_seeds_below_start=p_fell,
        safe=bool(p_final.mean() >= d_final.mean() - d_final.std() and not (ddpo_rises and p_fell)),
        ddpo_to90=to90[ddpo],
        pxpo_to90=to90[pxpo],
        ddpo_shape=shape.get(ddpo, float("nan")),
        pxpo_shape=shape.get(pxpo, float("nan")),
    )
    if TASKS[task].family in FAST_FAMILIES:
        row["faster"] = bool(
            not np.isnan(to90[pxpo]) and (np.isnan(to90[ddpo]) or to90[pxpo] * SPEEDUP <= to90[ddpo])
        )
    return {**row, "gains": gains, "to90": to90, "shape": shape}


def _median(values) -> float:
    """Median over seeds, NaN (not reached) counting as infinitely many images; NaN if most did not reach."""
    arr = np.asarray(values, dtype=float)
    filled = np.where(np.isnan(arr), np.inf, arr)
    med = float(np.median(filled))
    return med if np.isfinite(med) else float("nan")


def family_rows(targets: list[dict]) -> list[dict]:
    """Per split and family: the tasks, each arm's mean gain (units of best improvement) over them, and how
    many of the tasks PXPO was safe / faster on."""
    rows = []
    labels = sorted({label for t in targets for label in t["gains"]})
    for split in SPLITS:
        for family in FAMILIES:
            group = [t for t in targets if t["split"] == split and t["family"] == family]
            if not group:
                continue
            row = {"split": split, "family": family, "tasks": " ".join(t["task"] for t in group)}
            for label in labels:
                values = [t["gains"][label] for t in group if label in t["gains"]]
                row[f"gain_{label}"] = f"{np.mean(values):+.2f}" if values else ""
            for label in labels:
                kept = [t["shape"][label] for t in group if label in t["shape"]]
                row[f"shape_{label}"] = f"{np.nanmean(kept):.2f}" if kept and not np.isnan(kept).all() else ""
            judged = [t for t in group if "safe" in t]
            row["pxpo_safe"] = f"{sum(t['safe'] for t in judged)}/{len(judged)}" if judged else ""
            fast = [t for t in judged if "faster" in t]
            row["pxpo_faster"] = f"{sum(t['faster'] for t in fast)}/{len(fast)}" if fast else ""
            rows.append(row)
    return rows


def switch_epochs(cfg, task: str, label: str) -> str:
    """PXPO's credit='checked' per seed: the first epoch (from 1) that trained with image credit, '-' for a
    run that kept per-pixel credit throughout ('' for arms without the check)."""
    from agents.metrics import read_metrics
    from benchmarks.suite.grid import run_dir

    marks = []
    for seed in cfg.seeds:
        rows = read_metrics(run_dir(cfg, task, label, seed) / "metrics.csv")[: cfg.epochs(task)]
        if not rows or all(np.isnan(r.get("credit_agreement", np.nan)) for r in rows):
            return ""
        image = [int(r["epoch"]) for r in rows if r.get("credit_pixel") == 0]
        marks.append(str(image[0]) if image else "-")
    return " ".join(marks)


def write_breadth_report(cfg, curves: dict, images: dict, noise: dict, evals: dict, out: Path) -> list[str]:
    """Writes OUT/targets.csv (per task) and OUT/families.csv (per split and family); returns the summary's
    markdown lines for them (nothing when the grid's tasks span a single family)."""
    if len({TASKS[t].family for t in curves}) < 2:
        return []
    targets = [
        task_targets(task, by_label, images[task], noise[task], evals.get(task, {}))
        for task, by_label in curves.items()
    ]
    for t in targets:
        pxpo = main_label(list(t["gains"]), "pxpo")
        t["pxpo_image_credit_from_epoch"] = switch_epochs(cfg, t["task"], pxpo) if pxpo else ""
    fields = ["task", "family", "split", "ddpo_final", "ddpo_std", "pxpo_final", "pxpo_seeds_below_start",
              "safe", "ddpo_to90", "pxpo_to90", "faster", "ddpo_shape", "pxpo_shape",
              "pxpo_image_credit_from_epoch"]  # fmt: skip
    with open(out / TARGETS_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: _cell(v) for k, v in t.items()} for t in targets])
    families = family_rows(targets)
    with open(out / FAMILY_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(families[0]))
        writer.writeheader()
        writer.writerows(families)
    lines = [
        "## Per family",
        "",
        "Gain: final minus start reward, in units of the task's best improvement (any arm's seed-mean "
        "curve), averaged over the family's tasks and the seeds. Shape: held-out shape match at the end "
        "(0.89 for the pretrained model), averaged likewise. PXPO safe: final reward >= DDPO's - one "
        "DDPO std and no PXPO seed below its start where DDPO's mean rises. PXPO faster (pixel-local and "
        f"partial): median images to 90% <= DDPO's / {SPEEDUP}. Per task: {TARGETS_FILE} (with, per seed, "
        "the epoch from which PXPO's credit check chose image credit).",
        "",
        "| " + " | ".join(families[0]) + " |",
        "|" + "---|" * len(families[0]),
    ]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in families]
    missed = [t for t in targets if "safe" in t and not t["safe"]]
    for t in missed:
        lines.append(
            f"- **{t['task']}** ({t['split']}, {t['family']}): PXPO not safe: final {t['pxpo_final']:.3f} vs "
            f"DDPO {t['ddpo_final']:.3f} +- {t['ddpo_std']:.3f}; {t['pxpo_seeds_below_start']} PXPO seed(s) "
            "below start."
        )
    for t in targets:
        if "pxpo_shape" in t and t["pxpo_shape"] < t["ddpo_shape"] - 0.05:
            lines.append(
                f"- **{t['task']}**: PXPO keeps less content than DDPO (shape match {t['pxpo_shape']:.2f} vs "
                f"{t['ddpo_shape']:.2f})."
            )
    return ["", *lines]


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value) if not isinstance(value, dict) else ""
