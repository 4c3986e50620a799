"""Which denoising steps carry policy-gradient signal? The per-step table, and each weighting's effect.

At the pretrained model, for one batch of images per task it computes every
step's policy-gradient term g_k (DDPO and PXPO, score function: the IS gradient
is the same before the first update), the exact reward gradient G (backpropagated
through the sampler on separate images, ``agents.algorithms.oracle``), and reports per step:

- sigma_t, b_t / sigma_t (the score's scale) and sigma_t / median sigma_t;
- share: ||g_k||^2 / sum_j ||g_j||^2, the step's part of the gradient's size;
- cos_exact: cosine(-g_k, G), agreement with the exact gradient (g_k is a loss
  gradient, a descent direction, so its ascent direction -g_k is compared);
- cos_split: cosine between g_k of the two halves of the batch (0: pure noise).

- weighted share: the same share once the default step weighting is applied.

Then, for each step weighting (``agents.steps``), the cosine of the whole weighted
policy gradient -sum_k w_k g_k with G, and between the two halves' weighted sums.

    python -m benchmarks.studies.step_signal --latent   # default model (3 tasks) + tiny latent pipeline, 2 seeds (~9 min)
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from agents.algorithms.ddpo import DDPO, DDPOConfig
from agents.algorithms.oracle import reward_gradient
from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.policy import make_policy
from agents.steps import step_weights
from agents.trajectories import coefficients_from, collect
from benchmarks.provenance import provenance, scratch
from benchmarks.suite.tasks import TASKS
from pxpo_gym.transition import step_log_prob

WEIGHTINGS = (
    ("all", "all", 1.0),
    ("drop 0.1", "drop", 0.1),
    ("drop 0.25", "drop", 0.25),
    ("soft 0.1", "soft", 0.1),
    ("soft 0.25", "soft", 0.25),
)
"""(label, mode, threshold) of the weightings compared; 'drop last 2' is added by hand."""


@dataclass(frozen=True)
class StepSignalConfig:
    """Per-step policy-gradient signal against the exact reward gradient."""

    tasks: tuple[str, ...] = ("color", "target_map", "segmentation")
    """Differentiable suite tasks (benchmarks.suite.tasks)."""
    images: int = 64
    """Images whose policy gradients are measured (split in two halves)."""
    exact_images: int = 128
    """Images for the exact gradient (chunks of 32)."""
    seeds: tuple[int, ...] = (0, 1)
    """Seeds; each draws fresh images for both estimates."""
    num_inference_steps: int = 20
    """DDIM steps."""
    latent: bool = False
    """Also measure the tiny latent text-to-image pipeline (random weights, SD's schedule, 32x32)."""
    threads: int = 1
    """torch CPU threads."""
    out: str = scratch("step_signal.json")
    """Output numbers (a markdown table is written beside it)."""


def flat_grad(policy: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a[None], b[None]).item())


def per_step_gradients(policy, algo, traj, advantages, channels: int, half: slice) -> torch.Tensor:
    """(T, P): the gradient of the algorithm's loss at each step, over the images in ``half``."""
    num_steps = traj.timesteps.shape[1]
    idx = torch.arange(len(traj))[half]
    out = []
    for k in range(num_steps):
        kk = torch.full((len(idx),), k)
        eps = policy(traj.samples[idx, kk], traj.timesteps[idx, kk], traj.contexts[idx])
        coeffs = coefficients_from(traj.coeffs[idx, kk])
        logp = step_log_prob(traj.samples[idx, kk + 1], traj.samples[idx, kk], eps, coeffs).sum(dim=1)
        adv = (
            advantages[idx, kk] if advantages.dim() == 4 else advantages[idx]
        )  # per-step credits: (N, T, h, w)
        loss, _ = algo.loss(logp, traj.logp_pixels[idx, kk], adv, channels)
        out.append(flat_grad(policy, loss))
    return torch.stack(out)


def measure(
    envs, exact_envs, exact_chunks: int, seed: int, labels_weights: list[tuple[str, torch.Tensor]]
) -> dict:
    """Per-step and per-weighting numbers for one env (task) and seed; the exact gradient
    sums ``exact_chunks`` batches of ``exact_envs`` (other noise than the policy-gradient batch)."""
    core = envs.unwrapped
    policy = make_policy(core.model, 0)
    channels, *grid = core.loaded.sample_shape
    num_contexts = core.loaded.num_contexts
    with torch.no_grad():
        traj = collect(envs, policy, seed=seed)
    exact = torch.zeros(())
    for c in range(exact_chunks):
        g, _ = reward_gradient(policy, exact_envs, policy, seed=10_000 * (seed + 1) + c * 1000)
        exact = exact + g
    n = len(traj)
    halves = (slice(0, n // 2), slice(n // 2, n))
    default_weights = step_weights(core.schedule.coefficients.std_dev_t.cpu())
    result: dict = {"reward_mean": float(traj.rewards.mean())}
    for name, cls, cfg in (("ddpo", DDPO, DDPOConfig()), ("pxpo", PXPO, PXPOConfig(credit="pixel"))):
        algo = cls(dataclasses.replace(cfg, stat_buffer_size=n, stat_min_count=2), num_contexts, tuple(grid))
        adv = algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
        # The loss is a mean over images: the two halves' sum is the whole batch's gradient x 2.
        parts = [per_step_gradients(policy, algo, traj, adv, channels, h) for h in halves]  # 2 x (T, P)
        total = parts[0] + parts[1]
        norms = total.square().sum(dim=1)
        weighted_norms = norms * default_weights.square()
        steps = {
            "share": (norms / norms.sum()).tolist(),
            "weighted_share": (weighted_norms / weighted_norms.sum()).tolist(),
            "cos_exact": [cosine(-total[k], exact) for k in range(total.shape[0])],
            "cos_split": [cosine(parts[0][k], parts[1][k]) for k in range(total.shape[0])],
        }
        weighted = {}
        for label, w in labels_weights:
            whole = (w[:, None] * total).sum(dim=0)
            split = [(w[:, None] * p).sum(dim=0) for p in parts]
            weighted[label] = {"cos_exact": cosine(-whole, exact), "cos_split": cosine(*split)}
        result[name] = {"steps": steps, "weightings": weighted}
    return result


def schedule_table(envs) -> dict[str, list[float]]:
    schedule = envs.unwrapped.schedule
    coeffs = schedule.coefficients
    std = coeffs.std_dev_t.cpu()
    return {
        "timestep": schedule.timesteps.cpu().tolist(),
        "std_dev_t": std.tolist(),
        "coef_eps_over_std": (coeffs.coef_model_output.cpu() / std).tolist(),
        "std_over_median": (std / std.median()).tolist(),
        "default_weight": step_weights(std).tolist(),
    }


def weightings_for(envs) -> list[tuple[str, torch.Tensor]]:
    std = envs.unwrapped.schedule.coefficients.std_dev_t.cpu()
    out = [(label, step_weights(std, mode, thr)) for label, mode, thr in WEIGHTINGS]
    last_two = torch.ones_like(std)
    last_two[-2:] = 0
    out.append(("drop last 2", last_two))
    return out


def run_model(label: str, make, cfg: StepSignalConfig, tasks: dict[str, tuple[str, dict]]) -> dict:
    out: dict = {}
    for task, (reward, kwargs) in tasks.items():
        envs = make(cfg.images, reward, kwargs)
        exact = make(32, reward, kwargs)
        chunks = max(1, cfg.exact_images // 32)
        runs = [measure(envs, exact, chunks, seed, weightings_for(envs)) for seed in cfg.seeds]
        out[task] = {"schedule": schedule_table(envs), "seeds": runs}
        print(f"{label}/{task}: done", flush=True)
    return out


def markdown(results: dict) -> str:
    lines = []
    for model, tasks in results["models"].items():
        for task, data in tasks.items():
            runs, sched = data["seeds"], data["schedule"]
            lines += [
                f"### {model}, {task} (mean of {len(runs)} seeds)",
                "",
                "| step | t | sigma_t | b_t/sigma_t | sigma/median | weight | DDPO share | weighted | "
                "DDPO cos exact | DDPO cos split | PXPO share | weighted | PXPO cos exact | PXPO cos split |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            fields = ("share", "weighted_share", "cos_exact", "cos_split")
            cols = {
                (a, f): np.mean([r[a]["steps"][f] for r in runs], axis=0)
                for a in ("ddpo", "pxpo")
                for f in fields
            }
            for k, t in enumerate(sched["timestep"]):
                cells = [f"{cols[(a, f)][k]:.3f}" for a in ("ddpo", "pxpo") for f in fields]
                lines.append(
                    f"| {k} | {t} | {sched['std_dev_t'][k]:.4f} | {sched['coef_eps_over_std'][k]:.2f} | "
                    f"{sched['std_over_median'][k]:.3f} | {sched['default_weight'][k]:.3f} | "
                    + " | ".join(cells)
                    + " |"
                )
            lines += [
                "",
                "| weighting | DDPO cos exact | DDPO cos split | PXPO cos exact | PXPO cos split |",
                "|---|---|---|---|---|",
            ]
            for label in runs[0]["ddpo"]["weightings"]:
                cells = [
                    f"{np.mean([r[a]['weightings'][label][f] for r in runs]):.3f}"
                    for a in ("ddpo", "pxpo")
                    for f in ("cos_exact", "cos_split")
                ]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(cfg: StepSignalConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    tasks = {t: (TASKS[t].reward, TASKS[t].reward_kwargs) for t in cfg.tasks}

    def make_default(n, reward, kwargs):
        return gym.make_vec(
            "DiffusionDenoise-v0",
            num_envs=n,
            reward=reward,
            reward_kwargs=kwargs,
            num_inference_steps=cfg.num_inference_steps,
        )

    results = {
        **provenance("benchmarks.studies.step_signal"),
        "config": asdict(cfg),
        "models": {"default": run_model("default", make_default, cfg, tasks)},
    }
    if cfg.latent:
        from pxpo_gym.tiny_models import save_tiny_text_to_image_pipeline

        folder = save_tiny_text_to_image_pipeline(Path(tempfile.mkdtemp()) / "tiny-sd")
        prompts = [f"a photo of object {i}" for i in range(8)]

        def make_latent(n, reward, kwargs):
            return gym.make_vec(
                "DiffusionDenoise-v0",
                num_envs=n,
                model=str(folder),
                prompts=prompts,
                resolution=32,
                reward=reward,
                reward_kwargs=kwargs,
                num_inference_steps=cfg.num_inference_steps,
            )

        latent_tasks = {"color": tasks.get("color", ("color", {}))}
        results["models"]["tiny-latent"] = run_model("tiny-latent", make_latent, cfg, latent_tasks)
    write_results(cfg.out, results, markdown(results))
    return results


def write_results(out: str, results: dict, table: str) -> None:
    """Writes the numbers to OUT (JSON) and the markdown table beside it (OUT with .md), and prints the table."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=1) + "\n")
    Path(out).with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(StepSignalConfig)), "benchmarks.studies.step_signal")
