"""Our DDPO against trl 0.23.1's ``DDPOTrainer`` on the same tiny Stable-Diffusion pipeline, 1 CPU thread.

Both sides train the same model (``pxpo_gym.tiny_models.save_tiny_text_to_image_pipeline``, written
once with ``save_pretrained`` into a scratch folder and loaded by each side from there: trl through
``DefaultDDPOStableDiffusionPipeline``, ours through ``TrainConfig(model=folder)``) with the same
prompts, images per epoch, minibatch, DDIM steps, eta, guidance, LoRA rank and targets, optimiser
settings, clip ranges, per-prompt advantage statistics and the same reward (``redness``, defined
once in this file and imported by both sides). Each side runs in its own process, one after the
other (never at once), with torch, OpenMP and MKL at 1 thread:

- trl in its own virtualenv (``bash benchmarks/performance/trl_venv.sh /tmp/venv-trl``: trl is no dependency of
  pxpo-gym; that venv does not hold pxpo-gym either: the trl side imports only this file);
- ours in the project's venv, through ``agents.runs.train``.

Measured per epoch (sampling + advantages + training, what one epoch of each trainer does): seconds,
images/s, the reward mean, and network passes (``agents.passes``' unit: one image through the UNet
once, a forward whose output needs grad counts 3: its backward costs 2; CFG's doubled batch counts
double). Ours logs ``passes`` itself (metrics.csv); trl's are counted by a forward hook on its UNet
with the same rule. Reward gained per pass is (last epoch's mean reward - first epoch's) over the
passes spent: over a few epochs of a random tiny model it is mostly noise; the curves are recorded
so a longer run can compare reward at equal passes.

    bash benchmarks/performance/trl_venv.sh /tmp/venv-trl
    .venv/bin/python -m benchmarks.performance.trl_compare --trl-python /tmp/venv-trl/bin/python \\
        --out benchmarks/results/trl_compare                # 3 epochs; --epochs N for more

Writes OUT/result.json (settings, versions, both sides' per-epoch rows, the ratios) and OUT/result.md.
Model weights are never downloaded (HF_HUB_OFFLINE=1 in both sides' environments).

This module's top level imports only the standard library: the trl side runs it under the trl venv.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow cross")
"""Training prompts on both sides (ours: context k is prompt k; trl: a uniform draw per image)."""
REPO = Path(__file__).resolve().parents[2]
VERSIONED = ("torch", "diffusers", "transformers", "accelerate", "peft", "trl", "numpy", "safetensors")
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


def redness(images, contexts=None):
    """The reward on both sides: per-pixel closeness to pure red, 1 - ||rgb - (1, 0, 0)|| / sqrt(3), in [0, 1].

    ``images``: (B, 3, H, W) RGB in [0, 1]; returns the (B, H, W) map (the project's reward API: the
    image's reward is the map's mean, as the trl side takes it). The same formula as the project's
    built-in ``color`` reward with its default target."""
    import torch

    red = torch.tensor([1.0, 0.0, 0.0], device=images.device, dtype=images.dtype)[None, :, None, None]
    return 1 - (images.float() - red).norm(dim=1) / math.sqrt(3)


# -- shared helpers ---------------------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def one_thread() -> dict[str, int]:
    """torch at 1 intra-op and 1 inter-op thread; returns what torch reports."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran
        pass
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }


def smoothed(curve: list[float], window: int = 3) -> list[float]:
    """Trailing mean over ``window`` epochs (fewer at the start)."""
    return [
        sum(curve[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
        for i in range(len(curve))
    ]


def passes_to(epochs: list[dict], target: float) -> int | None:
    """Cumulative passes at the first epoch whose 3-epoch smoothed reward reaches ``target``; None if never."""
    for e, value in zip(epochs, smoothed([e["reward_mean"] for e in epochs])):
        if value >= target:
            return e["passes"]
    return None


def summarize(epochs: list[dict], images_per_epoch: int) -> dict:
    """images/s over all epochs and over the epochs after the first (warm), reward gain per pass."""
    total_s = sum(e["seconds"] for e in epochs)
    warm = epochs[1:]
    warm_s = sum(e["seconds"] for e in warm)
    first, last = epochs[0], epochs[-1]
    gain = last["reward_mean"] - first["reward_mean"]
    passes = last["passes"]
    return {
        "epochs": len(epochs),
        "images": images_per_epoch * len(epochs),
        "seconds": total_s,
        "images_per_second": images_per_epoch * len(epochs) / total_s,
        "warm_images_per_second": images_per_epoch * len(warm) / warm_s if warm else None,
        "seconds_per_epoch": total_s / len(epochs),
        "warm_seconds_per_epoch": warm_s / len(warm) if warm else None,
        "passes": passes,
        "passes_per_image": passes / (images_per_epoch * len(epochs)),
        "reward_first": first["reward_mean"],
        "reward_last": last["reward_mean"],
        "reward_gain": gain,
        "reward_gain_per_million_passes": gain / passes * 1e6 if passes else None,
        "reward_curve": [e["reward_mean"] for e in epochs],
    }


# -- the trl side (runs under the trl venv) ------------------------------------------------------------


class UNetPassCounter:
    """``agents.passes.PassCounter``'s rule on a diffusers UNet: a forward of B samples is B passes, 3 B
    when its output requires grad (its backward counted as 2). The UNet's output is a tuple
    (``return_dict=False``, trl's sampling) or a ``UNet2DConditionOutput`` (trl's training)."""

    def __init__(self, unet) -> None:
        self.total = 0
        self.handle = unet.register_forward_hook(self.hook)

    def hook(self, module, inputs, output) -> None:
        import torch

        if not inputs or not torch.is_tensor(inputs[0]):
            return
        out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
        grad = torch.is_tensor(out) and out.requires_grad
        self.total += int(inputs[0].shape[0]) * (3 if grad else 1)


def run_trl(args: argparse.Namespace) -> dict:
    import random
    import warnings

    threads = one_thread()
    import torch
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    started = time.perf_counter()
    scratch = Path(args.run_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    lora = args.lora_rank > 0
    if lora and args.lora_rank != 4:
        raise SystemExit(
            "trl's DefaultDDPOStableDiffusionPipeline has LoRA rank 4 built in: --lora-rank 4 or 0"
        )
    guided = args.guidance_scale > 1
    config = DDPOConfig(
        num_epochs=args.epochs,
        seed=args.seed,
        log_with=None,
        logdir=str(scratch / "logs"),
        project_kwargs={"project_dir": str(scratch), "logging_dir": str(scratch / "logs")},
        save_freq=10**9,  # no checkpoints inside the timed epochs (ours saves after its last epoch, untimed)
        mixed_precision="no",
        allow_tf32=False,
        sample_num_steps=args.steps,
        sample_eta=args.eta,
        sample_guidance_scale=args.guidance_scale,
        sample_batch_size=args.sample_batch_size,
        sample_num_batches_per_epoch=args.sample_batches,
        train_batch_size=args.train_batch_size,
        train_gradient_accumulation_steps=1,
        train_learning_rate=args.learning_rate,
        train_adam_beta1=0.9,
        train_adam_beta2=0.999,
        train_adam_weight_decay=args.weight_decay,
        train_adam_epsilon=1e-8,
        train_max_grad_norm=args.max_grad_norm,
        train_num_inner_epochs=1,
        train_cfg=guided,
        train_adv_clip_max=args.adv_clip_max,
        train_clip_range=args.clip_range,
        train_timestep_fraction=1.0,
        per_prompt_stat_tracking=True,
        per_prompt_stat_tracking_buffer_size=args.stat_buffer_size,
        per_prompt_stat_tracking_min_count=args.stat_min_count,
        async_reward_computation=False,
    )
    rewards_seen: list[torch.Tensor] = []
    reward_seconds = [0.0]

    def reward_fn(images, prompts, metadata):
        t0 = time.perf_counter()
        reward = redness(images).mean(dim=(1, 2))  # (B,) the map's mean, as ours aggregates it
        reward_seconds[0] += time.perf_counter() - t0
        rewards_seen.append(reward.detach().cpu())
        return reward, {}

    def prompt_fn():
        return random.choice(PROMPTS), {}

    from accelerate import PartialState

    PartialState()  # trl's pipeline logs through accelerate's logger (no LoRA file in the folder): needs a state
    pipeline = DefaultDDPOStableDiffusionPipeline(args.model, use_lora=lora)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        trainer = DDPOTrainer(config, reward_fn, prompt_fn, pipeline)
    trainer.sd_pipeline.set_progress_bar_config(disable=True)  # as ours runs (progress=False)
    counter = UNetPassCounter(trainer.sd_pipeline.unet)
    sampling = [0.0]
    generate = trainer._generate_samples

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = generate(*a, **k)
        sampling[0] += time.perf_counter() - t0
        return out

    trainer._generate_samples = timed_generate
    trainable = sum(p.numel() for p in trainer.sd_pipeline.unet.parameters() if p.requires_grad)
    setup_s = time.perf_counter() - started
    epochs = []
    global_step = 0
    for epoch in range(args.epochs):
        rewards_seen.clear()
        sampling[0] = reward_seconds[0] = 0.0
        t0 = time.perf_counter()
        global_step = trainer.step(epoch, global_step)
        seconds = time.perf_counter() - t0
        rewards = torch.cat(rewards_seen)
        epochs.append(
            {
                "epoch": epoch + 1,
                "seconds": seconds,
                "sample_seconds": sampling[0],
                "train_seconds": seconds - sampling[0],
                "reward_seconds": reward_seconds[0],
                "reward_mean": rewards.mean().item(),
                "reward_std": rewards.std().item(),
                "images": len(rewards),
                "passes": counter.total,
                "optimizer_steps": global_step,
            }
        )
        print(
            f"trl epoch {epoch + 1}: {seconds:.2f} s, reward {epochs[-1]['reward_mean']:.4f}", file=sys.stderr
        )
    return {
        "side": "trl",
        "trainer": "trl.DDPOTrainer",
        "versions": versions(),
        **threads,
        "setup_seconds": setup_s,
        "trainable_parameters": trainable,
        "lora": lora,
        "epochs": epochs,
    }


# -- our side (runs under the project's venv) ------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> dict:
    threads = one_thread()
    import agents.runs
    from agents.config import TrainConfig
    from agents.runs import train

    trainers = []
    run_epochs = agents.runs.run_epochs

    def keep_trainer(config, trainer):  # to read the trainer's parameter count; train() runs as it is
        trainers.append(trainer)
        return run_epochs(config, trainer)

    agents.runs.run_epochs = keep_trainer

    started = time.perf_counter()
    config = TrainConfig.of(
        algo="ddpo",
        estimator="is",
        model=args.model,
        prompts=PROMPTS,
        reward=("benchmarks.performance.trl_compare:redness",),
        num_epochs=args.epochs,
        sample_batch_size=args.sample_batch_size,
        sample_batches_per_epoch=args.sample_batches,
        train_batch_size=args.train_batch_size,
        inner_epochs=1,
        timestep_fraction=1.0,
        num_inference_steps=args.steps,
        eta=args.eta,
        guidance_scale=args.guidance_scale,
        lora_rank=args.lora_rank,
        learning_rate=args.learning_rate,
        adam_beta1=0.9,
        adam_beta2=0.999,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        clip_range=args.clip_range,
        adv_clip_max=args.adv_clip_max,
        stat_buffer_size=args.stat_buffer_size,
        stat_min_count=args.stat_min_count,
        mixed_precision="no",
        device="cpu",
        seed=args.seed,
        threads=1,
        out=args.run_dir,
        overwrite=True,
        save_every=0,
        image_every=0,
        eval_every=0,
        export=False,
        tensorboard=False,
        progress=False,
    )
    if args.ours_option:  # e.g. step_window=4: the issue-35 options on our side only
        from agents.config import key_values

        config = config.replace(**key_values(args.ours_option, "--ours-option"))
    history = train(config)
    keep = (
        "seconds",
        "sample_seconds",
        "train_seconds",
        "reward_seconds",
        "reward_mean",
        "reward_std",
        "passes",
    )
    epochs = [{"epoch": int(m["epoch"]), **{k: float(m[k]) for k in keep}, "images": args.images_per_epoch}
              for m in history]  # fmt: skip
    for e in epochs:
        e["passes"] = int(e["passes"])
    import csv

    logged = list(csv.DictReader(open(Path(args.run_dir) / "metrics.csv")))
    return {
        "side": "ours",
        "trainer": "agents.runs.train (algo=ddpo, estimator=is)",
        "versions": versions(),
        **threads,
        "wall_seconds_including_setup": time.perf_counter() - started,
        "trainable_parameters": sum(p.numel() for p in trainers[0].policy.parameters() if p.requires_grad),
        "lora": args.lora_rank > 0,
        "metrics_csv_passes": [int(float(r["passes"])) for r in logged],
        "epochs": epochs,
    }


# -- the driver (runs under the project's venv) --------------------------------------------------------------


SIDE_ARGS = (
    "epochs", "seed", "steps", "eta", "guidance_scale", "sample_batch_size", "sample_batches",
    "train_batch_size", "lora_rank", "learning_rate", "weight_decay", "max_grad_norm", "clip_range",
    "adv_clip_max", "stat_buffer_size", "stat_min_count",
)  # fmt: skip


def run_side(side: str, python: str, args: argparse.Namespace, model: Path, scratch: Path) -> dict:
    """Runs one side in a fresh process (1 thread, offline); returns its JSON plus the process's wall time."""
    run_dir = scratch / f"run-{side.replace('+', '-')}"
    cmd = [
        python,
        "-m",
        "benchmarks.performance.trl_compare",
        "--side",
        "ours" if side == "ours+options" else side,
        "--model",
        str(model),
        "--run-dir",
        str(run_dir),
    ]
    for name in SIDE_ARGS:
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if side == "ours+options":
        for item in args.ours_option:
            cmd += ["--ours-option", item]
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(REPO)}
    print(f"[{side}] {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-8000:])
        raise SystemExit(f"the {side} side failed (exit {done.returncode})")
    (scratch / f"{side}.stderr.txt").write_text(done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result["process_wall_seconds"] = wall
    result["command"] = shlex.join(cmd)
    return result


def git_state() -> dict[str, object]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = [line for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD"), "dirty_files": len(dirty)}


def settings(args: argparse.Namespace) -> dict:
    return {
        "model": "pxpo_gym.tiny_models.save_tiny_text_to_image_pipeline (seed "
        f"{args.seed}): UNet2DConditionModel 4x8x8 latents, block_out (8, 16), cross-attn 32; "
        "AutoencoderKL 2x (16x16 images); 2-layer CLIP text encoder (hidden 32); DDIM, SD 1.x betas",
        "prompts": list(PROMPTS),
        "reward": "redness: per-pixel 1 - ||rgb - red|| / sqrt(3), image reward = its mean (benchmarks.performance.trl_compare.redness)",
        "images_per_epoch": args.images_per_epoch,
        **{name: getattr(args, name) for name in SIDE_ARGS},
        "lora": f"rank {args.lora_rank} on to_q/to_k/to_v/to_out.0 (alpha = rank)"
        if args.lora_rank
        else "full UNet",
        "train_cfg": args.guidance_scale > 1,
        "ours_options": list(args.ours_option),
        "inner_epochs": 1,
        "timestep_fraction": 1.0,
        "mixed_precision": "no (float32)",
        "threads": 1,
        "env": THREAD_ENV,
    }


def write_markdown(result: dict, path: Path) -> None:
    s = result["settings"]
    sides = [("ours", result["ours"])]
    if result.get("ours_options"):
        sides.append((f"ours + {' '.join(s['ours_options'])}", result["ours_options"]))
    trl = result["trl"]["summary"]

    def fmt(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    def ratio(a, b):
        return None if a is None or not b else a / b

    head = " | ".join(name for name, _ in sides)
    lines = [
        f"# Our DDPO vs trl {result['trl']['versions'].get('trl')} DDPOTrainer (tiny SD, CPU, 1 thread)",
        "",
        f"Note: {result['note']}" if result.get("note") else None,
        f"{s['epochs']} epochs x {s['images_per_epoch']} images ({s['sample_batch_size']} x {s['sample_batches']}), "
        f"minibatch {s['train_batch_size']}, {s['steps']} DDIM steps, eta {s['eta']}, guidance {s['guidance_scale']} "
        f"(CFG in training: {s['train_cfg']}), {s['lora']}, lr {s['learning_rate']}, clip {s['clip_range']}. "
        f"Machine: {result['machine']['cpu']}; commit {result['git']['commit'][:10]}"
        f"{' (+' + str(result['git']['dirty_files']) + ' uncommitted files)' if result['git']['dirty_files'] else ''}. "
        "Sides run one after the other, never at once. Ratios: each of ours over trl.",
        "",
        f"| | {head} | trl | {' | '.join(f'{name} / trl' for name, _ in sides)} |",
        "|---|" + "---|" * (2 * len(sides) + 1),
    ]
    rows = [
        ("images/s, end to end (all epochs)", "images_per_second", ".3f"),
        ("images/s, epochs after the first", "warm_images_per_second", ".3f"),
        ("seconds per epoch (lower: faster)", "seconds_per_epoch", ".2f"),
        ("network passes per image", "passes_per_image", ".1f"),
        ("passes to trl's gain (3-epoch smoothed)", "passes_to_trl_gain", ".0f"),
    ]
    for title, key, spec in rows:
        mine = [side["summary"].get(key) for _, side in sides]
        cells = " | ".join(fmt(v, spec) for v in mine)
        ratios = " | ".join(fmt(ratio(v, trl.get(key)), ".2f") for v in mine)
        lines.append(f"| {title} | {cells} | {fmt(trl.get(key), spec)} | {ratios} |")
    firsts = " | ".join(
        f"{fmt(side['summary']['reward_first'], '.4f')} -> {fmt(side['summary']['reward_last'], '.4f')}"
        for _, side in sides
    )
    lines.append(
        f"| reward first -> last epoch | {firsts} | {fmt(trl['reward_first'], '.4f')} -> "
        f"{fmt(trl['reward_last'], '.4f')} |" + " |" * len(sides)
    )
    lines += [
        "",
        f"trl's gain: its 3-epoch smoothed reward from the first epoch to the last, to {result['trl_gain_target']:.4f}.",
        "",
        "Per epoch (seconds: sampling + training; reward mean; cumulative passes):",
        "",
        "| epoch | "
        + " | ".join(f"{n} s | {n} reward | {n} passes" for n in [*(n for n, _ in sides), "trl"])
        + " |",
        "|---|" + "---|" * (3 * (len(sides) + 1)),
    ]
    every = [side["epochs"] for _, side in sides] + [result["trl"]["epochs"]]
    for row in zip(*every):
        cells = " | ".join(f"{e['seconds']:.2f} | {e['reward_mean']:.4f} | {e['passes']}" for e in row)
        lines.append(f"| {row[0]['epoch']} | {cells} |")
    lines += ["", "Differences the comparison cannot remove:", ""]
    lines += [f"- {d}" for d in result["differences"]]
    lines += ["", f"Command: `{result['command']}`", ""]
    path.write_text("\n".join(line for line in lines if line is not None) + "\n")  # None: no note


DIFFERENCES = [
    "RNG streams differ: trl draws prompts with Python's random and noise with torch's global generator; ours "
    "draws contexts and noise in its env from the run seed. Same seed, different images: reward curves are "
    "comparable only in distribution.",
    "LoRA initialisation: trl's pipeline builds LoRA with init_lora_weights='gaussian', ours with peft's default "
    "(Kaiming A); B = 0 in both, so the first epoch's policy is the pretrained model on both sides.",
    "Per-prompt advantage statistics: trl keys its buffer by the prompt decoded back from token ids and "
    "normalises with numpy (std + 1e-6); ours keys by context id (agents.advantages.ContextStats).",
    "trl calls optimizer.step()/zero_grad() at every timestep inside accelerate's accumulate (no-ops until the "
    "minibatch's last timestep) and scales the loss by 1/steps through accelerate; ours accumulates and steps "
    "once per minibatch. Same maths, different overhead.",
    "trl recomputes the prompt embeddings with the text encoder every sampling batch and decodes with the "
    "pipeline's image processor; ours encodes each prompt once. Neither is counted as a network pass "
    "(passes count the UNet only, on both sides).",
    "trl's DDIM step and log-density (trl.models.modeling_sd_base.scheduler_step, eta=1, mean over elements) "
    "and ours (pxpo_gym.ddim) are separate implementations of the same transition.",
    "Epoch timing: trl's is DDPOTrainer.step (sampling, rewards, advantages, training); ours is "
    "Trainer.train_epoch as logged in metrics.csv ('seconds'). Our run's checkpoint after the last epoch and "
    "both sides' setup are outside the epochs (process wall times are recorded).",
]


def drive(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not Path(args.trl_python).exists():
        raise SystemExit(
            f"--trl-python {args.trl_python} not found: run bash benchmarks/performance/trl_venv.sh first"
        )
    from pxpo_gym.tiny_models import save_tiny_text_to_image_pipeline

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="trl_compare_") as tmp:
        scratch = Path(tmp)
        model = save_tiny_text_to_image_pipeline(scratch / "tiny-sd", seed=args.seed)
        order = ("trl", "ours") if args.trl_first else ("ours", "trl")
        if args.ours_option:
            order = (*order, "ours+options")
        for side in order:  # one after the other, never at once
            python = args.trl_python if side == "trl" else sys.executable
            results[side] = run_side(side, python, args, model, scratch)
            results[side]["summary"] = summarize(results[side]["epochs"], args.images_per_epoch)
            results[side]["python"] = python
        for side in order:
            text = (scratch / f"{side}.stderr.txt").read_text()
            (out / f"{side}.stderr.txt").write_text(text[-20000:])
    ours, trl = results["ours"]["summary"], results["trl"]["summary"]
    # trl's gain over its run (3-epoch smoothed last minus first epoch): the passes each side took to it
    trl_curve = smoothed(trl["reward_curve"])
    trl_target = trl_curve[0] + (trl_curve[-1] - trl_curve[0])
    for side in results:
        results[side]["summary"]["passes_to_trl_gain"] = passes_to(results[side]["epochs"], trl_target)

    def ratio(key, mine=None):
        a, b = (mine or ours).get(key), trl.get(key)
        return a / b if a is not None and b else None

    result = {
        "benchmark": "benchmarks.performance.trl_compare",
        "commit": git_state()["commit"][:7],
        "command": shlex.join(["python", "-m", "benchmarks.performance.trl_compare", *sys.argv[1:]]),
        "note": args.note,
        "git": git_state(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "cores": os.cpu_count(),
        },  # fmt: skip
        "settings": settings(args),
        "ours": results["ours"],
        "ours_options": results.get("ours+options"),
        "trl": results["trl"],
        "ratio_ours_over_trl": {
            "images_per_second": ratio("images_per_second"),
            "warm_images_per_second": ratio("warm_images_per_second"),
            "seconds_per_epoch": ratio("seconds_per_epoch"),
            "passes_per_image": ratio("passes_per_image"),
        },
        "ratio_ours_options_over_trl": {
            key: ratio(key, results["ours+options"]["summary"])
            for key in (
                "images_per_second",
                "warm_images_per_second",
                "seconds_per_epoch",
                "passes_per_image",
            )
        }
        if "ours+options" in results
        else None,
        "trl_gain_target": trl_target,
        "differences": DIFFERENCES,
    }
    cpu = _cpu_name()
    if cpu:
        result["machine"]["cpu"] = cpu
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, out / "result.md")
    print((out / "result.md").read_text())
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.performance.trl_compare", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--trl-python", default="/tmp/venv-trl/bin/python", help="python of the trl venv")
    p.add_argument(
        "--out", default="outputs/benchmarks/trl_compare", help="folder for result.json / result.md"
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--guidance-scale", type=float, default=5.0, help="CFG in sampling and training (1: none)")
    p.add_argument("--sample-batch-size", type=int, default=8, help="images per sampling batch")
    p.add_argument("--sample-batches", type=int, default=2, help="sampling batches per epoch")
    p.add_argument("--train-batch-size", type=int, default=8, help="images per optimizer step")
    p.add_argument("--lora-rank", type=int, default=4, help="4 (trl's built-in LoRA) or 0 (full UNet)")
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument(
        "--clip-range", type=float, default=1e-4, help="PPO clip range (trl's default, both sides)"
    )
    p.add_argument("--adv-clip-max", type=float, default=5.0)
    p.add_argument("--stat-buffer-size", type=int, default=32)
    p.add_argument("--stat-min-count", type=int, default=16)
    p.add_argument("--trl-first", action="store_true", help="run trl before ours (default: ours first)")
    p.add_argument(
        "--ours-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field for a third run, ours with it (e.g. step_window=4); repeat for several",
    )
    p.add_argument("--note", default="", help="a line written at the top of result.md (e.g. 'smoke run')")
    p.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.images_per_epoch = args.sample_batch_size * args.sample_batches
    if args.sample_batch_size % args.train_batch_size:
        p.error("--sample-batch-size must be a multiple of --train-batch-size (trl's requirement)")
    if args.lora_rank not in (0, 4):
        p.error("--lora-rank: 4 (trl's pipeline builds rank 4) or 0 (full fine-tuning)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.side:
        result = run_trl(args) if args.side == "trl" else run_ours(args)
        print(json.dumps(result))
        return
    drive(args)


if __name__ == "__main__":
    main()
