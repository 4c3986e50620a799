"""Which pixels each suite task's reward never looks at, on the default model.

PXPO's default ``silent_mode='hold-unscored'`` pins a pixel to the pretrained
model's trajectory when (a) its reward is silent on the context's first maps
(the pretrained model's own images, ``agents.algorithms.pxpo``) and (b) the reward at it is
exactly the same for noise images (``agents.credit.reward_unscored``). This
measures both per task and context, with the same sample sizes training uses
(stat_min_count = 8 pretrained images per context, 8 noise images), so a reader
can see where the default pins anything: tasks with no unscored pixel train
exactly as ``silent_mode='kl'`` does.

    python -m benchmarks.studies.unscored --out benchmarks/results/unscored/unscored.json
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from agents.advantages import ContextStats
from agents.algorithms.pxpo import SILENT_TOLERANCE
from agents.credit import reward_unscored
from benchmarks.provenance import provenance, write_result
from benchmarks.suite.tasks import TASKS
from pxpo_gym.rewards import pool_to_grid
from pxpo_gym.sampling import run_policy


@dataclass(frozen=True)
class UnscoredConfig:
    """Fractions of silent, noise-insensitive and unscored pixels per suite task."""

    tasks: tuple[str, ...] = tuple(TASKS)
    """Task names (benchmarks.suite.tasks.TASKS)."""
    images_per_context: int = 8
    """Pretrained images per context that decide silence (training's stat_min_count)."""
    seed: int = 0
    """Seeds the env noise and the noise images."""
    out: str = "outputs/benchmarks/unscored.json"
    """Output JSON file."""


def measure(cfg: UnscoredConfig) -> dict:
    torch.set_num_threads(1)
    result: dict = {**provenance("benchmarks.studies.unscored"), "threads": 1, "tasks": {}}
    for name in cfg.tasks:
        task = TASKS[name]
        n = cfg.images_per_context
        probe = gym.make_vec("DiffusionDenoise-v0", num_envs=1)
        choices = probe.unwrapped.context_choices.cpu()  # the default model's training contexts
        probe.close()
        contexts = choices[torch.arange(len(choices) * n) % len(choices)]
        envs = gym.make_vec(
            "DiffusionDenoise-v0",
            num_envs=len(contexts),
            reward=task.reward,
            reward_kwargs=task.reward_kwargs,
        )
        core = envs.unwrapped
        episode = run_policy(envs, seed=cfg.seed, options={"context": contexts.to(core.device)})
        grid = tuple(core.loaded.sample_shape[1:])
        stats = ContextStats(core.loaded.num_contexts, n, n, grid, "pooled")
        stats.update(episode.contexts.cpu(), pool_to_grid(episode.image_reward_maps, grid).cpu())
        silent = stats.silent(SILENT_TOLERANCE)
        insensitive = reward_unscored(core, seed=cfg.seed)  # the committed results' key: 'insensitive'
        rows = {}
        for ctx in choices.tolist():
            rows[str(core.loaded.context_names[ctx])] = {
                "silent": round(float(silent[ctx].float().mean()), 4),
                "insensitive": round(float(insensitive[ctx].float().mean()), 4),
                "unscored": round(float((silent[ctx] & insensitive[ctx]).float().mean()), 4),
            }
        result["tasks"][name] = rows
        envs.close()
    return result


def main(cfg: UnscoredConfig) -> dict:
    result = measure(cfg)
    out = write_result(cfg.out, result)
    for name, rows in result["tasks"].items():
        line = ", ".join(
            f"{c}: {r['silent']:.2f} / {r['insensitive']:.2f} / {r['unscored']:.2f}" for c, r in rows.items()
        )
        print(f"{name} (silent / insensitive / unscored): {line}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(UnscoredConfig)), "benchmarks.studies.unscored")
