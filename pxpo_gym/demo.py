"""Demo: denoise a batch with the pretrained model and save images beside their reward maps.

python -m pxpo_gym.demo --reward color --num-images 16
python -m pxpo_gym.demo --reward target_map --reward-kwargs '{"target": "blue"}'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.sampling import run_policy
from pxpo_gym.viz import reward_caption, save_reward_grid


@dataclass(frozen=True)
class DemoConfig:
    """Denoise images with the pretrained model through the env and plot their reward maps."""

    reward: str = "color"
    """Built-in reward name or 'package.module:function'."""
    reward_kwargs: str = ""
    """JSON object of the reward's options, e.g. '{"target": "blue"}' (target_map needs a target)."""
    model: str = "default"
    """Embedded model name, diffusers folder or hub id."""
    num_images: int = 16
    """Images (vector envs) to denoise in one batch."""
    num_inference_steps: int | None = None
    """Sampler steps per episode (None: the export's run's, else 20)."""
    eta: float | None = None
    """DDIM stochasticity in (0, 1] (None: the export's run's sampler settings, else the env's default)."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the model (None: the export's run's own, else 1, none)."""
    seed: int = 0
    """Seed of the env's noise and contexts."""
    device: str = "cpu"
    """torch device."""
    threads: int = 2
    """torch CPU threads."""
    out: str = "outputs/demo.png"
    """Output PNG."""

    def __post_init__(self) -> None:
        for name in ("num_images", "num_inference_steps", "threads"):
            value = getattr(self, name)
            if value is None and name == "num_inference_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")


def main(cfg: DemoConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    try:
        options = json.loads(cfg.reward_kwargs or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"reward_kwargs must be a JSON object, got {cfg.reward_kwargs!r}: {err}") from err
    if not isinstance(options, dict):
        raise ValueError(f"reward_kwargs must be a JSON object, got {cfg.reward_kwargs!r}")
    # a line on stdout before each wait of seconds (a CLI error stays one line on stderr)
    print(f"pxpo_gym.demo: loading model {cfg.model!r} and its reward {cfg.reward!r} ...", flush=True)
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=cfg.num_images,
        model=cfg.model,
        reward=cfg.reward,
        reward_kwargs=options,
        num_inference_steps=cfg.num_inference_steps,
        eta=cfg.eta,
        guidance_scale=cfg.guidance_scale,
        device=cfg.device,
    )
    names = envs.unwrapped.loaded.context_names
    steps = envs.unwrapped.num_steps  # the export's own when not given
    guidance = envs.unwrapped.guidance_scale  # likewise
    # Cycle through the contexts so every class appears.
    contexts = torch.arange(cfg.num_images) % len(names)
    print(f"denoising {cfg.num_images} images ({steps} steps each) ...", flush=True)
    episode = run_policy(envs, seed=cfg.seed, options={"context": contexts})
    print(f"drawing the images beside their reward maps into {cfg.out} ...", flush=True)
    path = save_reward_grid(
        episode.images,
        episode.image_reward_maps,
        cfg.out,
        titles=[names[c] for c in episode.contexts.tolist()],
        caption=f"{reward_caption(cfg.reward, options)}; model {cfg.model!r}, {steps} steps"
        + (f", guidance {guidance:g}" if guidance != 1 else ""),
    )
    print(
        f"reward {cfg.reward!r}: mean {episode.rewards.mean():.4f} (std {episode.rewards.std():.4f}) "
        f"over {cfg.num_images} images"
    )
    for k, name in enumerate(names):
        chosen = episode.contexts == k
        if chosen.any():
            print(f"  {name:>10}: {episode.rewards[chosen].mean():.4f}")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    from pxpo_gym.cli import parse, run

    run(lambda: main(parse(DemoConfig)), "pxpo_gym.demo")
