"""Both agents on a latent text-to-image pipeline on CUDA: images per second and peak GPU memory.

Runs a warm-up epoch and a timed epoch of DDPO and of PXPO with LoRA, bf16
autocast and a bf16 frozen model, on one of:

- ``tiny-sd`` / ``tiny-sd3`` / ``tiny-flux`` (default ``tiny-sd``): toy pipelines in
  Stable Diffusion's, SD3's and FLUX's layouts (``pxpo_gym.tiny_models``), saved and
  loaded through the same code path a real checkpoint takes. They exercise the CUDA
  code paths (device placement, autocast, VAE decode, peak-memory accounting) for
  real; their numbers say nothing about a real model's speed.
- ``sd3.5-medium`` / ``flux-dev``: Stable Diffusion 3.5 Medium and FLUX.1-dev by hub
  id (their weights must be in the machine's Hugging Face cache, or pass
  ``--model-path`` to a local copy), at 512 x 512 with Flow-GRPO's SDE, LoRA rank 4 on
  the transformer's attention projections, gradient checkpointing, chunked decode.
  SD3.5-M samples with classifier-free guidance 4.5 (Flow-GRPO's); FLUX.1-dev with its
  distilled guidance (3.5, inside the model) and no CFG.

    python -m benchmarks.performance.latent_gpu                                  # on a GPU
    python -m benchmarks.performance.latent_gpu --model flux-dev --out benchmarks/results/latent_gpu_flux/latent_gpu_flux.json
    python -m benchmarks.performance.latent_gpu --device cpu --mixed-precision no --model-dtype float32 \\
        --out /tmp/latent_cpu.json                                   # same code on a CPU
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from benchmarks.performance.timing import device_name, sync
from benchmarks.provenance import provenance, scratch


@dataclass(frozen=True)
class Preset:
    """Where a named model comes from and the settings it is benchmarked at."""

    source: str
    """A tiny builder's name in pxpo_gym.tiny_models, or a hub id."""
    resolution: int | None
    guidance_scale: float


PRESETS = {
    "tiny-sd": Preset("save_tiny_text_to_image_pipeline", None, 5.0),
    "tiny-sd3": Preset("save_tiny_sd3_pipeline", None, 4.5),
    "tiny-flux": Preset("save_tiny_flux_pipeline", 16, 1.0),
    "sd3.5-medium": Preset("stabilityai/stable-diffusion-3.5-medium", 512, 4.5),
    "flux-dev": Preset("black-forest-labs/FLUX.1-dev", 512, 1.0),
}
"""The models ``--model`` names (tiny ones are built here; the others need their weights)."""


@dataclass(frozen=True)
class LatentBenchConfig:
    """One timed training epoch per agent on a latent pipeline (a tiny one by default)."""

    model: Literal["tiny-sd", "tiny-sd3", "tiny-flux", "sd3.5-medium", "flux-dev"] = "tiny-sd"
    """Which pipeline (module docstring): the tiny ones are built from configs, the others loaded."""
    model_path: str = ""
    """sd3.5-medium / flux-dev: a local folder with the weights instead of the hub id."""
    resolution: int | None = None
    """Image size (None: the preset's: 512 for the real models, the tiny ones' own)."""
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
    """Denoising steps (DDIM, or the flow models' SDE)."""
    guidance_scale: float | None = None
    """Classifier-free guidance (None: the preset's: 5 on SD as DDPO, 4.5 on SD3 as Flow-GRPO, 1 on FLUX)."""
    gradient_checkpointing: bool = True
    """Recompute UNet activations in the backward pass."""
    decode_chunk_size: int = 8
    """Samples per VAE decode call."""
    seed: int = 0
    """Run seed."""
    out: str = scratch("latent_gpu.json")
    """Output JSON."""


PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow cross")


def run_agent(cfg: LatentBenchConfig, model_dir: Path | str, algo: str, run_dir: Path) -> dict:
    """A warm-up epoch, then a timed one; returns images/s, peak memory and the epoch's metrics."""
    from agents.config import TrainConfig
    from agents.trainer import Trainer

    preset = PRESETS[cfg.model]
    config = TrainConfig.of(
        algo=algo,
        model=str(model_dir),
        prompts=PROMPTS,
        resolution=cfg.resolution or preset.resolution,
        reward="color",
        num_epochs=2,
        sample_batch_size=cfg.sample_batch_size,
        sample_batches_per_epoch=1,
        train_batch_size=cfg.train_batch_size,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=preset.guidance_scale if cfg.guidance_scale is None else cfg.guidance_scale,
        step_window=0,  # every step, as its committed results were measured (PXPO's default trains a window)
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
    from pxpo_gym import tiny_models

    preset = PRESETS[cfg.model]
    result = {
        **provenance("benchmarks.performance.latent_gpu"),
        "config": asdict(cfg),
        "device": device_name(device),
        "torch": torch.__version__,
        "agents": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        if cfg.model.startswith("tiny-"):
            build = getattr(tiny_models, preset.source)
            model_dir = build(Path(scratch) / cfg.model, seed=cfg.seed)
        else:
            model_dir = cfg.model_path or preset.source
        for algo in ("ddpo", "pxpo"):
            result["agents"][algo] = run_agent(cfg, model_dir, algo, Path(scratch) / algo)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(LatentBenchConfig)), "benchmarks.performance.latent_gpu")
