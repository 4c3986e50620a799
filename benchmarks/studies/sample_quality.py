"""Do the embedded model's samples look like its data?

Samples N images per class through the env with the pretrained model, draws
the same number of procedural data images, and reports for both the fraction
the segmentation network reads as one shape of the conditioned class. Writes a
side-by-side grid (data | samples) for docs/environment.md.

    python -m benchmarks.studies.sample_quality --per-class 64
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from benchmarks.provenance import provenance, scratch
from pxpo_gym.sampling import run_policy
from pxpo_gym.segmentation import load_segmentation_net, shape_match
from pxpo_gym.shapes import SHAPE_CLASSES, generate_shapes
from pxpo_gym.viz import save_image_grid


@dataclass(frozen=True)
class QualityConfig:
    """Shape-match rate of samples vs data, and a picture of both."""

    model: str = "default"
    """Model: 'default', 'default-flow' or a folder trained on the same shapes."""
    per_class: int = 64
    """Samples (and data images) per shape class."""
    num_inference_steps: int = 20
    """DDIM steps."""
    eta: float = 1.0
    """DDIM stochasticity (DDIM-family models)."""
    noise_level: float | None = None
    """Flow-matching models: the SDE's noise level (None: Flow-GRPO's 0.7)."""
    seed: int = 0
    """Seed of the env and the data."""
    threads: int = 2
    """torch CPU threads."""
    grid: str = "docs/images/samples_vs_data.png"
    """Output picture (first 32 of each)."""
    out: str = scratch("sample_quality.json")
    """Output numbers."""


def main(cfg: QualityConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    n = cfg.per_class * len(SHAPE_CLASSES)
    contexts = torch.arange(n) % len(SHAPE_CLASSES)
    flow = {} if cfg.noise_level is None else {"noise_level": cfg.noise_level}
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=n,
        model=cfg.model,
        num_inference_steps=cfg.num_inference_steps,
        eta=cfg.eta,
        **flow,
    )
    samples = run_policy(envs, seed=cfg.seed, options={"context": contexts}).images
    data = generate_shapes(
        n,
        envs.unwrapped.loaded.image_size[0],
        generator=torch.Generator().manual_seed(cfg.seed),
        labels=contexts,
    )
    net = load_segmentation_net()
    sample_match = shape_match(net, samples, contexts)
    data_match = shape_match(net, data.images, contexts)
    per_class = {
        name: float(sample_match[contexts == k].float().mean()) for k, name in enumerate(SHAPE_CLASSES)
    }
    result = {
        **provenance("benchmarks.studies.sample_quality"),
        "config": asdict(cfg),
        "sample_match_rate": float(sample_match.float().mean()),
        "data_match_rate": float(data_match.float().mean()),
        "sample_match_rate_per_class": per_class,
    }
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=2) + "\n")
    save_image_grid(
        [data.images[:32], samples[:32]],
        cfg.grid,
        ["procedural data", f"samples from model {cfg.model!r}"],
        columns=8,
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(QualityConfig)), "benchmarks.studies.sample_quality")
