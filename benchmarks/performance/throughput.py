"""Throughput of sampling and training, against the bare model's compute floor.

For each algorithm and batch size, in a fresh process each (so peak memory is
that configuration's own), this measures the median over ``repeats`` of:

- sampling: one epoch's images through the env with the policy (``Trainer.sample``);
- training: the policy-gradient update on those images (``Trainer.update``);
- floors: the bare noise model doing the same work with nothing around it:
  forward passes over the same (batch, steps) for sampling; forward + backward
  + AdamW steps over the same minibatches and steps for training.

The figure to push towards 1 is ours / floor.

    python -m benchmarks.performance.throughput                      # CPU, 1 thread
    python -m benchmarks.performance.throughput --device cuda        # records the GPU's name
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.performance.timing import device_name, median_time
from benchmarks.provenance import provenance, scratch


@dataclass(frozen=True)
class ThroughputConfig:
    """Images per second for sampling and training, with the compute floor."""

    algos: tuple[str, ...] = ("ddpo", "pxpo")
    """Algorithms to measure."""
    batch_sizes: tuple[int, ...] = (16, 64)
    """Images per epoch (= envs in parallel)."""
    train_batch_size: int = 16
    """Images per optimizer step."""
    num_inference_steps: int = 20
    """DDIM steps."""
    repeats: int = 3
    """Timed repetitions; medians are reported."""
    threads: int = 1
    """torch CPU threads."""
    device: str = "cpu"
    """torch device."""
    out: str = scratch("throughput.json")
    """Where the results go (a .md table is written beside it)."""
    only: str = ""
    """Internal: 'ALGO:BATCH' measures one configuration in this process."""


def measure_one(cfg: ThroughputConfig, algo: str, batch: int) -> dict:
    """Times one (algorithm, batch) configuration in this process."""
    from agents.config import TrainConfig
    from agents.trainer import Trainer

    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    mb = min(cfg.train_batch_size, batch)
    trainer = Trainer(
        TrainConfig.of(
            algo=algo,
            num_epochs=1,
            sample_batch_size=batch,
            sample_batches_per_epoch=1,
            train_batch_size=mb,
            num_inference_steps=cfg.num_inference_steps,
            device=cfg.device,
            progress=False,
            tensorboard=False,
            stat_min_count=1,
            step_window=0,  # every step: the cost per pass, against floors that run every step
        )
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    traj = trainer.sample()
    adv = trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)

    def sample():
        with torch.no_grad():
            trainer.sample()

    sample_s = median_time(sample, device, cfg.repeats)
    train_s = median_time(lambda: trainer.update(traj, adv), device, cfg.repeats)

    # Floors: the same network work with nothing around it.
    model, steps = trainer.policy, cfg.num_inference_steps
    x = traj.samples[:, 0]
    t = traj.timesteps[:, 0]
    c = traj.contexts

    def forward_floor():
        with torch.no_grad():
            for _ in range(steps):
                model(x, t, c)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-12)

    def backward_floor():
        for start in range(0, batch, mb):
            for _ in range(steps):
                model(
                    x[start : start + mb], t[start : start + mb], c[start : start + mb]
                ).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    forward_s = median_time(forward_floor, device, cfg.repeats)
    backward_s = median_time(backward_floor, device, cfg.repeats)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "algo": algo,
        "batch": batch,
        "sample_images_per_s": batch / sample_s,
        "train_images_per_s": batch / train_s,
        "sample_floor_images_per_s": batch / forward_s,
        "train_floor_images_per_s": batch / backward_s,
        "sample_ratio_to_floor": sample_s / forward_s,
        "train_ratio_to_floor": train_s / backward_s,
        "peak_memory_mib": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process max RSS",
    }


def main(cfg: ThroughputConfig) -> list[dict]:
    if cfg.only:
        algo, batch = cfg.only.split(":")
        print(json.dumps(measure_one(cfg, algo, int(batch))))
        return []
    results = []
    for algo in cfg.algos:
        for batch in cfg.batch_sizes:
            args = [sys.executable, "-m", "benchmarks.performance.throughput", "--only", f"{algo}:{batch}",
                    "--repeats", str(cfg.repeats), "--threads", str(cfg.threads), "--device", cfg.device,
                    "--train-batch-size", str(cfg.train_batch_size),
                    "--num-inference-steps", str(cfg.num_inference_steps)]  # fmt: skip
            done = subprocess.run(args, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{algo} batch {batch}: {results[-1]}", flush=True)
    device = torch.device(cfg.device)
    meta = {
        **provenance("benchmarks.performance.throughput"),
        "config": asdict(cfg),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "results": results,
    }
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(meta, indent=2) + "\n")
    lines = [
        f"Device: {meta['device_name']} ({cfg.device}, {cfg.threads} thread(s)), {cfg.num_inference_steps} steps, "
        f"train minibatch {cfg.train_batch_size}, median of {cfg.repeats}.",
        "",
        "| algo | batch | sampling img/s | floor | ours/floor | training img/s | floor | ours/floor | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['algo']} | {r['batch']} | {r['sample_images_per_s']:.1f} | {r['sample_floor_images_per_s']:.1f} | "
            f"{r['sample_ratio_to_floor']:.2f} | {r['train_images_per_s']:.2f} | {r['train_floor_images_per_s']:.2f} | "
            f"{r['train_ratio_to_floor']:.2f} | {r['peak_memory_mib']:.0f} |"
        )
    table = "\n".join(lines)
    Path(cfg.out).with_suffix(".md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(ThroughputConfig)), "benchmarks.performance.throughput")
