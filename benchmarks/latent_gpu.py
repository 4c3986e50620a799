"""Both agents on a latent text-to-image pipeline on CUDA: images per second and peak GPU memory.

Builds the tiny Stable-Diffusion-layout pipeline (``pxpo_gym.tiny_models``),
saves and loads it through the same code path a real checkpoint takes, and
runs a warm-up epoch and a timed epoch of DDPO and of PXPO with LoRA,
classifier-free guidance, bf16 autocast and a bf16 frozen model. It exercises
the CUDA code paths (device placement, autocast, VAE decode, peak-memory
accounting) for real; the tiny model's numbers say nothing about SD 1.5's speed.

    python -m benchmarks.latent_gpu                                  # on a GPU
    python -m benchmarks.latent_gpu --device cpu --mixed-precision no --model-dtype float32 \\
        --out /tmp/latent_cpu.json                                   # same code on a CPU
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from benchmarks.grid import provenance
from benchmarks.timing import device_name, sync


@dataclass(frozen=True)
class LatentBenchConfig:
    """One timed training epoch per agent on the tiny latent pipeline."""

    device: str = "cuda"
    """torch device."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    """Autocast of the policy's forward passes."""
    model_dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    """Precision of the env's frozen UNet and VAE."""
    sample_batch_size: int = 16
    """Images per epoch (the vector env's num_envs)."""
    train_batch_size: int = 8
    """Images per optimizer step."""
    num_inference_steps: int = 20
    """DDIM steps."""
    guidance_scale: float = 5.0
    """Classifier-free guidance (DDPO's reference value)."""
    gradient_checkpointing: bool = True
    """Recompute UNet activations in the backward pass."""
    decode_chunk_size: int = 8
    """Samples per VAE decode call."""
    seed: int = 0
    """Run seed."""
    out: str = "benchmarks/results/latent_gpu.json"
    """Output JSON."""


PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow cross")


def run_agent(cfg: LatentBenchConfig, model_dir: Path, algo: str, run_dir: Path) -> dict:
    """A warm-up epoch, then a timed one; returns images/s, peak memory and the epoch's metrics."""
    from agents.config import TrainConfig
    from agents.trainer import Trainer

    config = TrainConfig(
        algo=algo,
        model=str(model_dir),
        prompts=PROMPTS,
        reward="color",
        num_epochs=2,
        sample_batch_size=cfg.sample_batch_size,
        sample_batches_per_epoch=1,
        train_batch_size=cfg.train_batch_size,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale,
        mixed_precision=cfg.mixed_precision,
        model_dtype=cfg.model_dtype,
        gradient_checkpointing=cfg.gradient_checkpointing,
        decode_chunk_size=cfg.decode_chunk_size,
        device=cfg.device,
        seed=cfg.seed,
        out=str(run_dir),
        progress=False,
        tensorboard=False,
        image_every=0,
    )
    trainer = Trainer(config)
    trainer.train_epoch()  # warm-up: allocator, kernels, autotuning
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    metrics, _ = trainer.train_epoch()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "images_per_second": cfg.sample_batch_size / metrics["seconds"],
        "epoch_seconds": metrics["seconds"],
        "peak_gpu_memory_mib": peak,
        "reward_mean": metrics["reward_mean"],
        "loss": metrics["loss"],
        "trainable_parameters": sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad),
    }


def main(cfg: LatentBenchConfig) -> dict:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no GPU: run with --device cpu to test the code path")
    from pxpo_gym.tiny_models import save_tiny_text_to_image_pipeline

    result = {
        **provenance("benchmarks.latent_gpu"),
        "config": asdict(cfg),
        "device": device_name(device),
        "torch": torch.__version__,
        "agents": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = save_tiny_text_to_image_pipeline(Path(scratch) / "tiny-sd", seed=cfg.seed)
        for algo in ("ddpo", "pxpo"):
            result["agents"][algo] = run_agent(cfg, model_dir, algo, Path(scratch) / algo)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(LatentBenchConfig)), "benchmarks.latent_gpu")
