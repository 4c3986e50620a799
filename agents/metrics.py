"""Per-epoch metrics to CSV and TensorBoard; logging lives here, not in the agents."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from pxpo_gym.files import append_line, write_atomic

METRIC_FIELDS = (
    "epoch",
    "images",
    "passes",
    "reward_mean",
    "reward_std",
    "loss",
    "approx_kl",
    "clipfrac",
    "grad_norm",
    "kl",
    "silent_kl",
    "silent_fraction",
    "credit_agreement",
    "credit_dropped",
    "credit_pixel",
    "credit_restored",
    "seconds",
    "sample_seconds",
    "reward_seconds",
    "train_seconds",
    "eval_seconds",
    "eval_reward",
    "fidelity_distance",
    "fidelity_shape",
    "fidelity_silent",
    "fidelity_scored",
    "fidelity_seam",
    "alone_reward",
    "alone_silent",
)
"""CSV columns, in order. ``images`` (cumulative images generated) is the x axis of every curve;
``passes`` the cumulative network passes of sampling and training (``agents.passes``: backward counted as 2,
evaluation not counted).
An empty cell is a value not measured that epoch (never "nan"). ``approx_kl`` is the policy-gradient step's
estimate of KL(old policy || new) on the epoch's own samples (CleanRL's; the progress bar shows it); ``kl`` is
the mean per-element KL(policy || pretrained model) over the trained steps, the ``--kl-coef`` penalty's
measure (``agents.losses.kl_penalty``): measured only where a reference pass runs anyway (``kl_coef`` > 0, or
PXPO's penalty on silent pixels), so empty in a run without either.
``seconds`` is the epoch's sampling + training; ``sample_seconds`` includes ``reward_seconds`` (the reward
function's share; for the oracle, sampling and training are one pass: ``sample_seconds`` is empty and
``train_seconds`` is all of it); ``eval_seconds`` (evaluation) is not in ``seconds``.
The evaluation columns (``eval_reward`` onwards, ``agents.heldout``) are empty on epochs without an
evaluation. ``silent_kl`` and ``silent_fraction`` are PXPO's penalty on silent pixels and the share of the
epoch's pixels that were silent (``agents.algorithms.pxpo``). ``credit_agreement`` is PXPO's check of per-pixel credit on the epoch's images and
``credit_dropped`` 1 where the epoch's reward fell far below the best epoch's (the check's outcome guard),
``credit_pixel`` 1 where the epoch trained with per-pixel credit, 0 with image credit, and ``credit_restored``,
on the epoch the check failed, the epoch whose weights were restored (that epoch makes no update)
(``agents.credit_check``; empty for DDPO and the oracle). ``alone_reward`` and ``alone_silent``: where PXPO
pins pixels in sampling, the held-out reward and silent-pixel distance of the weights alone, without the pin
(what a user who loads the weights without the pin gets; empty without a pin). A weighted reward adds one
column ``reward_NAME`` per component (its mean over the epoch's images) after these."""


class MetricsLogger:
    """Appends one row per epoch to ``RUN/metrics.csv`` and TensorBoard scalars to ``RUN/tb``.

    Args:
        run_dir: the run's folder.
        resume_epoch: on resume, rows after this epoch (written after the
            checkpoint by an interrupted run) are dropped, so the file continues
            exactly where the checkpoint left off.
        tensorboard: also write TensorBoard event files.
        extra_fields: columns after ``METRIC_FIELDS`` (a weighted reward's ``reward_NAME``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        resume_epoch: int | None = None,
        tensorboard: bool = True,
        extra_fields: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.fields = (*METRIC_FIELDS, *extra_fields)
        self.path = Path(run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if resume_epoch is not None and self.path.is_file():
            with open(self.path, newline="") as handle:
                # a row cut short by a crash has missing cells (None); rows after the checkpoint go
                rows = [
                    row
                    for row in csv.DictReader(handle)
                    if None not in row.values() and None not in row and int(row["epoch"]) <= resume_epoch
                ]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, text.getvalue())
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = int(rows[-1]["images"]) + 1 if rows else None
            self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge)

    def log(self, metrics: dict[str, Any]) -> None:
        """Appends the epoch's row; a NaN (not measured this epoch) is an empty cell, as a missing one is."""
        cells = {k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self.fields, extrasaction="ignore").writerow(cells)
        append_line(self.path, line.getvalue())
        if self.writer is not None:
            step = int(metrics["images"])
            for name in self.fields[2:]:
                value = float(metrics.get(name, math.nan))
                if math.isnan(value):
                    continue
                group = "losses" if name in ("loss", "approx_kl", "clipfrac", "grad_norm", "kl") else "charts"
                group = "rewards" if name.startswith("reward_") and name not in METRIC_FIELDS else group
                self.writer.add_scalar(f"{group}/{name}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Reads a ``metrics.csv`` back as a list of float dicts (an empty cell reads as NaN). A last row without
    its line end was cut short by a crash and is left out (the run's ``--resume`` drops it too).

    Raises:
        ValueError: a row has more or fewer cells than the header (e.g. two runs wrote into one file).
    """
    with open(path, newline="") as handle:
        text = handle.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        if None in row or None in row.values():  # extra cells land under None, missing ones read None
            cells = len(reader.fieldnames or []) + len(row.get(None) or []) - list(row.values()).count(None)
            raise ValueError(
                f"{path}: line {reader.line_num} has {cells} cells but the header has "
                f"{len(reader.fieldnames or [])}: the file is corrupt (did two runs write into one folder?)"
            )
        rows.append({k: _number(v) for k, v in row.items()})
    return rows


def _number(cell: str | None) -> float:
    """A CSV cell as a float; empty or NaN cells are ``math.nan`` itself, so rows compare equal."""
    value = float(cell) if cell not in ("", None) else math.nan
    return math.nan if math.isnan(value) else value
