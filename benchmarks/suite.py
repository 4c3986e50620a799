"""Sample-efficiency suite: task x algorithm x seed on the embedded default model.

    python -m benchmarks.suite quick          # ~10 min on 2 CPU cores (the README's main job)
    python -m benchmarks.suite full           # 5 seeds, longer budgets; results committed
    python -m benchmarks.suite sweep          # the learning-rate sweep both algorithms get
    python -m benchmarks.suite quick --seeds 0 1 --workers 1   # any field can be overridden

Every run gets the same image budget, batch sizes and sampling settings; only
the algorithm (and its own swept learning rate) differs. Each run writes its
metrics CSV under OUT/runs/TASK/LABEL/seedK; a finished run is skipped, a
partial one resumes from its checkpoint. Then the grid is summarised: a plot of
mean reward against images generated (mean over seeds, 95% confidence band, one
panel per task), a samples-to-threshold table, and a markdown summary.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmarks.tasks import TASKS


@dataclass(frozen=True)
class SuiteConfig:
    """A grid of training runs and where its results go."""

    tasks: tuple[str, ...] = ("color", "target_map", "segmentation", "jpeg")
    """Task names (benchmarks.tasks.TASKS)."""
    algos: tuple[str, ...] = ("ddpo", "pxpo")
    """Algorithms; both use the importance-sampling (PPO-clip) estimator unless estimator says otherwise."""
    estimator: str = "is"
    """'is' or 'sf', for every algorithm."""
    ddpo_learning_rates: tuple[float, ...] = (3e-4,)
    """DDPO learning rates (a sweep if several)."""
    pxpo_learning_rates: tuple[float, ...] = (3e-4,)
    """PXPO learning rates (a sweep if several)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each seeds the env noise, the contexts and the training shuffles."""
    num_epochs: int = 12
    """Epochs per run (the image budget is num_epochs x sample_batch_size)."""
    sample_batch_size: int = 32
    """Images per epoch."""
    train_batch_size: int = 16
    """Images per optimizer step."""
    num_inference_steps: int = 20
    """DDIM steps."""
    stat_buffer_size: int = 32
    """Per-context advantage buffer."""
    stat_min_count: int = 8
    """Per-context count before its own statistics are used (32 images per epoch, 4 classes: 8 per class)."""
    workers: int = 2
    """Runs in parallel, one torch thread each (never more torch threads than cores)."""
    out: str = "benchmarks/results/quick"
    """Output folder."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"tasks {unknown} are not in {sorted(TASKS)}")
        bad = [a for a in self.algos if a not in ("ddpo", "pxpo")]
        if bad:
            raise ValueError(f"algos must be 'ddpo' or 'pxpo', got {bad}")
        if self.workers < 1 or not self.seeds or self.num_epochs < 1:
            raise ValueError("need workers >= 1, at least one seed and num_epochs >= 1")

    def learning_rates(self, algo: str) -> tuple[float, ...]:
        return self.ddpo_learning_rates if algo == "ddpo" else self.pxpo_learning_rates

    def labels(self) -> list[tuple[str, str, float]]:
        """(label, algo, lr) per curve; the lr joins the label only in a sweep."""
        out = []
        for algo in self.algos:
            rates = self.learning_rates(algo)
            for lr in rates:
                out.append((f"{algo}-lr{lr:g}" if len(rates) > 1 else algo, algo, lr))
        return out


def quick() -> SuiteConfig:
    """The README's main job: 4 tasks x 2 algorithms x 1 seed x 12 epochs of 32 images (~10 min, 2 cores)."""
    return SuiteConfig()


def full() -> SuiteConfig:
    """5 seeds and 15 epochs of 32 images (480 images per run); pass the sweep's learning rates."""
    return dataclasses.replace(quick(), seeds=(0, 1, 2, 3, 4), num_epochs=15, out="benchmarks/results/full")


def sweep() -> SuiteConfig:
    """The same learning-rate sweep for both algorithms: 3 rates x 2 tasks x 2 seeds x 6 epochs."""
    rates = (1e-4, 3e-4, 1e-3)
    return dataclasses.replace(
        quick(),
        tasks=("color", "target_map"),
        ddpo_learning_rates=rates,
        pxpo_learning_rates=rates,
        seeds=(0, 1),
        num_epochs=6,
        out="benchmarks/results/sweep",
    )


PRESETS = {"quick": quick, "full": full, "sweep": sweep}


def run_dir(cfg: SuiteConfig, task: str, label: str, seed: int) -> Path:
    return Path(cfg.out) / "runs" / task / label / f"seed{seed}"


def train_config(cfg: SuiteConfig, task: str, algo: str, lr: float, seed: int, out: Path):
    """The one TrainConfig of a grid cell: everything but algo and lr is shared."""
    from agents.config import TrainConfig

    spec = TASKS[task]
    return TrainConfig(
        algo=algo,
        estimator=cfg.estimator,
        reward=spec.reward,
        reward_kwargs=spec.reward_kwargs_json,
        num_epochs=cfg.num_epochs,
        sample_batch_size=cfg.sample_batch_size,
        sample_batches_per_epoch=1,
        train_batch_size=cfg.train_batch_size,
        num_inference_steps=cfg.num_inference_steps,
        stat_buffer_size=cfg.stat_buffer_size,
        stat_min_count=cfg.stat_min_count,
        learning_rate=lr,
        seed=seed,
        threads=1,
        out=str(out),
        save_every=4,
        image_every=cfg.num_epochs,
        tensorboard=False,
        progress=False,
    )


def is_complete(out: Path, num_epochs: int) -> bool:
    from agents.metrics import read_metrics

    path = out / "metrics.csv"
    return path.is_file() and len(read_metrics(path)) >= num_epochs


def run_one(cfg: SuiteConfig, task: str, algo: str, lr: float, seed: int, out: Path) -> Path:
    """Trains one grid cell (resuming it if a checkpoint exists). Runs in a worker process."""
    import torch

    from agents.trainer import train

    torch.set_num_threads(1)
    config = train_config(cfg, task, algo, lr, seed, out)
    if (out / "checkpoints" / "latest").is_file():
        config = dataclasses.replace(config, resume=str(out))
    train(config)
    return out


def epochs_done(out: Path) -> int:
    """Rows in a run's metrics.csv (0 if it has not started)."""
    path = out / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def run_grid(cfg: SuiteConfig) -> None:
    """Runs every incomplete cell of the grid, ``cfg.workers`` at a time, with an epoch progress bar."""
    cells = [
        (task, label, algo, lr, seed, run_dir(cfg, task, label, seed))
        for task in cfg.tasks
        for label, algo, lr in cfg.labels()
        for seed in cfg.seeds
    ]
    todo = [c for c in cells if not is_complete(c[-1], cfg.num_epochs)]
    if todo:
        from benchmarks.report import RUNS_COMMIT_FILE, git_commit

        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / RUNS_COMMIT_FILE).write_text(git_commit() + "\n")
    total = len(cells) * cfg.num_epochs

    def done() -> int:
        return sum(min(epochs_done(c[-1]), cfg.num_epochs) for c in cells)

    bar = tqdm(total=total, initial=done(), desc=f"suite ({len(todo)}/{len(cells)} runs to do)", unit="epoch")
    if cfg.workers == 1:
        for task, _, algo, lr, seed, out in todo:
            run_one(cfg, task, algo, lr, seed, out)
            bar.update(done() - bar.n)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import multiprocessing

        with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {
                pool.submit(run_one, cfg, task, algo, lr, seed, out) for task, _, algo, lr, seed, out in todo
            }
            while pending:
                finished, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # re-raises a run's error with its traceback
                bar.update(done() - bar.n)
    bar.close()


def main(cfg: SuiteConfig) -> str:
    """Runs the grid, then writes and prints the summary."""
    from benchmarks.report import write_report

    run_grid(cfg)
    summary = write_report(cfg)
    print(summary)
    return summary


if __name__ == "__main__":
    import tyro

    main(
        tyro.extras.overridable_config_cli(
            {name: (fn.__doc__.splitlines()[0], fn()) for name, fn in PRESETS.items()}
        )
    )
