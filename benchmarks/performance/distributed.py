"""Images per second on 1 and on 2 processes (torch.distributed, gloo, 1 thread each), side by side.

    python -m benchmarks.performance.distributed            # ~3 min on 2 CPU cores

Both configurations train the same run (PXPO on the colour task, default model,
32 images per epoch, 20 steps); each is timed over its epochs after the first
(warm-up), in its own spawned processes, one configuration after the other, so
the ratio is measured on the same machine minutes apart. Writes OUT (the committed
result: benchmarks/results/distributed/distributed.json).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.provenance import provenance, scratch


@dataclass(frozen=True)
class DistributedBenchConfig:
    """Measure training throughput on 1 vs 2 processes."""

    epochs: int = 4
    """Epochs per configuration (the first is not timed)."""
    sample_batch_size: int = 32
    """Images per epoch."""
    repeats: int = 2
    """Alternating repetitions of (1 process, 2 processes)."""
    out: str = scratch("distributed.json")
    """Output file."""


def worker(rank: int, world: int, store: str, cfg: DistributedBenchConfig, run_dir: str, result: str) -> None:
    from agents.config import TrainConfig
    from agents.distributed import join_local_group
    from agents.trainer import Trainer

    torch.set_num_threads(1)
    if world > 1:
        join_local_group(rank, world, store, timeout_seconds=600)
    config = TrainConfig.of(
        algo="pxpo",
        reward="color",
        sample_batch_size=cfg.sample_batch_size,
        sample_batches_per_epoch=1,
        train_batch_size=cfg.sample_batch_size // 2,
        num_epochs=cfg.epochs,
        step_window=0,  # every step, as its committed results were measured (PXPO's default trains a window)
        threads=1,
        out=run_dir,
        progress=False,
        tensorboard=False,
        export=False,
    )
    trainer = Trainer(config)
    times = []
    for _ in range(cfg.epochs):
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        trainer.train_epoch()
        times.append(time.perf_counter() - start)
    if rank == 0:
        Path(result).write_text(json.dumps(times))
    if world > 1:
        dist.destroy_process_group()


def measure(cfg: DistributedBenchConfig, world: int) -> float:
    """Images per second of ``world`` processes over the timed epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "times.json")
        args = (world, os.path.join(tmp, "store"), cfg, os.path.join(tmp, "run"), result)
        mp.spawn(worker, args=args, nprocs=world, join=True)
        times = json.loads(Path(result).read_text())[1:]
    return cfg.sample_batch_size * len(times) / sum(times)


def main(cfg: DistributedBenchConfig) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs: dict[str, list[float]] = {"1": [], "2": []}
    for _ in range(cfg.repeats):
        for world in (1, 2):
            runs[str(world)].append(measure(cfg, world))
    ratios = [two / one for one, two in zip(runs["1"], runs["2"])]
    result = {
        **provenance("benchmarks.performance.distributed"),
        "config": dataclasses.asdict(cfg),
        "images_per_second": runs,
        "speedup_2_over_1": ratios,
        "threads_per_process": 1,
        "cpu_count": os.cpu_count(),
        "device": "cpu",
        "torch": torch.__version__,
    }
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(DistributedBenchConfig)), "benchmarks.performance.distributed")
