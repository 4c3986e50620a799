"""Which per-pixel credit agrees with the exact reward gradient? PXPO's credits side by side.

At the pretrained model, for one batch of images per task and seed, it computes PXPO's
score-function gradient under each credit (``agents.credit``; the default step
weighting applied, as in training) and the exact reward gradient G (backpropagated
through the sampler on other images, ``agents.algorithms.oracle``), and reports:

- cos_exact: cosine(-g, G) of the whole weighted gradient g (a loss gradient; -g ascends);
- cos_split: cosine between the gradients of the two halves of the batch (0: pure noise);
- per step: cos_exact of each step's term (how the credit fares where the footprint is wide).

DDPO's gradient (image-level advantages, its own mean-log-likelihood loss) is measured beside
them. The footprint is measured once per task and seed on the same model (its cost is reported).

    python -m benchmarks.studies.credit_signal      # 4 differentiable tasks x 2 seeds (~15 min on 1 CPU thread)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from agents.algorithms.ddpo import DDPO, DDPOConfig
from agents.algorithms.oracle import reward_gradient
from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.credit import measure_footprint, reward_locality
from agents.policy import make_policy
from agents.steps import step_weights
from agents.trajectories import collect
from benchmarks.provenance import provenance, scratch
from benchmarks.studies.step_signal import cosine, per_step_gradients, write_results
from benchmarks.suite.tasks import TASKS

CREDIT_VARIANTS: dict[str, dict[str, object]] = {
    "auto": {"credit": "auto"},
    "pixel": {"credit": "pixel"},
    "hybrid": {"credit": "pixel", "image_advantage_weight": 1.0},
    "image": {"credit": "image"},
    "footprint 0.1": {"credit": "footprint", "credit_threshold": 0.1},
    "footprint 0.3": {"credit": "footprint", "credit_threshold": 0.3},
    "footprint 0.5": {"credit": "footprint", "credit_threshold": 0.5},
    "support 0.1": {"credit": "support", "credit_threshold": 0.1},
    "receptive 0.3": {"credit": "receptive", "credit_threshold": 0.3},
}
"""PXPOConfig fields of each credit compared (label -> overrides)."""


@dataclass(frozen=True)
class CreditSignalConfig:
    """PXPO's credits against the exact reward gradient."""

    tasks: tuple[str, ...] = ("color", "target_map", "segmentation", "region")
    """Differentiable suite tasks (benchmarks.suite.tasks)."""
    credits: tuple[str, ...] = tuple(CREDIT_VARIANTS)
    """Credits compared (names in CREDIT_VARIANTS)."""
    images: int = 64
    """Images whose policy gradients are measured (split in two halves)."""
    exact_images: int = 128
    """Images for the exact gradient (chunks of 32)."""
    footprint_images: int = 64
    """Episodes for the footprint measurement."""
    seeds: tuple[int, ...] = (0, 1)
    """Seeds; each draws fresh images for every estimate."""
    num_inference_steps: int = 20
    """DDIM steps."""
    threads: int = 1
    """torch CPU threads."""
    out: str = scratch("credit_signal.json")
    """Output numbers (a markdown table is written beside it)."""


def measure(task: str, cfg: CreditSignalConfig, seed: int) -> dict:
    spec = TASKS[task]

    def make(n: int):
        return gym.make_vec(
            "DiffusionDenoise-v0",
            num_envs=n,
            reward=spec.reward,
            reward_kwargs=spec.reward_kwargs,
            num_inference_steps=cfg.num_inference_steps,
        )

    envs, exact_envs = make(cfg.images), make(32)
    core = envs.unwrapped
    policy = make_policy(core.model, 0)
    channels, *grid = core.loaded.sample_shape
    weights = step_weights(core.schedule.coefficients.std_dev_t.cpu())
    footprint = measure_footprint(make(32), core.model, cfg.footprint_images, seed=seed)
    with torch.no_grad():
        traj = collect(envs, policy, seed=seed)
    exact = torch.zeros(())
    for c in range(max(1, cfg.exact_images // 32)):
        g, _ = reward_gradient(policy, exact_envs, policy, seed=10_000 * (seed + 1) + c * 1000)
        exact = exact + g
    n = len(traj)
    halves = (slice(0, n // 2), slice(n // 2, n))
    result: dict = {"footprint": footprint.summary(), "credits": {}}
    algos = [("ddpo", DDPO(DDPOConfig(stat_buffer_size=n, stat_min_count=2), core.loaded.num_contexts, grid))]
    for label in cfg.credits:
        config = PXPOConfig(stat_buffer_size=n, stat_min_count=2, **CREDIT_VARIANTS[label])
        algo = PXPO(config, core.loaded.num_contexts, tuple(grid))
        if algo.needs_footprint:
            algo.set_footprint(footprint)
        if algo.needs_locality:  # 'auto': the credit the reward's locality picks
            algo.set_locality(reward_locality(core, seed=seed))
        algos.append((label, algo))
    for label, algo in algos:
        started = time.perf_counter()
        adv = algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
        parts = [per_step_gradients(policy, algo, traj, adv, channels, h) for h in halves]  # 2 x (T, P)
        total = parts[0] + parts[1]
        whole = (weights[:, None] * total).sum(dim=0)
        split = [(weights[:, None] * p).sum(dim=0) for p in parts]
        result["credits"][label] = {
            "cos_exact": cosine(-whole, exact),
            "cos_split": cosine(*split),
            "step_cos_exact": [cosine(-total[k], exact) for k in range(total.shape[0])],
            "seconds": time.perf_counter() - started,
        }
    return result


def markdown(results: dict) -> str:
    lines = [
        f"Commit {results['commit']}; `{results['command']}`; {results['config']['images']} images per "
        f"policy gradient, {results['config']['exact_images']} for the exact one, seeds "
        f"{list(results['config']['seeds'])}, means over seeds.",
        "",
    ]
    tasks = list(results["tasks"])
    labels = list(results["tasks"][tasks[0]][0]["credits"])
    lines += [
        "| credit | " + " | ".join(f"{t} cos exact | {t} cos split" for t in tasks) + " |",
        "|---|" + "---|---|" * len(tasks),
    ]
    for label in labels:
        cells = []
        for t in tasks:
            runs = results["tasks"][t]
            for f in ("cos_exact", "cos_split"):
                cells.append(f"{np.mean([r['credits'][label][f] for r in runs]):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Footprint measurement cost (seconds, mean over seeds): "
        + ", ".join(
            f"{t} {np.mean([r['footprint']['seconds'] for r in results['tasks'][t]]):.1f} "
            f"({results['tasks'][t][0]['footprint']['method']})"
            for t in tasks
        ),
        "",
    ]
    for t in tasks:
        runs = results["tasks"][t]
        lines += [
            f"Per-step cos exact, {t} (step 0 = first, noisiest):",
            "",
            "| credit | "
            + " | ".join(str(k) for k in range(len(runs[0]["credits"][labels[0]]["step_cos_exact"])))
            + " |",
            "|---|" + "---|" * len(runs[0]["credits"][labels[0]]["step_cos_exact"]),
        ]
        for label in labels:
            per = np.mean([r["credits"][label]["step_cos_exact"] for r in runs], axis=0)
            lines.append(f"| {label} | " + " | ".join(f"{x:.2f}" for x in per) + " |")
        radius = np.mean([r["footprint"]["radius90"] for r in runs], axis=0)
        lines += ["| footprint radius holding 90% | " + " | ".join(f"{x:.0f}" for x in radius) + " |", ""]
    return "\n".join(lines)


def main(cfg: CreditSignalConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    results = {
        **provenance("benchmarks.studies.credit_signal"),
        "config": asdict(cfg),
        "tasks": {},
    }
    for task in cfg.tasks:
        results["tasks"][task] = [measure(task, cfg, seed) for seed in cfg.seeds]
        print(f"{task}: done", flush=True)
    write_results(cfg.out, results, markdown(results))
    return results


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(CreditSignalConfig)), "benchmarks.studies.credit_signal")
