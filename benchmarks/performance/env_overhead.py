"""How much the env adds on top of the bare sampling compute.

Times a full episode through ``gym.make_vec`` with the pretrained model as the
policy against the same model in a bare DDIM loop (same batch, same noise
tensors, same reward, same process), alternating the two and taking medians.

    python -m benchmarks.performance.env_overhead --batch-size 64 --repeats 7

Writes ``OUT`` (committed: ``benchmarks/results/env_overhead/env_overhead.json``) and prints a markdown line.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import gymnasium as gym
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from benchmarks.performance.timing import device_name, timed
from benchmarks.provenance import provenance, scratch, write_result
from pxpo_gym.sampling import run_policy
from pxpo_gym.transition import transition_step


@dataclass(frozen=True)
class OverheadConfig:
    """Env overhead: env episode time vs a bare DDIM loop with the same model."""

    batch_size: int = 64
    """Images per episode (vector envs)."""
    num_inference_steps: int = 20
    """DDIM steps."""
    repeats: int = 7
    """Timed episodes of each kind (alternating); medians are reported."""
    threads: int = 1
    """torch CPU threads (1 is steady on small VMs)."""
    device: str = "cpu"
    """torch device."""
    reward: str = "color"
    """Reward computed at the end, by both."""
    out: str = scratch("env_overhead.json")
    """Where to write the result."""


@torch.no_grad()
def bare_episode(envs, noise: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """The same computation without the env: model, DDIM update, decode, reward."""
    core = envs.unwrapped
    schedule, model = core.schedule, core.model
    x = noise[:, 0]
    batch = x.shape[0]
    for k in range(schedule.num_steps):
        t = schedule.timesteps[k].expand(batch)
        model_output = model(x, t, contexts)
        index = torch.full((batch,), k, device=x.device)
        x = transition_step(x, model_output, schedule.at(index), noise[:, k + 1])
    return core.reward_fn(core.decode(x), contexts)


def main(cfg: OverheadConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=cfg.batch_size,
        num_inference_steps=cfg.num_inference_steps,
        device=device,
        reward=cfg.reward,
    )
    core = envs.unwrapped
    run_policy(envs, seed=0)  # warm-up, and draws the noise the bare loop reuses
    noise, contexts = core._noise.clone(), core._context.clone()
    bare_episode(envs, noise, contexts)
    env_times, bare_times = [], []
    for rep in range(cfg.repeats):  # alternate, so drifts in machine speed hit both alike
        env_times.append(timed(lambda: run_policy(envs, seed=rep), device))  # noqa: B023
        bare_times.append(timed(lambda: bare_episode(envs, noise, contexts), device))
    env_s, bare_s = statistics.median(env_times), statistics.median(bare_times)
    result = {
        **provenance("benchmarks.performance.env_overhead"),
        "config": asdict(cfg),
        "env_episode_s": env_s,
        "bare_episode_s": bare_s,
        "overhead_ratio": env_s / bare_s,
        "env_times_s": env_times,
        "bare_times_s": bare_times,
        "device_name": device_name(device),
        "torch": torch.__version__,
    }
    write_result(cfg.out, result, indent=2)
    print(
        f"| batch {cfg.batch_size}, {cfg.num_inference_steps} steps, {cfg.device}, {cfg.threads} thread(s) "
        f"| env {env_s:.3f} s | bare loop {bare_s:.3f} s | ratio {env_s / bare_s:.3f} "
        f"({100 * (env_s / bare_s - 1):+.1f}%) |"
    )
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(OverheadConfig)), "benchmarks.performance.env_overhead")
