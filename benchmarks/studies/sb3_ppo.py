"""Stable-Baselines3 PPO on the env in residual mode: does a generic RL algorithm beat the pretrained sampler?

PPO starts from a random Gaussian policy, so it acts on ``action_mode="residual"``:
its action is a bounded correction added to the frozen pretrained model's
noise prediction (zero = the pretrained sampler). It sees a small observation
(the sample area-pooled 4x and flattened, the step index, the context one-hot)
and acts on a coarse ``action_grid`` (one correction per channel by default),
the sizes a generic MLP policy can learn from on a CPU in minutes.

Every ``eval_every`` PPO iterations the deterministic policy (the Gaussian's
mean) is scored on the same fixed evaluation seeds as the pretrained sampler
(a zero action), so the two numbers differ only by the policy.

    python -m benchmarks.studies.sb3_ppo                      # 3 seeds (committed: --out benchmarks/results/sb3_ppo)
    python -m benchmarks.studies.sb3_ppo --seeds 0 --total-timesteps 6400 --out /tmp/ppo
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.provenance import provenance, scratch
from pxpo_gym.sb3 import SB3VecEnv, make_sb3_env


@dataclass(frozen=True)
class PPOBenchConfig:
    """SB3 PPO in residual mode against the pretrained sampler, on one reward."""

    reward: str = "color"
    """Reward of the task (a built-in name or "module:function")."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One PPO run per seed (seeds the policy and the training envs)."""
    total_timesteps: int = 25_600
    """Env steps per run (20 steps per episode)."""
    num_envs: int = 16
    """Training envs stepped together."""
    n_steps: int = 40
    """PPO rollout length per env; a multiple of the episode length keeps episodes whole."""
    batch_size: int = 160
    """PPO minibatch size."""
    n_epochs: int = 10
    """PPO passes over each rollout."""
    learning_rate: float = 3e-4
    """Adam step size."""
    gamma: float = 1.0
    """Discount (episodes have a fixed length and a terminal reward)."""
    residual_scale: float = 0.25
    """eps = pretrained eps + residual_scale * up(action)."""
    action_grid: int = 1
    """The correction's grid (1: one value per channel, broadcast over the image)."""
    obs_downscale: int = 4
    """Area-pooling factor of the observed sample."""
    eval_every: int = 4
    """Evaluate every this many PPO iterations (and at the start and end)."""
    eval_episodes: int = 64
    """Evaluation episodes (fixed seeds, the same for the policy and the pretrained sampler)."""
    eval_seed: int = 10_000
    """Seed of the evaluation envs (disjoint from the training seeds)."""
    threads: int = 1
    """torch CPU threads (1 is steady on a shared 2-core VM)."""
    device: str = "cpu"
    """Where the env and the policy run."""
    out: str = scratch("sb3_ppo")
    """Output folder: results.json, curve.csv, curve.png."""

    def env_kwargs(self) -> dict:
        return dict(
            reward=self.reward,
            action_mode="residual",
            residual_scale=self.residual_scale,
            action_grid=self.action_grid,
            obs_keys=("sample", "step_index", "context"),
            obs_downscale=self.obs_downscale,
            obs_flatten=True,
            obs_one_hot_context=True,
            device=self.device,
        )


def evaluate(venv: SB3VecEnv, policy, seed: int) -> float:
    """Mean terminal reward of one batch of episodes from fixed seeds.

    Args:
        venv: the evaluation env; one episode per env.
        policy: ``obs -> actions`` in [-1, 1]; ``None`` for the pretrained sampler (zero action).
        seed: reset seed (env i gets seed + i).
    """
    venv.seed(seed)
    obs = venv.reset()
    rewards = np.zeros(venv.num_envs)
    for _ in range(venv.core.num_steps):
        actions = (
            np.zeros((venv.num_envs, *venv.action_space.shape), np.float32) if policy is None else policy(obs)
        )
        obs, step_rewards, dones, _ = venv.step(actions)
        rewards += step_rewards
    assert dones.all(), "lock-step episodes end together"
    return float(rewards.mean())


def train_one(cfg: PPOBenchConfig, seed: int, progress: tqdm | None = None) -> dict:
    """One PPO run; returns its evaluation curve and timings."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    train_env = VecMonitor(make_sb3_env(cfg.num_envs, **cfg.env_kwargs()))
    train_env.seed(seed)
    eval_env = make_sb3_env(cfg.eval_episodes, **cfg.env_kwargs())
    model = PPO(
        "MultiInputPolicy",
        train_env,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        seed=seed,
        device=cfg.device,
    )

    def policy(obs):
        return model.predict(obs, deterministic=True)[0]

    curve = [(0, evaluate(eval_env, policy, cfg.eval_seed))]

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if progress is not None:
                progress.update(cfg.num_envs)
            return True

        def _on_rollout_end(self) -> None:
            iteration = self.num_timesteps // (cfg.num_envs * cfg.n_steps)
            if iteration % cfg.eval_every == 0:
                curve.append((self.num_timesteps, evaluate(eval_env, policy, cfg.eval_seed)))

    start = time.perf_counter()
    model.learn(cfg.total_timesteps, callback=Evaluate())
    seconds = time.perf_counter() - start
    if curve[-1][0] != model.num_timesteps:
        curve.append((model.num_timesteps, evaluate(eval_env, policy, cfg.eval_seed)))
    return {
        "seed": seed,
        "timesteps": [t for t, _ in curve],
        "eval_reward": [r for _, r in curve],
        "seconds": seconds,
    }


def plot(result: dict, path: Path) -> None:
    """Evaluation reward vs training episodes, seed mean with a 95% band, beside the pretrained sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.suite.analysis import confidence_band

    runs = result["runs"]
    episodes = np.asarray(runs[0]["timesteps"]) / result["episode_length"]
    curves = [np.asarray(run["eval_reward"]) for run in runs]
    low, high = confidence_band(curves)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for curve in curves:
        ax.plot(episodes, curve, color="tab:blue", alpha=0.25, lw=1)
    ax.plot(
        episodes,
        np.mean(curves, axis=0),
        color="tab:blue",
        lw=2,
        label=f"SB3 PPO, residual ({len(runs)} seeds)",
    )
    ax.fill_between(episodes, low, high, color="tab:blue", alpha=0.2)
    ax.axhline(result["pretrained_reward"], color="black", ls="--", label="pretrained sampler (zero action)")
    ax.set_xlabel("training episodes (images)")
    ax.set_ylabel(f"{result['config']['reward']} reward, {result['config']['eval_episodes']} eval episodes")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(cfg: PPOBenchConfig) -> dict:
    if any(t for t in cfg.seeds if not isinstance(t, int)) or not cfg.seeds:
        raise ValueError(f"seeds must be one or more ints, got seeds={cfg.seeds!r}")
    torch.set_num_threads(cfg.threads)
    from benchmarks.provenance import git_commit

    probe = make_sb3_env(cfg.eval_episodes, **cfg.env_kwargs())
    episode_length = probe.core.num_steps
    if cfg.n_steps % episode_length:
        raise ValueError(
            f"n_steps must be a multiple of the episode length {episode_length}, got {cfg.n_steps}"
        )
    pretrained = evaluate(probe, None, cfg.eval_seed)
    runs = []
    with tqdm(
        total=cfg.total_timesteps * len(cfg.seeds), desc="PPO env steps", unit="step", mininterval=2
    ) as bar:
        for seed in cfg.seeds:
            runs.append(train_one(cfg, seed, bar))
    finals = [run["eval_reward"][-1] for run in runs]
    result = {
        **provenance("benchmarks.studies.sb3_ppo"),
        "config": asdict(cfg),
        "commit": git_commit(),
        "torch_threads": torch.get_num_threads(),
        "episode_length": episode_length,
        "pretrained_reward": pretrained,
        "final_reward_mean": float(np.mean(finals)),
        "final_reward_per_seed": finals,
        "seeds_above_pretrained": int(sum(f > pretrained for f in finals)),
        "runs": runs,
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = ["seed,timesteps,episodes,eval_reward"]
    for run in runs:
        for t, r in zip(run["timesteps"], run["eval_reward"]):
            rows.append(f"{run['seed']},{t},{t // episode_length},{r:.6f}")
    (out / "curve.csv").write_text("\n".join(rows) + "\n")
    plot(result, out / "curve.png")
    print(
        f"pretrained sampler {pretrained:.3f}; PPO after {cfg.total_timesteps // episode_length} episodes: "
        + ", ".join(f"{f:.3f}" for f in finals)
        + f" (mean {result['final_reward_mean']:.3f}, {result['seeds_above_pretrained']}/{len(finals)} seeds above)"
    )
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(PPOBenchConfig)), "benchmarks.studies.sb3_ppo")
