"""Score any model on held-out seeds, with an image grid of its reward maps.

    python -m agents.evaluate --model runs/pxpo-is-color-seed0/model --reward color
    python -m agents.evaluate --model default --reward color:0.5 --reward segmentation:0.5
    python -m agents.evaluate --model runs/my-sd-run/model --prompts "a red car" --reward color

The model is anything the env loads: the embedded default, a diffusers folder, a
hub id, or a training run's export (``RUN/model``, ``agents.export``). Its images
come from the held-out seeds training's evaluations use (``agents.heldout``:
env slot i seeded 1,000,003 + seed + i, contexts cycled over the run's own, else the model's), so
the numbers are deterministic on CPU and comparable with a run's ``eval_reward``.
Against a reference model (by default the model an export was fine-tuned from)
the same noise also gives the fidelity columns: RMS distance to the reference's
images and, for the shapes model, the segmentation network's shape match.

An export of a run that pinned pixels (PXPO's ``pinned_pixels.safetensors``,
``agents.export``) is sampled with the pin applied against its reference, as the
run's own evaluations were (``--pinned-pixels off``: the weights alone).

Writes OUT/evaluation.json and OUT/grid.png (images beside their reward
heatmaps); OUT defaults to RUN/evaluation for an export in RUN/model, else
evaluations/NAME.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
import tyro

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.cli import parse
from pxpo_gym.deprecation import warn_renamed
from pxpo_gym.files import write_atomic
from pxpo_gym.guidance import guided
from pxpo_gym.loading import load_model, read_metadata
from pxpo_gym.models import METADATA_FILE
from pxpo_gym.pinning import pinned_policy, read_pinned_pixels
from pxpo_gym.rewards import refuse_code_from_file
from pxpo_gym.vector_env import run_sampler
from pxpo_gym.viz import reward_caption, save_reward_grid

from .config import context_spec, flat_view, reward_tuple
from .heldout import EVAL_SEED_OFFSET, Evaluator


@dataclass(frozen=True)
class EvaluateConfig:
    """Score a model's held-out images under a reward."""

    model: str = "default"
    """Embedded model name, diffusers folder (e.g. a run's RUN/model export), or hub id."""
    reward: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Reward name or 'package.module:function'; several with weights: --reward color:0.5 --reward
    segmentation:0.5. Empty: the reward the run was trained with (an export records it), else 'color'."""
    reward_kwargs: str = ""
    """JSON object of reward options (for several rewards keyed by name); empty: the run's, else none."""
    reference: str = ""
    """Model whose images from the same noise the fidelity columns compare against; empty: the model an
    export was fine-tuned from (none for other models); 'none': no fidelity columns."""
    images: int = 32
    """Held-out images."""
    seed: int = 0
    """The held-out seeds are 1,000,003 + seed + i (as a training run with this seed evaluates on)."""
    contexts: tuple[str, ...] = ()
    """Context ids or names to spread the images over (empty: the run's own, as it evaluated; else all of the
    model's)."""
    prompts: tuple[str, ...] = ()
    """Latent text-to-image models: the prompts (a LoRA export brings its own)."""
    resolution: int | None = None
    """Latent models: image size (None: the run's own, else the model's)."""
    num_inference_steps: int | None = None
    """Sampler steps (None: the run's own, as it trained; else 20)."""
    eta: float | None = None
    """DDIM stochasticity in (0, 1]; DDIM-family models only (None: the run's own, as it trained; else 1)."""
    noise_level: float | None = None
    """Flow-matching models: the sampler's noise level (None: the run's own, else Flow-GRPO's 0.7)."""
    transition: str = ""
    """Flow-matching models: 'sde' or 'cps' (empty: the run's own, else 'sde')."""
    guidance_scale: float | None = None
    """Classifier-free guidance of the model and the reference alike (None: the run's own, as it trained; else
    1, none)."""
    device: str = "cpu"
    """torch device."""
    threads: int | None = None
    """torch CPU threads; None leaves torch's default."""
    out: str = ""
    """Output folder; RUN/evaluation for an export in RUN/model, else evaluations/NAME."""
    trust_code: bool = False
    """Run a reward the export names by import path ('package.module:function'); without it only built-in
    rewards are read from a model folder (a folder is something people download)."""
    pinned_pixels: Literal["auto", "off"] = "auto"
    """'auto': an export's pinned pixels (pinned_pixels.safetensors) are applied against the reference, as in
    training; 'off': the exported weights alone."""


def resolve(cfg: EvaluateConfig) -> tuple[tuple[str, ...], dict[str, Any], str | None, Path]:
    """(rewards, reward options, reference model or None, output folder) with the defaults filled in."""
    meta = read_metadata(cfg.model)
    saved = meta.get("run", {}).get("config", {})
    run = flat_view(saved) if isinstance(saved, dict) else {}
    if not cfg.reward and not cfg.trust_code and run.get("reward"):
        refuse_code_from_file(run["reward"], f"model folder {cfg.model!r} ({METADATA_FILE})")
    reward = reward_tuple(cfg.reward or run.get("reward") or ())
    kwargs_text = cfg.reward_kwargs or (run.get("reward_kwargs", "{}") if not cfg.reward else "{}")
    try:
        reward_kwargs = json.loads(kwargs_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"reward_kwargs must be a JSON object, got {kwargs_text!r}: {err}") from err
    if not isinstance(reward_kwargs, dict):
        raise ValueError(f"reward_kwargs must be a JSON object, got {kwargs_text!r}")
    reference = cfg.reference or meta.get("fine_tuned_from") or meta.get("base_model")
    if reference == "none":
        reference = None
    if cfg.out:
        out = Path(cfg.out)
    elif meta and Path(cfg.model).name == "model":
        out = Path(cfg.model).parent / "evaluation"
    else:
        out = Path("evaluations") / Path(cfg.model.rstrip("/")).name
    return reward, reward_kwargs, reference, out


def evaluate(cfg: EvaluateConfig, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Scores ``cfg.model`` on its held-out seeds; writes OUT/evaluation.json and OUT/grid.png.

    Args:
        cfg: what to score, and how.
        say: called with a line before each phase that can take seconds (the CLI prints them); None: silent.

    Raises:
        ValueError: a bad option, a model or reward that cannot load, or a reference whose
            sample shape, contexts or noise schedule differ from the model's.
    """
    if cfg.images < 1:
        raise ValueError(f"images must be >= 1, got images={cfg.images}")
    if cfg.threads is not None:
        if isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int) or cfg.threads < 1:
            raise ValueError(f"threads must be None or an int >= 1, got threads={cfg.threads!r}")
        torch.set_num_threads(cfg.threads)
    say = say or (lambda line: None)
    reward, reward_kwargs, reference, out = resolve(cfg)
    meta = read_metadata(cfg.model)
    saved = meta.get("run", {}).get("config", {})
    run = flat_view(saved) if isinstance(saved, dict) else {}
    prompts = list(cfg.prompts) or meta.get("prompts")
    # the run's own contexts and resolution where none is given: the held-out images its evaluations drew
    contexts = tuple(cfg.contexts) or tuple(str(c) for c in run.get("contexts") or ())
    resolution = cfg.resolution if cfg.resolution is not None else run.get("resolution")
    common = dict(
        num_envs=cfg.images,
        reward=reward[0] if len(reward) == 1 else list(reward),
        reward_kwargs=reward_kwargs,
        # the env is built on the reference: the export's own sampler is resolved here
        **run_sampler(run, cfg.num_inference_steps, cfg.eta, cfg.noise_level, cfg.transition or None),
        device=cfg.device,
        context=context_spec(contexts),
        prompts=prompts,
        resolution=resolution,
        # the env is built on the reference: the export's guidance is given here (both models are guided alike)
        guidance_scale=run.get("guidance_scale", 1.0) if cfg.guidance_scale is None else cfg.guidance_scale,
    )
    which = f"the reference {reference!r}" if reference is not None else repr(cfg.model)
    say(f"loading {which} and the reward {' + '.join(reward)} ...")
    # the pin is applied below against this env's model (the reference), not by the env
    envs = gym.make_vec("DiffusionDenoise-v0", model=reference or cfg.model, pinned_pixels="off", **common)
    core = envs.unwrapped
    scored = None  # None: the env's own model is the one scored
    if reference is not None:
        say(f"loading the model {cfg.model!r} ...")
        loaded = load_model(cfg.model, cfg.device, prompts=prompts, resolution=resolution)
        check_comparable(cfg.model, loaded, reference, core.loaded)
        if core.guidance_scale != 1 and loaded.null_context != core.loaded.null_context:
            raise ValueError(
                f"guidance_scale={core.guidance_scale} guides model={cfg.model!r} and reference={reference!r} "
                f"alike, but their null contexts differ ({loaded.null_context} vs {core.loaded.null_context})"
            )
        scored = loaded.noise_model.requires_grad_(False)
    pin = read_pinned_pixels(cfg.model, core.loaded.num_contexts, tuple(core.loaded.sample_shape[-2:]))
    if pin is not None and (scored is None or cfg.pinned_pixels == "off"):
        pin = None  # the weights alone (no reference to pin to, or asked for)
    say(
        f"sampling the {'reference' if reference is not None else 'model'}'s {cfg.images} held-out images ..."
    )
    evaluator = Evaluator(envs, cfg.seed, core.context_choices)
    if reference is not None:
        say(f"sampling the model's {cfg.images} held-out images from the same noise ...")
    null = core.loaded.null_context
    if pin is not None:
        mode, pinned = pin
        policy = pinned_policy(
            mode,
            guided(scored, core.guidance_scale, null),
            guided(core.model, core.guidance_scale, null),
            pinned.to(core.device),
        )
        episode = evaluator.episode(policy)
    else:
        episode = evaluator.episode(
            guided(scored, core.guidance_scale, null) if scored is not None else core.policy()
        )
    metrics = evaluator.score(episode.images, episode.rewards)
    result: dict[str, Any] = {
        "model": cfg.model,
        "reward": list(reward),
        "reward_kwargs": reward_kwargs,
        "images": cfg.images,
        "seeds": [EVAL_SEED_OFFSET + cfg.seed, EVAL_SEED_OFFSET + cfg.seed + cfg.images - 1],
        "num_inference_steps": core.num_steps,
        **core.sampler.settings(core.schedule),  # eta, sampler, noise_level
        "guidance_scale": core.guidance_scale,
        "contexts": [core.loaded.context_names[int(c)] for c in core.context_choices.tolist()],
        "reward_mean": metrics["eval_reward"],
        "reward_std": float(episode.rewards.std()) if cfg.images > 1 else 0.0,
        "components": {name: float(value.mean()) for name, value in episode.components.items()},
        "pinned_pixels": pin[0] if pin is not None else "none",
    }
    if reference is not None:
        result.update(
            reference=reference,
            reference_reward_mean=evaluator.reference_metrics["eval_reward"],
            fidelity_distance=metrics["fidelity_distance"],
            fidelity_shape=metrics["fidelity_shape"],
            reference_fidelity_shape=evaluator.reference_metrics["fidelity_shape"],
        )
    else:
        result["fidelity_shape"] = metrics["fidelity_shape"]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "evaluation.json", json.dumps(result, indent=1) + "\n")
    names = core.loaded.context_names
    say(f"drawing {out / 'grid.png'} ...")
    save_reward_grid(
        episode.images[:16].cpu(),
        episode.image_reward_maps[:16].cpu(),
        out / "grid.png",
        titles=[str(names[c])[:24] for c in episode.contexts[:16].tolist()],
        caption=f"{cfg.model}, held-out seeds; "
        + (reward_caption(reward[0], reward_kwargs) if len(reward) == 1 else f"reward {' + '.join(reward)}"),
    )
    return result


def check_comparable(model: str, loaded: Any, reference: str, ref_loaded: Any) -> None:
    """Refuses a reference that does not sample the same space with the same schedule."""
    pairs = [
        ("sample shape", loaded.sample_shape, ref_loaded.sample_shape),
        ("contexts", tuple(loaded.context_names), tuple(ref_loaded.context_names)),
    ]
    for what, mine, theirs in pairs:
        if mine != theirs:
            raise ValueError(
                f"reference={reference!r} cannot be compared with model={model!r}: {what} {theirs} vs {mine} "
                "(pass --reference none, or a reference of the same kind)"
            )
    mine, theirs = _noise_table(loaded.scheduler), _noise_table(ref_loaded.scheduler)
    if type(loaded.scheduler) is not type(ref_loaded.scheduler) or not (
        mine.shape == theirs.shape and torch.allclose(mine, theirs)
    ):
        raise ValueError(
            f"reference={reference!r} has another noise schedule than model={model!r}: the same noise "
            "would not give comparable images (pass --reference none)"
        )


def _noise_table(scheduler: Any) -> torch.Tensor:
    """A scheduler's training noise levels: DDPM's cumulative alphas, or a flow scheduler's (shifted) sigmas."""
    return scheduler.alphas_cumprod if hasattr(scheduler, "alphas_cumprod") else scheduler.sigmas


OLD_FLAGS = {"--held-pixels": "--pinned-pixels"}
"""Flags renamed (old -> new): the old one still works, with a DeprecationWarning."""


def renamed_flags(args: list[str]) -> list[str]:
    """The command line with every old flag (``OLD_FLAGS``, also as ``--flag=value``) under its new name,
    each with a DeprecationWarning."""
    out = []
    for arg in args:
        flag, sep, value = arg.partition("=")
        if flag in OLD_FLAGS:
            warn_renamed(flag, OLD_FLAGS[flag])
            arg = OLD_FLAGS[flag] + sep + value
        out.append(arg)
    return out


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("default", DeprecationWarning)  # shown, also when not run as __main__
        args = renamed_flags(sys.argv[1:])
    cfg = parse(EvaluateConfig, args)
    result = evaluate(cfg, say=lambda line: print(f"agents.evaluate: {line}", flush=True))
    _, _, _, out = resolve(cfg)
    line = f"{cfg.model}: reward {result['reward_mean']:.4f} +- {result['reward_std']:.4f} over {cfg.images} held-out images"
    for name, value in result["components"].items():
        line += f"; {name} {value:.4f}"
    if result["pinned_pixels"] != "none":
        line += f"; the run's pin applied ({result['pinned_pixels']})"
    if "reference" in result:
        line += (
            f"\nreference {result['reference']}: reward {result['reference_reward_mean']:.4f}; "
            f"fidelity: RMS distance {result['fidelity_distance']:.4f}, shape match {result['fidelity_shape']:.3f} "
            f"(reference {result['reference_fidelity_shape']:.3f})"
        )
    print(line)
    print(f"wrote {out / 'evaluation.json'} and {out / 'grid.png'}")


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(main, "agents.evaluate")
