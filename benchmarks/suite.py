"""Sample-efficiency suite: task x algorithm x seed on the embedded default model.

    python -m benchmarks.suite quick          # ~4 min on 2 CPU cores (the README's main job)
    python -m benchmarks.suite full           # 5 seeds, budgets to the plateau; results committed
    python -m benchmarks.suite sweep          # the learning-rate / clip-range sweep every algorithm gets
    python -m benchmarks.suite advantages     # PXPO's advantage normalisation options on all tasks
    python -m benchmarks.suite options        # KL penalty and group advantages vs the defaults
    python -m benchmarks.suite quick --seeds 0 1 --workers 1   # any field can be overridden

Every run gets the same image budget, batch sizes and sampling settings; only
the algorithm (and its own swept learning rate) differs. On differentiable
rewards the exact-gradient oracle (``agents.algorithms.oracle``) runs beside DDPO and PXPO
as the ceiling they are judged against; every run is evaluated on held-out noise
for reward and fidelity to the pretrained model (``agents.heldout``). Each run writes its
metrics CSV under OUT/runs/TASK/LABEL/seedK; a finished run is skipped, a
partial one resumes from its checkpoint. Then the grid is summarised: a plot of
mean reward against images generated (mean over seeds, 95% confidence band, one
panel per task), a samples-to-threshold table, and a markdown summary.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from benchmarks.grid import (  # noqa: F401  (re-exported: the suite's public names)
    PRESETS,
    PXPO_VARIANTS,
    RUNS_COMMIT_FILE,
    Arm,
    SuiteConfig,
    git_commit,
    provenance,
    record_runs_commit,
    run_dir,
    train_config,
)
from benchmarks.report import write_report


def is_complete(out: Path, num_epochs: int) -> bool:
    from agents.metrics import read_metrics

    path = out / "metrics.csv"
    return path.is_file() and len(read_metrics(path)) >= num_epochs


def exit_with_parent(parent: int, poll_seconds: float = 2.0) -> None:
    """Ends this worker process once its parent (the suite) is gone, so that stopping the suite
    never leaves orphaned runs writing into the results folder."""
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os._exit(1)


def run_one(cfg: SuiteConfig, task: str, arm: Arm, seed: int, out: Path) -> Path:
    """Trains one grid cell (resuming it if a checkpoint exists). Runs in a worker process."""
    import torch

    from agents.runs import train

    if multiprocessing.parent_process() is not None:
        threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(1)
    config = train_config(cfg, task, arm, seed, out)
    if (out / "checkpoints" / "latest").is_file():
        config = dataclasses.replace(config, resume=str(out))
    else:  # nothing to resume: whatever an interrupted start left is replaced
        config = dataclasses.replace(config, overwrite=True)
    train(config)
    return out


def epochs_done(out: Path) -> int:
    """Rows in a run's metrics.csv (0 if it has not started)."""
    path = out / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def run_grid(cfg: SuiteConfig) -> int:
    """Runs every incomplete cell of the grid, ``cfg.workers`` at a time, with an epoch progress bar;
    returns how many runs it trained (or resumed)."""
    cells = [
        (task, arm, seed, run_dir(cfg, task, arm.label, seed))
        for task in cfg.tasks
        for arm in cfg.arms(task)
        for seed in cfg.seeds
    ]
    todo = [c for c in cells if not is_complete(c[-1], cfg.epochs(c[0]))]
    for task, arm, seed, out in todo:  # every run's settings checked before anything is written
        train_config(cfg, task, arm, seed, out)
    if todo:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        finished = {c[0] for c in cells if c not in todo}  # tasks that keep runs made earlier
        record_runs_commit(cfg.out, sorted({c[0] for c in todo}), cfg.tasks, tuple(finished))
    total = sum(cfg.epochs(c[0]) for c in cells)

    def done() -> int:
        return sum(min(epochs_done(c[-1]), cfg.epochs(c[0])) for c in cells)

    bar = tqdm(total=total, initial=done(), desc=f"suite ({len(todo)}/{len(cells)} runs to do)", unit="epoch")
    if cfg.workers == 1:
        for task, arm, seed, out in todo:
            run_one(cfg, task, arm, seed, out)
            bar.update(done() - bar.n)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {pool.submit(run_one, cfg, task, arm, seed, out) for task, arm, seed, out in todo}
            while pending:
                finished, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # re-raises a run's error with its traceback
                bar.update(done() - bar.n)
    bar.close()
    return len(todo)


def main(cfg: SuiteConfig) -> str:
    """Runs the grid, then writes and prints the summary; OUT/timing.json records this call's wall time
    and how many runs it trained (a call that resumed or skipped runs times only what it did)."""
    started = time.perf_counter()
    trained = run_grid(cfg)
    seconds = time.perf_counter() - started
    if trained:
        timing = {
            **provenance("benchmarks.suite"),
            "seconds": round(seconds, 1),
            "runs_trained": trained,
            "workers": cfg.workers,
            "threads_per_worker": 1,
            "cpu_count": os.cpu_count(),
        }
        (Path(cfg.out) / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    summary = write_report(cfg)
    print(summary)
    return summary


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    presets = {name: (fn.__doc__.splitlines()[0], fn()) for name, fn in PRESETS.items()}
    run(lambda: main(tyro.extras.overridable_config_cli(presets)), "benchmarks.suite")
