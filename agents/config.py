"""``TrainConfig``: the one config a user sets for a training run (from Python, or the shell through
``agents.train``), in sections that each check themselves:

- ``env`` (``EnvConfig``): the model, the reward and the sampler the env runs; ``env_kwargs`` is the one
  builder of the env's keywords.
- ``algorithm``: the algorithm's own config dataclass (``DDPOConfig``, ``PXPOConfig``, ``OracleConfig``), or
  ``PluginAlgorithm`` for a class given by import path. On the command line it is a subcommand:
  ``python -m agents.train ddpo --estimator sf``.
- ``sampling`` (``SamplingConfig``): images per epoch and which steps are trained and how they are sampled.
- ``optimiser`` (``OptimiserConfig``): the update: batches, AdamW, the steps' loss weights, LoRA, EMA.
- ``run`` (``RunConfig``): epochs, seed, device, the run folder, checkpoints, evaluation, export.

Every option has one name across the sections (the command line's flags are those names), so a flat
``key=value`` set of options maps to one config: ``TrainConfig.of(algo="ddpo", reward="color",
num_epochs=2)``, ``config.replace(learning_rate=1e-3)``. A config saved before the sections existed (a flat
dict) is read by the same map (``TrainConfig.from_dict``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import gymnasium as gym
import torch
import tyro

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.cli import Checked, parsing
from pxpo_gym.flow import DEFAULT_NOISE_LEVEL
from pxpo_gym.guidance import check_guidance
from pxpo_gym.rewards import split_weight
from pxpo_gym.wrappers import generic_wrappers

from .algorithms import BUILTIN, check_name, label, resolve_algorithm
from .algorithms.ddpo import DDPOConfig
from .algorithms.oracle import OracleConfig
from .algorithms.pxpo import PXPOConfig
from .steps import DEFAULT_STEP_THRESHOLD, DEFAULT_STEP_WEIGHTING, STEP_WEIGHTINGS, WINDOW_PLACEMENTS

DEFAULT_LATENT_LORA_RANK = 4
"""LoRA rank used on latent text-to-image models unless ``lora_rank`` says otherwise (DDPO's default)."""

WINDOW_OUTSIDE = ("stochastic", "deterministic")
WINDOW_NONE: dict[str, Any] = {
    "step_window": 0,
    "window_placement": "sliding",
    "window_outside": "stochastic",
}
"""No window: every step trained and sampled stochastically."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_ints(section: Any, names: tuple[str, ...], low: int, optional: bool = False) -> None:
    for name in names:
        value = getattr(section, name)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        _need(
            ok or (optional and value is None),
            f"{name} must be {'None or ' if optional else ''}an int >= {low}, got {name}={value!r}",
        )


def context_spec(contexts: Sequence[str]) -> list[int | str] | None:
    """Context ids or names as written on a command line -> the env's ``context`` argument (ids as ints;
    empty: None, all of the model's)."""
    return [int(c) if c.lstrip("-").isdigit() else c for c in contexts] or None


@dataclass(frozen=True)
class EnvConfig(Checked):
    """The env a run trains on: its model, reward and sampler."""

    model: str = "default"
    """Embedded model name, local diffusers folder, or hub id."""
    reward: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Built-in reward name (pxpo_gym.rewards.REWARDS) or 'package.module:function'; several with weights make
    their weighted sum (each component's mean is logged): --reward color:0.5 --reward segmentation:0.5.
    Empty: 'color'. From Python a plain string is accepted."""
    reward_kwargs: str = "{}"
    """JSON object of reward options, e.g. '{"target": [0, 0, 1]}'; for several rewards keyed by name,
    e.g. '{"color": {"target": "blue"}}'."""
    prompts: tuple[str, ...] = ()
    """Latent text-to-image models: the prompts (context k is prompt k). Required for them, refused otherwise."""
    contexts: tuple[str, ...] = ()
    """Context ids or names to train on (empty: all of the model's contexts)."""
    resolution: int | None = None
    """Latent text-to-image models: image size (None: the model's own, e.g. 512 for SD 1.5)."""
    decode_chunk_size: int | None = None
    """Latent models: samples per VAE decode call at the terminal step (None: the whole batch at once)."""
    model_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Precision of the env's frozen model and VAE (half precision halves their memory on CUDA)."""
    num_inference_steps: int = 20
    """Denoising steps per image. Reference: 50; 20 keeps CPU runs short."""
    eta: float = 1.0
    """DDIM stochasticity in (0, 1] (reference: 1.0); DDIM-family models only."""
    noise_level: float | None = None
    """Flow-matching models only: the sampler's noise level (None: Flow-GRPO's 0.7; pxpo_gym.flow)."""
    transition: Literal["sde", "cps"] = "sde"
    """Flow-matching models only: Flow-GRPO's SDE step or coefficient-preserving sampling (pxpo_gym.flow)."""
    log_density: Literal["gaussian", "public"] = "gaussian"
    """How a step's log-likelihood is computed: the exact Gaussian, or with transition 'cps' the public CPS
    code's unnormalised -(x - mean)^2, for parity with runs made with it (pxpo_gym.transition.LOG_DENSITIES)."""

    def check(self) -> None:
        reward = (self.reward,) if isinstance(self.reward, str) else tuple(self.reward)
        object.__setattr__(self, "reward", reward)  # empty: 'color', filled in by TrainConfig
        for name in ("prompts", "contexts"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        for spec in self.reward:
            _need(
                isinstance(spec, str) and bool(spec), f"each reward must be a non-empty string, got {spec!r}"
            )
            split_weight(spec)  # a NaN or infinite weight is refused here
        _check_ints(self, ("num_inference_steps",), 1)
        _check_ints(self, ("resolution", "decode_chunk_size"), 1, optional=True)
        _need(
            self.noise_level is None or self.noise_level > 0,
            f"noise_level must be None or a finite number > 0 (flow-matching models), got {self.noise_level}",
        )
        self.reward_options()

    def reward_options(self) -> dict[str, Any]:
        """``reward_kwargs`` parsed.

        Raises:
            ValueError: not a JSON object.
        """
        try:
            kwargs = json.loads(self.reward_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"reward_kwargs must be a JSON object, got {self.reward_kwargs!r}: {err}"
            ) from err
        _need(isinstance(kwargs, dict), f"reward_kwargs must be a JSON object, got {self.reward_kwargs!r}")
        return kwargs

    @property
    def reward_spec(self) -> str | list[str]:
        """The env's ``reward`` argument: the one reward's spec, or the list of weighted ones."""
        specs = reward_tuple(self.reward)
        return specs[0] if len(specs) == 1 else list(specs)

    def env_kwargs(self, num_envs: int, device: str) -> dict[str, Any]:
        """The keywords of ``gym.make_vec("DiffusionDenoise-v0", **...)`` for this env (the one builder)."""
        contexts = context_spec(self.contexts)
        return dict(
            num_envs=num_envs,
            model=self.model,
            reward=self.reward_spec,
            reward_kwargs=self.reward_options(),
            num_inference_steps=self.num_inference_steps,
            eta=self.eta,
            noise_level=self.noise_level,
            transition=self.transition,
            log_density=self.log_density,
            device=device,
            dtype=self.model_dtype,
            context=contexts,
            prompts=list(self.prompts) or None,
            resolution=self.resolution,
            decode_chunk_size=self.decode_chunk_size,
        )


@dataclass(frozen=True)
class SamplingConfig(Checked):
    """What an epoch samples: its images, and which denoising steps are trained and how they are sampled."""

    sample_batch_size: int = 32
    """Images denoised in parallel (the vector env's num_envs)."""
    sample_batches_per_epoch: int = 2
    """Sampling batches per epoch (images per epoch = this x sample_batch_size)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance inside the policy; 1 disables it (reference: 5.0 for SD)."""
    step_window: int | None = None
    """Train K consecutive steps per epoch, a window (MixGRPO's sliding window, Flow-GRPO-Fast's few SDE
    steps; agents.steps.train_window): the steps outside it are neither stored nor re-run, so an image costs
    T sampling passes plus 3 K training ones instead of T + 3 T. 0: every step with a weight; more than T:
    every step. None: the algorithm's default (``default_window``; PXPO: 2, placed at random in the first
    half, the other steps deterministic; DDPO, the oracle and plug-ins: every step)."""
    window_placement: Literal["sliding", "random", "fixed"] | None = None
    """Where the window sits: 'sliding' (the steps tiled by windows, one further every epoch, round again after
    the last weighted step; MixGRPO), 'random' (a start drawn anew every epoch from the first half of the
    steps, as Flow-GRPO-Fast) or 'fixed' (at window_start). None: the algorithm's default ('sliding')."""
    window_start: int = 0
    """The window's first step ('fixed'), or a step of epoch 0's window ('sliding')."""
    window_outside: Literal["stochastic", "deterministic"] | None = None
    """How the steps outside the window are sampled in training: as every step ('stochastic') or without
    noise, DDIM at eta 0 / the flow's Euler step ('deterministic', Flow-GRPO-Fast), so that the trained
    steps carry all of the episode's randomness. Evaluation and the export sample every step as the run's
    sampler (eta / noise_level) says either way. None: the algorithm's default with its default window (PXPO:
    'deterministic'), else 'stochastic'."""
    reuse_sampling_pass: bool = False
    """Take the first minibatch's gradient of each epoch from the sampling pass itself (its graph kept for
    the trained steps of those images: ratio exactly 1 there) instead of running the policy again: saves
    one forward per trained step of those images, costs their activations' memory until the update. Needs
    train_batch_size a multiple of sample_batch_size and timestep_fraction 1."""

    def check(self) -> None:
        _check_ints(self, ("sample_batch_size", "sample_batches_per_epoch"), 1)
        _check_ints(self, ("window_start",), 0)
        _need(
            self.step_window is None
            or (
                isinstance(self.step_window, int)
                and not isinstance(self.step_window, bool)
                and self.step_window >= 0
            ),
            f"step_window must be None (the algorithm's default) or an int >= 0, got step_window={self.step_window!r}",
        )
        _need(self.guidance_scale >= 1, f"guidance_scale must be >= 1, got {self.guidance_scale}")
        for name, allowed in (("window_placement", WINDOW_PLACEMENTS), ("window_outside", WINDOW_OUTSIDE)):
            value = getattr(self, name)
            _need(
                value is None or value in allowed,
                f"{name} must be None (the algorithm's default) or one of {allowed}, got {name}={value!r}",
            )

    @property
    def images_per_epoch(self) -> int:
        return self.sample_batch_size * self.sample_batches_per_epoch


@dataclass(frozen=True)
class OptimiserConfig(Checked):
    """The update: minibatches, AdamW, each step's loss weight, what is trained (LoRA) and its average (EMA)."""

    train_batch_size: int = 32
    """Images per optimizer step (gradients are accumulated over their trained timesteps)."""
    inner_epochs: int = 1
    """Passes over each epoch's images (reference: 1)."""
    timestep_fraction: float = 1.0
    """Fraction of each trajectory's steps trained on, in a random order per image (reference: 1)."""
    learning_rate: float = 3e-4
    """AdamW learning rate. Reference: 3e-4 (LoRA) / 1e-5 (full SD); 3e-4 learns fast on the tiny default model."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    weight_decay: float = 1e-4
    """AdamW weight decay (reference: 1e-4)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (reference: 1.0)."""
    step_weighting: Literal["all", "drop", "soft"] = DEFAULT_STEP_WEIGHTING
    """Which denoising steps enter the loss (agents.steps): 'drop' leaves out steps whose sigma_t is
    below step_threshold x the schedule's median sigma_t (their gradient is almost pure noise),
    'soft' down-weights them smoothly, 'all' trains every step (DDPO's reference)."""
    step_threshold: float = DEFAULT_STEP_THRESHOLD
    """sigma_t / median sigma_t under which 'drop' leaves a step out (and 'soft''s half-weight point)."""
    step_weights: tuple[float, ...] = ()
    """Explicit loss weight of each of the num_inference_steps steps (first step first); overrides step_weighting."""
    lora_rank: int | None = None
    """None: LoRA rank 4 on latent text-to-image models (as DDPO), full fine-tuning on pixel models;
    0: full fine-tuning; > 0: LoRA of this rank on the attention projections (needs peft)."""
    gradient_checkpointing: bool = False
    """Recompute the policy network's activations in the backward pass (less memory, more compute)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast for the policy's forward passes (CUDA)."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the trainable weights with this decay (e.g. 0.99) and evaluate
    with it (agents.ema); None: no EMA."""

    def check(self) -> None:
        object.__setattr__(self, "step_weights", tuple(self.step_weights))
        _check_ints(self, ("train_batch_size", "inner_epochs"), 1)
        _check_ints(self, ("lora_rank",), 0, optional=True)
        _need(self.learning_rate > 0, f"learning_rate must be > 0, got learning_rate={self.learning_rate}")
        _need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        _need(
            0 < self.timestep_fraction <= 1,
            f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}",
        )
        _need(
            self.step_weighting in STEP_WEIGHTINGS,
            f"step_weighting must be one of {STEP_WEIGHTINGS}, got step_weighting={self.step_weighting!r}",
        )
        _need(0 < self.step_threshold <= 1, f"step_threshold must be in (0, 1], got {self.step_threshold}")
        _need(
            self.ema_decay is None or 0 <= self.ema_decay < 1,
            f"ema_decay must be None or in [0, 1), got ema_decay={self.ema_decay}",
        )

    def resolved_lora_rank(self, latent: bool) -> int:
        """The LoRA rank actually used (0 = full fine-tuning) for a latent or pixel model."""
        if self.lora_rank is not None:
            return self.lora_rank
        return DEFAULT_LATENT_LORA_RANK if latent else 0


@dataclass(frozen=True)
class RunConfig(Checked):
    """The run around the training: its length, seed, device, folder, checkpoints, evaluation and export."""

    num_epochs: int = 20
    """Epochs; each samples images, then updates the policy on them."""
    seed: int = 0
    """Seeds the env's noise and contexts, and the training shuffles."""
    device: str = "cpu"
    """torch device of the env, the policy and the rewards."""
    threads: int | None = None
    """torch CPU threads; None leaves torch's default."""
    out: str = ""
    """Run folder; runs/{algo}-{estimator}-{reward}-seed{seed} if empty."""
    resume: str = ""
    """Run folder to resume from its latest checkpoint. Its saved settings are used; only the options in
    ``agents.runs.RESUME_OVERRIDABLE`` (num_epochs, save_every, image_every, eval_every, threads, progress,
    tensorboard, export, ...) may be given anew (a flag set to another value than the run's, other than
    these, is refused)."""
    overwrite: bool = False
    """Start over in a run folder that already holds a run: its metrics, images, evaluations and
    checkpoints are deleted first. Without it (or resume) a non-empty run folder is refused."""
    save_every: int = 5
    """Checkpoint every N epochs (and always at the end); 0: only at the end."""
    image_every: int = 5
    """Save an image grid with reward heatmaps every N epochs; 0: never."""
    eval_every: int = 0
    """Every N epochs (and at the end), score the policy on held-out noise: reward and fidelity to the
    pretrained model's images (agents.heldout); 0: never."""
    eval_images: int = 32
    """Held-out images per evaluation."""
    export: bool = True
    """At the end, write the final policy (EMA weights with ema_decay) as a diffusers model to RUN/model
    (agents.export): a DDPMPipeline folder for pixel models, a diffusers LoRA file for LoRA on latent ones."""
    tensorboard: bool = True
    """Also write TensorBoard scalars under RUN/tb."""
    dist_timeout: float = 600.0
    """Under torchrun: seconds a rank waits for the others in a collective before it fails (a rank that
    died makes the others exit with an error within this time)."""
    progress: bool = True
    """Show a progress bar."""
    trust_code: bool = False
    """On resume: run a reward or algorithm the checkpoint names by import path; without it a checkpoint may
    name only built-in ones, or the same --reward / algorithm must be given again."""

    def check(self) -> None:
        _check_ints(self, ("seed", "save_every", "image_every", "eval_every"), 0)
        _check_ints(self, ("num_epochs", "eval_images"), 1)
        _check_ints(self, ("threads",), 1, optional=True)
        _need(
            self.dist_timeout > 0,
            f"dist_timeout must be a finite number of seconds > 0, got dist_timeout={self.dist_timeout}",
        )
        _need(
            not (self.resume and self.overwrite),
            "resume and overwrite exclude each other: resume continues the run, overwrite deletes it",
        )


@dataclass(frozen=True)
class PluginAlgorithm(Checked):
    """An algorithm class of your own, by import path (agents.algorithms.base; docs/custom-algorithms.md)."""

    path: str
    """'package.module:Class': imported when the trainer is built (never from a file's say-so)."""
    option: tuple[str, ...] = ()
    """Its config_class's fields as key=value (the value read as JSON where it parses, else as text), e.g.
    --option window=2 clip_range=0.001."""

    def check(self) -> None:
        object.__setattr__(self, "option", tuple(self.option))
        check_name(self.path)
        _need(
            self.path not in BUILTIN,
            f"path={self.path!r} is a built-in algorithm: use its own config (e.g. the '{self.path}' subcommand)",
        )
        key_values(self.option, "option")

    def options(self) -> dict[str, Any]:
        return key_values(self.option, "option")


BUILTIN_CONFIGS: dict[type, str] = {DDPOConfig: "ddpo", PXPOConfig: "pxpo", OracleConfig: "oracle"}
"""The built-in algorithms' config classes and their names (a config's type names its algorithm)."""
CONFIG_OF = {name: cls for cls, name in BUILTIN_CONFIGS.items()}

AlgorithmChoice = Union[  # noqa: UP007  (tyro reads the Union's members as the subcommands)
    Annotated[
        PXPOConfig,
        tyro.conf.subcommand("pxpo", description="PXPO: per-pixel rewards weight per-pixel likelihoods."),
    ],
    Annotated[DDPOConfig, tyro.conf.subcommand("ddpo", description="DDPO: one reward per image.")],
    Annotated[
        OracleConfig,
        tyro.conf.subcommand(
            "oracle", description="The exact gradient of a differentiable reward through the sampler."
        ),
    ],
    Annotated[
        PluginAlgorithm,
        tyro.conf.subcommand("plugin", description="Your own algorithm class by import path."),
    ],
]

SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "sampling": SamplingConfig,
    "optimiser": OptimiserConfig,
    "run": RunConfig,
}
"""The sections other than the algorithm's, by attribute name."""
SECTION_OF: dict[str, str] = {f.name: name for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
"""Each option's section (option names are unique across the sections)."""
RENAMED = {
    "credit_check_scales": "check_scales",
    "credit_check_restore": "check_restore",
    "credit_check_drop": "check_drop",
}
"""Options saved before the sections under another name (configs written before them, e.g. checkpoints)."""
LEGACY_SENTINELS = {"clip_range": 0.0, "lora_rank": -1, "resolution": 0, "decode_chunk_size": 0, "threads": 0}
"""Values that meant "default" in flat configs written before these fields took None."""
ADDED_FIELDS = {**WINDOW_NONE, "window_start": 0, "reuse_sampling_pass": False}
"""Fields a flat config written before they existed does not hold, at the value that trained it (whatever
the default is now)."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tune the env's diffusion model with PXPO (the default), DDPO, the exact-gradient oracle or your own
    algorithm (the subcommand; its options follow it)."""

    algorithm: AlgorithmChoice = PXPOConfig()
    """The algorithm and its own options."""
    env: EnvConfig = EnvConfig()
    sampling: SamplingConfig = SamplingConfig()
    optimiser: OptimiserConfig = OptimiserConfig()
    run: RunConfig = RunConfig()

    def __post_init__(self) -> None:
        if isinstance(self.algorithm, str):  # a name: that algorithm's defaults
            object.__setattr__(self, "algorithm", algorithm_config(self.algorithm, {}))
        if isinstance(self.env, EnvConfig) and not self.env.reward:  # (not in EnvConfig: tyro appends to it)
            object.__setattr__(self, "env", dataclasses.replace(self.env, reward=reward_tuple(())))
        for name, cls in SECTIONS.items():
            _need(
                isinstance(getattr(self, name), cls),
                f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}",
            )
            if parsing():  # built from a command line, a section was not checked when it was made
                getattr(self, name).validate()
        _need(
            type(self.algorithm) in BUILTIN_CONFIGS or isinstance(self.algorithm, PluginAlgorithm),
            f"algorithm must be one of {[c.__name__ for c in BUILTIN_CONFIGS]} or a PluginAlgorithm, got "
            f"{type(self.algorithm).__name__} (a plug-in's own config goes in PluginAlgorithm(path, option))",
        )
        if parsing():
            self.algorithm.validate()
        sampling, optimiser, steps = self.sampling, self.optimiser, self.env.num_inference_steps
        _need(
            sampling.images_per_epoch % optimiser.train_batch_size == 0,
            f"train_batch_size={optimiser.train_batch_size} must divide the images per epoch "
            f"(sample_batch_size x sample_batches_per_epoch = {sampling.images_per_epoch})",
        )
        _need(
            not optimiser.step_weights or len(optimiser.step_weights) == steps,
            f"step_weights must have num_inference_steps={steps} entries, got {len(optimiser.step_weights)}",
        )
        _need(
            sampling.window_start < steps,
            f"window_start must be a step in [0, {steps}), got window_start={sampling.window_start}",
        )
        _need(
            not sampling.reuse_sampling_pass
            or (
                optimiser.train_batch_size % sampling.sample_batch_size == 0
                and optimiser.timestep_fraction == 1
            ),
            "reuse_sampling_pass takes whole sampling batches' graphs into the first minibatch: it needs "
            f"train_batch_size a multiple of sample_batch_size and timestep_fraction 1, got "
            f"train_batch_size={optimiser.train_batch_size}, sample_batch_size={sampling.sample_batch_size}, "
            f"timestep_fraction={optimiser.timestep_fraction}",
        )
        if self.algo in BUILTIN:  # a plug-in's class is imported only when the trainer is built
            self.check_for(resolve_algorithm(self.algo), self.algorithm)

    def check_for(self, cls: type, algo_config: Any) -> None:
        """Refuses what the algorithm class cannot take: an algorithm that backpropagates through its sampler
        (``samples_with_gradients``) has no window, no reused sampling pass and no KL penalty.

        Raises:
            ValueError: naming the option and the algorithm.
        """
        if not getattr(cls, "samples_with_gradients", False):
            return
        sampling, kl_coef = self.sampling, getattr(algo_config, "kl_coef", 0.0)
        _need(
            not (sampling.step_window or sampling.reuse_sampling_pass or kl_coef),
            f"step_window={sampling.step_window}, reuse_sampling_pass={sampling.reuse_sampling_pass} and "
            f"kl_coef={kl_coef} shape a policy-gradient epoch; algo={self.algo!r} backpropagates through its "
            "sampler and takes none of them",
        )

    # -- building ---------------------------------------------------------

    @classmethod
    def of(cls, strict: bool = True, **options: Any) -> TrainConfig:
        """The config of flat options: each section's fields by name, ``algo`` (a built-in name or an import
        path; default 'pxpo'), the algorithm's own fields by name, and ``algo_option`` (key=value items, the
        same as naming them).

        Args:
            strict: refuse an option the algorithm does not have; False leaves it out (a config saved before
                the sections held every algorithm's options, each algorithm reading its own).

        Raises:
            ValueError: an unknown option, or a value a section refuses.
        """
        options = {RENAMED.get(k, k): v for k, v in options.items()}
        algo = options.pop("algo", "pxpo")
        algo_items = tuple(options.pop("algo_option", ()))
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        algo_options: dict[str, Any] = {}
        for key, value in options.items():
            if key in SECTION_OF:
                sections[SECTION_OF[key]][key] = value
            else:
                algo_options[key] = value
        built = {name: SECTIONS[name](**values) for name, values in sections.items()}
        return cls(algorithm=algorithm_config(algo, algo_options, strict, algo_items), **built)

    @classmethod
    def from_dict(cls, saved: dict[str, Any], plugin_fields: set[str] | None = None) -> TrainConfig:
        """A config saved by ``to_dict`` (sections; every option must be known), or before the sections (one
        flat dict holding every algorithm's options: translated by ``flat_view``, each algorithm keeping its
        own, a plug-in those in ``plugin_fields``, its config class's fields, which the caller knows only once
        it may import the class).

        Raises:
            ValueError: not a config, or an option it does not know.
        """
        if not isinstance(saved, dict):
            raise ValueError(f"a saved config must be a JSON object, got {type(saved).__name__}")
        flat = flat_view(saved)
        legacy = not is_sectioned(saved)
        if legacy and flat.get("algo", "pxpo") not in BUILTIN:
            keep = plugin_fields or set()
            flat = {
                k: v
                for k, v in flat.items()
                if k in SECTION_OF or k in ("algo", "algo_option") or (k in keep and v is not None)
            }
        return cls.of(strict=not legacy, **flat)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready sections, with the algorithm's name (``from_dict`` reads it back)."""
        out: dict[str, Any] = {"algo": self.algo}
        if isinstance(self.algorithm, PluginAlgorithm):
            out["algorithm"] = {"option": list(self.algorithm.option)}
        else:
            out["algorithm"] = dataclasses.asdict(self.algorithm)
        out.update({name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS})
        return out

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (``of`` builds the same config from it)."""
        return flat_view(self.to_dict())

    def replace(self, **options: Any) -> TrainConfig:
        """This config with the flat options changed (``algo`` starts that algorithm from its defaults)."""
        flat = self.flat()
        if "algo" in options and options["algo"] != flat["algo"]:  # the new algorithm's options and window
            flat = {k: v for k, v in flat.items() if k in SECTION_OF}
            flat.update(step_window=None, window_placement=None, window_outside=None)
        flat.update(options)
        return TrainConfig.of(**flat)

    # -- derived ------------------------------------------------------------

    @property
    def algo(self) -> str:
        """The algorithm's name: a built-in's, or the plug-in's import path."""
        if isinstance(self.algorithm, PluginAlgorithm):
            return self.algorithm.path
        return BUILTIN_CONFIGS[type(self.algorithm)]

    @property
    def estimator(self) -> str:
        """The policy-gradient estimator ('is' for the oracle, which has none: the run folders' name)."""
        return getattr(self.algorithm, "estimator", "is")

    def algorithm_class(self) -> type:
        """The algorithm class (``agents.algorithms.resolve_algorithm``: an import path is imported here)."""
        return resolve_algorithm(self.algo)

    def with_window_defaults(self, cls: type | None = None) -> TrainConfig:
        """This config with ``step_window``, ``window_placement`` and ``window_outside`` resolved: with
        ``step_window`` None, the None ones from the algorithm's ``default_window`` (``cls``; None resolves
        ``algo``); with ``step_window`` given, the None ones from ``WINDOW_NONE`` (a window you size yourself
        slides and stays stochastic unless you say otherwise); with no window (0), all from ``WINDOW_NONE``."""
        cls = cls or self.algorithm_class()
        defaults = dict(WINDOW_NONE)
        if self.sampling.step_window is None:
            defaults.update(getattr(cls, "default_window", {}))
        given = {name: getattr(self.sampling, name) for name in WINDOW_NONE}
        resolved = {k: defaults[k] if v is None else v for k, v in given.items()}
        if not resolved["step_window"]:
            placed = {
                k: v for k, v in given.items() if k != "step_window" and v not in (None, WINDOW_NONE[k])
            }
            if self.sampling.window_start:
                placed["window_start"] = self.sampling.window_start
            _need(
                not placed,
                f"{', '.join(f'{k}={v!r}' for k, v in placed.items())} place a window, but algo={self.algo!r} "
                f"with step_window={self.sampling.step_window} trains every step: set step_window too",
            )
            resolved = dict(WINDOW_NONE)
        return dataclasses.replace(self, sampling=dataclasses.replace(self.sampling, **resolved))

    @property
    def run_dir(self) -> Path:
        """``out``, else runs/ALGO-ESTIMATOR-REWARD[-MODEL]-seedSEED (MODEL: left out for the default model,
        else its name or folder name (an export's run name), so that runs on different models never share a
        folder)."""
        env = self.env
        name = "+".join(reward_tuple(env.reward)).replace(":", "_")
        parts = Path(env.model).parts or ("model",)
        tag = parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]  # an export: its run's name
        model = "" if env.model == "default" else "-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", tag)
        return Path(
            self.run.out or f"runs/{label(self.algo)}-{self.estimator}-{name}{model}-seed{self.run.seed}"
        )

    @property
    def env_batch_size(self) -> int:
        """The vector env's num_envs: the oracle denoises (and backpropagates) one train batch at a time."""
        with_gradients = getattr(self.algorithm_class(), "samples_with_gradients", False)
        return self.optimiser.train_batch_size if with_gradients else self.sampling.sample_batch_size

    def algo_config(self, sample_elements: int | None = None, cls: type | None = None) -> Any:
        """The options the algorithm runs with: its section (a plug-in's config built from its options), with
        a DDPO-style clip range left at None scaled for ``sample_elements`` = C h w (``ddpo_clip_range``) and
        a group's buffer sized to hold exactly the epoch's group.

        Raises:
            ValueError: a plug-in option its config does not have, or a value it refuses.
        """
        cls = cls or self.algorithm_class()
        config = self.algorithm
        changes: dict[str, Any] = {}
        if isinstance(config, PluginAlgorithm):
            options = config.options()
            config = build_options(cls.config_class, options, self.algo)
            if getattr(cls, "default_clip_range", "fixed") == "elements" and "clip_range" not in options:
                changes["clip_range"] = None  # scaled below, as DDPO's
        if changes.get("clip_range", getattr(config, "clip_range", 0)) is None:
            if not sample_elements:
                raise ValueError(
                    f"algo={self.algo!r}: clip_range None is scaled for the sample, which is not known"
                )
            changes["clip_range"] = ddpo_clip_range(sample_elements)
        if getattr(config, "group_size", None):  # a group is a buffer that holds exactly its rewards
            changes.update(stat_buffer_size=config.group_size, stat_min_count=config.group_size)
        return dataclasses.replace(config, **changes) if changes else config


def is_sectioned(saved: dict[str, Any]) -> bool:
    """Whether a saved config is ``TrainConfig.to_dict``'s (else the flat dict of a run saved before the
    sections)."""
    return isinstance(saved.get("env"), dict)


def flat_view(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config (``TrainConfig.to_dict``'s sections, or the flat dict of runs saved before them, whose
    renamed options, "default" sentinels and missing fields are translated here, the one place) as flat
    options."""
    if not is_sectioned(saved):
        flat = {RENAMED.get(k, k): v for k, v in saved.items()}
        for key, legacy in LEGACY_SENTINELS.items():  # saved before these fields became optional
            if key in flat and flat[key] == legacy:
                flat[key] = None
        for key, before in ADDED_FIELDS.items():  # saved before these fields existed
            flat.setdefault(key, before)
        return flat
    unknown = sorted(set(saved) - {"algo", "algorithm", *SECTIONS})
    if unknown:
        raise ValueError(
            f"a saved config holds algo, algorithm and the sections {sorted(SECTIONS)} at its top level, "
            f"got {unknown}"
        )
    flat: dict[str, Any] = {"algo": saved.get("algo", "pxpo")}
    for name in SECTIONS:
        section = saved.get(name, {})
        if not isinstance(section, dict):
            raise ValueError(f"a saved config's {name!r} must be an object, got {section!r}")
        flat.update(section)
    algorithm = saved.get("algorithm", {})
    if not isinstance(algorithm, dict):
        raise ValueError(f"a saved config's 'algorithm' must be an object, got {algorithm!r}")
    if flat["algo"] in BUILTIN:
        flat.update(algorithm)
    else:
        if set(algorithm) - {"option"}:
            raise ValueError(
                f"a plug-in's saved 'algorithm' holds only its 'option' items, got {sorted(algorithm)}"
            )
        flat["algo_option"] = tuple(algorithm.get("option", ()))
    return flat


def build_options(config_class: type, options: dict[str, Any], algo: str) -> Any:
    """``config_class(**options)``, refusing an option it does not have with the ones it has."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{unknown} are not options of algo={algo!r}; it has {sorted(fields)}")
    try:
        return config_class(**options)
    except TypeError as err:
        raise ValueError(f"algo={algo!r}: its options do not fit {config_class.__name__}: {err}") from err


def algorithm_config(
    algo: str, options: dict[str, Any], strict: bool = True, items: tuple[str, ...] = ()
) -> Any:
    """The algorithm section of ``algo`` (a built-in name or an import path) with these options and
    ``key=value`` items (a plug-in keeps its items as written).

    Args:
        strict: refuse an option the built-in algorithm does not have; False leaves it out.
    """
    check_name(algo)
    if algo not in BUILTIN:  # None: the plug-in's own default (as for a built-in)
        named = tuple(f"{k}={json.dumps(v)}" for k, v in options.items() if v is not None)
        return PluginAlgorithm(algo, tuple(items) + named)
    options = {**options, **key_values(tuple(items), "algo_option")}
    config_class = CONFIG_OF[algo]
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if not strict:
        options = {k: v for k, v in options.items() if k in fields}
    if "check_scales" in options:
        options["check_scales"] = tuple(options["check_scales"])
    if options.get("clip_range", 0) is None and (
        "clip_range" not in fields or fields["clip_range"].default is not None
    ):
        del options["clip_range"]  # None: the algorithm's own default
    return build_options(config_class, options, algo)


def key_values(items: tuple[str, ...] | list[str], name: str) -> dict[str, Any]:
    """``key=value`` items as a dict, each value read as JSON where it parses, else kept as text.

    Raises:
        ValueError: an item without '=' or whose key is not a field name, or a key given twice (naming ``name``).
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{name} must be key=value with a field name as key, got {item!r}")
        if key in options:
            raise ValueError(f"{name} names {key!r} twice")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def reward_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``EnvConfig.reward`` in its one form: a tuple of specs, ('color',) when empty."""
    specs = (value,) if isinstance(value, str) else tuple(value)
    return specs or ("color",)


DDPO_REFERENCE_CLIP = 1e-4
"""DDPO's reference clip range, set for SD 1.5 at 512 px: a 4 x 64 x 64 latent."""
DDPO_REFERENCE_ELEMENTS = 4 * 64 * 64


def ddpo_clip_range(sample_elements: int) -> float:
    """DDPO's default clip range for a sample of ``sample_elements`` = C h w elements.

    DDPO's ratio uses the mean log-likelihood over the sample's elements, whose
    fluctuation scales like 1 / sqrt(elements); the reference 1e-4 at 16,384 elements
    is kept at the same relative size: 1e-4 * sqrt(16384 / elements). For the default
    model (3 x 16 x 16 = 768) that is 4.6e-4; the sweep over 1e-4 and 5e-4 picked 5e-4
    (docs/results/sample-efficiency.md, "The sweep"). SD 1.5 at 512 px gets exactly 1e-4.
    """
    return DDPO_REFERENCE_CLIP * math.sqrt(DDPO_REFERENCE_ELEMENTS / sample_elements)


def make_envs(config: TrainConfig, num_envs: int | None = None, device: str | None = None):
    """The vector env a config trains on (``num_envs`` overrides its batch size, e.g. for evaluation or a
    rank's share of it; ``device`` the config's, e.g. a rank's own GPU)."""
    kwargs = config.env.env_kwargs(num_envs or config.env_batch_size, device or config.run.device)
    # a run starts from the weights: an export's pin is not part of them; the env's own sampler (the held-out
    # reference's) guides as the policy does
    return gym.make_vec(
        "DiffusionDenoise-v0", pinned_pixels="off", guidance_scale=config.sampling.guidance_scale, **kwargs
    )


def check_envs(config: TrainConfig, envs: Any, ranks: int = 1) -> None:
    """Refuses an env whose schedule or batch size disagrees with the config, that is not in the default
    action and observation form the agents are written for, whose model cannot do the config's guidance or
    whose own sampler guides otherwise,
    or whose contexts do not divide the config's groups."""
    core = envs.unwrapped
    wrappers = generic_wrappers(envs)
    if wrappers:
        raise ValueError(
            f"the agents act with noise predictions on the default observation: build the env without "
            f"generic-learner wrappers (action_mode='model_output', no obs_* options), got {wrappers}"
        )
    env = config.env
    flow = getattr(core.schedule, "transition", None)
    stochasticity = (
        [("noise_level", env.noise_level or DEFAULT_NOISE_LEVEL, core.schedule.noise_level)]
        + [("transition", env.transition, flow)]
        + [("log_density", env.log_density, core.schedule.log_density)]
        if flow is not None
        else [("eta", env.eta, core.schedule.eta)]
    )
    pairs = [
        *stochasticity,
        ("num_inference_steps", env.num_inference_steps, core.num_steps),
        (
            "train_batch_size" if config.algorithm_class().samples_with_gradients else "sample_batch_size",
            config.env_batch_size // ranks,
            core.num_envs,
        ),
    ]
    for name, want, got in pairs:
        if want != got:
            raise ValueError(f"config {name}={want} but the env has {got}: build the env from the config")
    check_guidance(config.sampling.guidance_scale, core.loaded.null_context, model=repr(core.loaded.source))
    if core.guidance_scale != config.sampling.guidance_scale:
        raise ValueError(
            f"config guidance_scale={config.sampling.guidance_scale} but the env's own sampler guides at "
            f"{core.guidance_scale}: build the env from the config (make_envs)"
        )
    group_size = getattr(config.algorithm, "group_size", None)
    if group_size is not None:
        contexts = len(core.context_choices)
        if config.sampling.images_per_epoch != group_size * contexts:
            raise ValueError(
                f"group_size={group_size} needs {group_size} x {contexts} contexts = "
                f"{group_size * contexts} images per epoch, got {config.sampling.images_per_epoch} "
                "(sample_batch_size x sample_batches_per_epoch)"
            )


def autocast(mixed_precision: str, device: torch.device):
    """The autocast context of the policy's forward passes (one object, re-entered by every pass)."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
