"""What any method can reach on the region task: the exact gradient with the silent half held.

The region task scores the left half (closeness to blue) and is silent on the right.
Issue 18 asks for a default that keeps the silent half within RMS 0.1 of the
pretrained image while the scored half reaches 90% of the best gain. Before
blaming an RL estimator for missing it, this asks whether the model can do it at
all in the budget: the exact-gradient oracle (the reward backpropagated through
the sampler, ``agents.algorithms.oracle``) with a penalty that is itself exact,

    loss = -mean reward + c * mean over the silent half of (x_0 - x_0^pretrained)^2,

x_0^pretrained the pretrained model's image from the same noise, for several c.
Each c trains its own copy of the default model (same noise, contexts and seed),
and is scored on 32 held-out episodes: reward, and the RMS distance to the
pretrained image over the silent and the scored half.

    python -m benchmarks.studies.region_ceiling          # ~5 min on CPU, 1 thread

The committed result: ``benchmarks/results/region_ceiling/region_ceiling.{json,md}`` (``--out`` without suffix).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
from tqdm import tqdm

import pxpo_gym  # noqa: F401  (registers the env)
from agents.policy import make_policy
from benchmarks.provenance import provenance, scratch
from benchmarks.suite.tasks import TASKS

HELD_OUT_SEED = 10_000


def make_env(num_envs: int):
    task = TASKS["region"]
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=num_envs,
        reward=task.reward,
        reward_kwargs=task.reward_kwargs,
        num_inference_steps=20,
        device="cpu",
    )


def rollout(envs, model, noise: torch.Tensor, contexts: torch.Tensor):
    """(rewards (N,), images (N, 3, H, W)) of episodes with the given noise and contexts; autograd
    follows the model when grad is enabled."""
    obs, _ = envs.reset(options={"noise": noise, "context": contexts})
    for _ in range(envs.unwrapped.num_steps):
        obs, rewards, _, _, info = envs.step(model(obs["sample"], obs["timestep"], obs["context"]))
    return rewards, info["image"]


def draw(core, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode noise (n, T + 1, C, h, w) and contexts (n,) from ``generator``."""
    noise = torch.randn((n, core.num_steps + 1, *core.loaded.sample_shape), generator=generator)
    choices = core.context_choices.cpu()
    return noise, choices[torch.randint(len(choices), (n,), generator=generator)]


def silent_mask(envs) -> torch.Tensor:
    """(H, W) bool: the pixels the region reward never scores (its map is 0 there for any image)."""
    core = envs.unwrapped
    gen = torch.Generator().manual_seed(0)
    images = torch.rand((8, 3, *core.loaded.image_size), generator=gen)
    maps = core.reward_fn(images, core.context_choices[:1].expand(8))
    return (maps == 0).all(dim=0)


def rms(diff: torch.Tensor, mask: torch.Tensor) -> float:
    """RMS over images, channels and the masked pixels of (N, 3, H, W) ``diff``."""
    return float(diff.square().mean(dim=1)[:, mask].mean().sqrt())


def evaluate(envs, policy, reference, silent: torch.Tensor, n: int) -> dict[str, float]:
    """Held-out reward and distances over ``n`` fixed episodes (chunks of the env's batch)."""
    noise, contexts = draw(envs.unwrapped, n, torch.Generator().manual_seed(HELD_OUT_SEED))
    batch = envs.unwrapped.num_envs
    rewards, diffs = [], []
    with torch.no_grad():
        for i in range(0, n, batch):
            r, images = rollout(envs, policy, noise[i : i + batch], contexts[i : i + batch])
            _, pretrained = rollout(envs, reference, noise[i : i + batch], contexts[i : i + batch])
            rewards.append(r)
            diffs.append(images - pretrained)
    diff = torch.cat(diffs)
    return {
        "reward": float(torch.cat(rewards).mean()),
        "silent_distance": rms(diff, silent),
        "scored_distance": rms(diff, ~silent),
    }


def train(coef: float, epochs: int, batch: int, lr: float, seed: int, eval_images: int) -> dict:
    torch.manual_seed(seed)
    envs = make_env(batch)
    core = envs.unwrapped
    reference = core.model
    policy = make_policy(reference)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    silent = silent_mask(envs)
    gen = torch.Generator().manual_seed(seed)
    start = evaluate(envs, policy, reference, silent, eval_images)
    for _ in tqdm(range(epochs), desc=f"penalty {coef:g}", unit="epoch", leave=False):
        for _ in range(2):  # 2 x 16 = 32 images per epoch, as the suite's oracle
            noise, contexts = draw(core, batch, gen)
            with torch.no_grad():
                _, pretrained = rollout(envs, reference, noise, contexts)
            rewards, images = rollout(envs, policy, noise, contexts)
            held = (images - pretrained).square().mean(dim=1)[:, silent].mean()
            loss = -rewards.mean() + coef * held
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
    final = evaluate(envs, policy, reference, silent, eval_images)
    envs.close()
    return {"coef": coef, "seed": seed, "start": start, "final": final}


@dataclass(frozen=True)
class RegionCeilingConfig:
    """The exact-gradient oracle on the region task with an exact penalty on the silent half."""

    coefs: tuple[float, ...] = (0.0, 1.0, 10.0, 100.0)
    """Silent-half penalty coefficients c (one trained copy each)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds (noise, contexts, training shuffles)."""
    epochs: int = 15
    """Epochs of 32 images (the region preset's 480 images)."""
    lr: float = 3e-4
    """The oracle's swept learning rate."""
    eval_images: int = 32
    """Held-out episodes (a multiple of 16)."""
    out: str = scratch("region_ceiling")
    """Output path without suffix: OUT.json and OUT.md."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.eval_images < 16 or self.eval_images % 16:
            raise ValueError(
                f"need epochs >= 1 and eval_images a positive multiple of 16, got epochs={self.epochs}, "
                f"eval_images={self.eval_images}"
            )
        if not self.coefs or any(c < 0 for c in self.coefs):
            raise ValueError(f"coefs must be one or more numbers >= 0, got coefs={self.coefs}")


def main(args: RegionCeilingConfig) -> None:
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = [train(c, args.epochs, 16, args.lr, s, args.eval_images) for c in args.coefs for s in args.seeds]
    start_reward = rows[0]["start"]["reward"]
    best_gain = max(r["final"]["reward"] - start_reward for r in rows)
    lines = [
        f"| silent-half penalty c | seed | held-out reward (start {start_reward:.3f}) | share of the best gain | "
        "silent-half distance | scored-half distance |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["final"]
        share = (f["reward"] - start_reward) / best_gain if best_gain > 0 else float("nan")
        r["share_of_best_gain"] = share
        lines.append(
            f"| {r['coef']:g} | {r['seed']} | {f['reward']:.3f} | {share:.2f} | "
            f"{f['silent_distance']:.3f} | {f['scored_distance']:.3f} |"
        )
    result = {
        **provenance("benchmarks.studies.region_ceiling"),
        "threads": 1,
        "epochs": args.epochs,
        "images_per_epoch": 32,
        "learning_rate": args.lr,
        "seconds": round(time.perf_counter() - started, 1),
        "runs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(RegionCeilingConfig)), "benchmarks.studies.region_ceiling")
