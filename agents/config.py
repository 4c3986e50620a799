"""``TrainConfig``: the one config a user sets for DDPO or PXPO (from Python, or the
shell through ``agents.train``), and the env it describes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
import tyro

import pxpo_gym  # noqa: F401  (registers the env)
from agents.algorithms import check_name, is_builtin, label, resolve_algorithm
from agents.algorithms.pxpo import PXPOConfig
from agents.steps import DEFAULT_STEP_THRESHOLD, DEFAULT_STEP_WEIGHTING, STEP_WEIGHTINGS, WINDOW_PLACEMENTS
from pxpo_gym.flow import DEFAULT_NOISE_LEVEL
from pxpo_gym.rewards import split_weight
from pxpo_gym.wrappers import generic_wrappers

DEFAULT_LATENT_LORA_RANK = 4
"""LoRA rank used on latent text-to-image models unless ``lora_rank`` says otherwise (DDPO's default)."""


WINDOW_OUTSIDE = ("stochastic", "deterministic")
WINDOW_NONE: dict[str, Any] = {
    "step_window": 0,
    "window_placement": "sliding",
    "window_outside": "stochastic",
}
"""No window: every step trained and sampled stochastically (the values before issue 35)."""

ALGO_DEFAULTS = PXPOConfig()
"""The one source of the algorithm options' defaults (the shared ones are DDPO's too: PolicyGradientConfig)."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tune the env's diffusion model with DDPO or PXPO."""

    algo: str = "pxpo"
    """Algorithm: 'ddpo' (one reward per image), 'pxpo' (per-pixel rewards), 'oracle' (the exact-gradient
    baseline that backpropagates a differentiable reward through the sampler), or your own by import path,
    'package.module:Class' (agents.algorithms.base; docs/custom-algorithms.md)."""
    algo_option: tuple[str, ...] = ()
    """The algorithm's own options as key=value (its config_class's fields; the value read as JSON where it
    parses, else as text), e.g. --algo-option window=2 clip_range=0.001."""
    estimator: Literal["sf", "is"] = ALGO_DEFAULTS.estimator  # type: ignore[assignment]
    """'sf': score function; 'is': importance sampling with PPO clipping."""
    reward: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Built-in reward name (pxpo_gym.rewards.REWARDS) or 'package.module:function'; several with weights make
    their weighted sum (each component's mean is logged): --reward color:0.5 --reward segmentation:0.5.
    Empty: 'color'. From Python a plain string is accepted."""
    reward_kwargs: str = "{}"
    """JSON object of reward options, e.g. '{"target": [0, 0, 1]}'; for several rewards keyed by name,
    e.g. '{"color": {"target": "blue"}}'."""
    model: str = "default"
    """Embedded model name, local diffusers folder, or hub id."""
    prompts: tuple[str, ...] = ()
    """Latent text-to-image models: the prompts (context k is prompt k). Required for them, refused otherwise."""
    resolution: int | None = None
    """Latent text-to-image models: image size (None: the model's own, e.g. 512 for SD 1.5)."""
    decode_chunk_size: int | None = None
    """Latent models: samples per VAE decode call at the terminal step (None: the whole batch at once)."""
    model_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Precision of the env's frozen model and VAE (half precision halves their memory on CUDA)."""
    contexts: tuple[str, ...] = ()
    """Context ids or names to train on (empty: all of the model's contexts)."""
    num_epochs: int = 20
    """Epochs; each samples images, then updates the policy on them."""
    sample_batch_size: int = 32
    """Images denoised in parallel (the vector env's num_envs)."""
    sample_batches_per_epoch: int = 2
    """Sampling batches per epoch (images per epoch = this x sample_batch_size)."""
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
    clip_range: float | None = None
    """PPO clip range; None takes the algorithm's default (DDPO: 1e-4 x sqrt(16384 / (C h w)), its reference
    scaled for the sample's element count, 4.6e-4 on the default model; PXPO: 0.2 per pixel)."""
    adv_clip_max: float = ALGO_DEFAULTS.adv_clip_max
    """Advantage clip (reference: 5)."""
    pixel_std: Literal["pixel", "pooled", "floored"] = ALGO_DEFAULTS.pixel_std  # type: ignore[assignment]
    """PXPO: std of the per-pixel advantage normalisation (agents.advantages); 'pooled' by measurement
    (docs/results.md, "PXPO's advantages")."""
    image_advantage_weight: float = ALGO_DEFAULTS.image_advantage_weight
    """PXPO: hybrid advantages A + lambda * A_image with this lambda (0: the credit's advantages only)."""
    credit: Literal["checked", "auto", "pixel", "image", "footprint", "support", "receptive"] = (  # type: ignore[assignment]
        ALGO_DEFAULTS.credit
    )
    """PXPO: which reward pixels credit each pixel's log-likelihood at each step (agents.credit): 'checked'
    (the default: 'pixel' while per-pixel credit agrees with the reward on each epoch's own images, 'image'
    without the silent-pixel penalty from the first epoch it does not, agents.credit_check), 'auto' (the
    default before: the same choice made once, on noise images, by the reward's locality), 'pixel' (its
    own: the paper's PXPO), 'image' (DDPO's advantage everywhere),
    'footprint' (the pixels its noise reaches, weighted by the influence measured once per run),
    'support' (unweighted over the measured footprint), 'receptive' (the last step's footprint kernel, the
    reward's own receptive field, at every step)."""
    credit_check_scales: tuple[float, ...] = ALGO_DEFAULTS.check_scales
    """PXPO credit='checked': the probe scales of the per-epoch check (0: one grid cell; a fraction: that share
    of the cells inverted at once); the agreement is the lowest over them (agents.credit_check)."""
    credit_check_restore: bool = ALGO_DEFAULTS.check_restore
    """PXPO credit='checked': when the check fails, restore the weights that drew the best epoch so far
    before going on with image credit."""
    credit_check_drop: bool = ALGO_DEFAULTS.check_drop
    """PXPO credit='checked': the check also fails when an epoch's mean reward falls below the best epoch's by
    more than half the gain up to it and 2 standard errors, once that gain exceeds 2 standard errors
    (agents.credit_check.reward_dropped)."""
    credit_threshold: float = ALGO_DEFAULTS.credit_threshold
    """PXPO 'footprint': influence below this fraction of a step's largest is dropped; 'support': the
    kernel holds 1 - this of the influence."""
    credit_images: int = 64
    """PXPO kernel credits: episodes of the pretrained model measured for the footprint (once per run)."""
    silent_mode: Literal["kl", "freeze", "hold", "hold-unscored"] = ALGO_DEFAULTS.silent_mode  # type: ignore[assignment]
    """PXPO: how silent pixels are kept: 'hold-unscored' (default: silent pixels whose reward is also exactly
    the same on noise images, which the reward never looks at, keep the pretrained model's trajectory from
    the same noise, as in inpainting; the other silent pixels get the silent_kl_coef penalty), 'kl' (the penalty on every silent
    pixel), 'hold' (every silent pixel held, and penalised) or 'freeze' (the policy's action there is the
    pretrained model's on the current state). A pin ('hold', 'hold-unscored', 'freeze') is part of the
    sampler: the export writes it beside the weights and agents.evaluate applies it (docs/training.md)."""
    silent_kl_coef: float = ALGO_DEFAULTS.silent_kl_coef
    """PXPO: per-pixel KL penalty to the pretrained model on silent pixels (whose reward never varies over
    the context's recent maps), so that what the reward does not score stays as it was; 0: none."""
    pinned_kl_coef: float = ALGO_DEFAULTS.pinned_kl_coef
    """PXPO, 'hold-unscored': the same per-pixel KL penalty on the pinned (unscored) pixels, on the states the
    pin visits: it distils the pretrained model's prediction there into the weights, so that the weights
    alone (an export sampled without its pin) keep what the reward never scored; 0: the pin alone keeps it."""
    pin_band: int = ALGO_DEFAULTS.pin_band
    """PXPO, with a pin: the pinned pixels within this many pixels of the pin's edge ramp from the policy's
    prediction to the pretrained model's when sampling (training, evaluation and the export alike), so the
    held part meets the repainted one without a hard seam; 0: the hard pin."""
    silent_test: Literal["recent", "first"] = ALGO_DEFAULTS.silent_test  # type: ignore[assignment]
    """PXPO: which maps decide that a pixel is silent: 'first' (a context's first stat_min_count maps, the
    pretrained model's, decided once and kept) or 'recent' (its recent maps, re-decided every epoch)."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the frozen pretrained model, per step: the mean over elements of
    KL(p_theta || p_ref) = (b_t (eps_theta - eps_ref))^2 / (2 sigma_t^2), added to DDPO's and PXPO's loss
    with the step's weight. 0: none (and no reference forward pass)."""
    backprop_steps: int = 0
    """oracle: backpropagate through the last K steps only (DRaFT-K); 0: through every step."""
    group_size: int | None = None
    """GRPO-style group advantages: each epoch draws group_size images of every training context, and each
    reward (PXPO: each pixel's) is normalised by its own group's mean and std instead of the running buffer
    (images per epoch must be group_size x the number of contexts). None: the running buffer."""
    stat_buffer_size: int = ALGO_DEFAULTS.stat_buffer_size
    """Recent rewards kept per context for advantage normalisation."""
    stat_min_count: int = ALGO_DEFAULTS.stat_min_count
    """Rewards a context needs before its own statistics replace the batch's."""
    step_weighting: Literal["all", "drop", "soft"] = DEFAULT_STEP_WEIGHTING
    """Which denoising steps enter the loss (agents.steps): 'drop' leaves out steps whose sigma_t is
    below step_threshold x the schedule's median sigma_t (their gradient is almost pure noise),
    'soft' down-weights them smoothly, 'all' trains every step (DDPO's reference)."""
    step_threshold: float = DEFAULT_STEP_THRESHOLD
    """sigma_t / median sigma_t under which 'drop' leaves a step out (and 'soft''s half-weight point)."""
    step_weights: tuple[float, ...] = ()
    """Explicit loss weight of each of the num_inference_steps steps (first step first); overrides step_weighting."""
    step_window: int | None = None
    """Train K consecutive steps per epoch, a window (MixGRPO's sliding window, Flow-GRPO-Fast's few SDE
    steps; agents.steps.train_window): the steps outside it are neither stored nor re-run, so an image costs
    T sampling passes plus 3 K training ones instead of T + 3 T. 0: every step with a weight; more than T:
    every step. None: the algorithm's default (PXPO: 2, placed at random in the first half, the other steps
    deterministic, chosen on the breadth suite's train split; DDPO, the oracle and plug-ins: every step)."""
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
    num_inference_steps: int = 20
    """DDIM steps per image. Reference: 50; 20 keeps CPU runs short."""
    eta: float = 1.0
    """DDIM stochasticity in (0, 1] (reference: 1.0); DDIM-family models only."""
    noise_level: float | None = None
    """Flow-matching models only: the sampler's noise level (None: Flow-GRPO's 0.7; pxpo_gym.flow)."""
    transition: Literal["sde", "cps"] = "sde"
    """Flow-matching models only: Flow-GRPO's SDE step or coefficient-preserving sampling (pxpo_gym.flow)."""
    log_density: Literal["gaussian", "public"] = "gaussian"
    """How a step's log-likelihood is computed: the exact Gaussian, or with transition 'cps' the public CPS
    code's unnormalised -(x - mean)^2, for parity with runs made with it (pxpo_gym.ddim.LOG_DENSITIES)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance inside the policy; 1 disables it (reference: 5.0 for SD)."""
    lora_rank: int | None = None
    """None: LoRA rank 4 on latent text-to-image models (as DDPO), full fine-tuning on pixel models;
    0: full fine-tuning; > 0: LoRA of this rank on the attention projections (needs peft)."""
    gradient_checkpointing: bool = False
    """Recompute the policy UNet's activations in the backward pass (less memory, more compute)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast for the policy's forward passes (CUDA)."""
    device: str = "cpu"
    """torch device of the env, the policy and the rewards."""
    seed: int = 0
    """Seeds the env's noise and contexts, and the training shuffles."""
    threads: int | None = None
    """torch CPU threads; None leaves torch's default."""
    out: str = ""
    """Run folder; runs/{algo}-{estimator}-{reward}-seed{seed} if empty."""
    resume: str = ""
    """Run folder to resume from its latest checkpoint. Its saved settings are used; only num_epochs,
    save_every, image_every, eval_every, threads, progress, tensorboard and export may be given anew (a flag set to
    another value than the run's, other than these, is refused)."""
    overwrite: bool = False
    """Start over in a run folder that already holds a run: its metrics, images, evaluations and
    checkpoints are deleted first. Without it (or resume) a non-empty run folder is refused."""
    save_every: int = 5
    """Checkpoint every N epochs (and always at the end); 0: only at the end."""
    image_every: int = 5
    """Save an image grid with reward heatmaps every N epochs; 0: never."""
    eval_every: int = 0
    """Every N epochs (and at the end), score the policy on held-out noise: reward and fidelity to the
    pretrained model's images (agents.evaluation); 0: never."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the trainable weights with this decay (e.g. 0.99) and evaluate
    with it (agents.ema); None: no EMA."""
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
    """On resume: run a reward the checkpoint names by import path ('package.module:function'); without it
    a checkpoint may name only built-in rewards, or the same --reward must be given again."""

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        object.__setattr__(self, "reward", reward_tuple(self.reward))
        for spec in self.reward:
            need(
                isinstance(spec, str) and bool(spec), f"each reward must be a non-empty string, got {spec!r}"
            )
            split_weight(spec)  # a NaN or infinite weight is refused here

        for field in dataclasses.fields(self):  # a NaN or infinite number is never a setting
            value = getattr(self, field.name)
            numbers = value if isinstance(value, tuple) else (value,)
            bad = [v for v in numbers if isinstance(v, float) and not math.isfinite(v)]
            need(not bad, f"{field.name} must be a finite number, got {field.name}={value!r}")
        need(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"seed must be an int >= 0, got seed={self.seed!r}",
        )
        check_name(self.algo)
        need(self.learning_rate > 0, f"learning_rate must be > 0, got learning_rate={self.learning_rate}")
        for name in (
            "num_epochs",
            "sample_batch_size",
            "sample_batches_per_epoch",
            "train_batch_size",
            "inner_epochs",
            "num_inference_steps",
            "eval_images",
            "credit_images",
        ):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an int >= 1, got {name}={value!r}")
        need(
            self.images_per_epoch % self.train_batch_size == 0,
            f"train_batch_size={self.train_batch_size} must divide the images per epoch "
            f"(sample_batch_size x sample_batches_per_epoch = {self.images_per_epoch})",
        )
        need(
            0 < self.timestep_fraction <= 1,
            f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}",
        )
        need(
            self.step_weighting in STEP_WEIGHTINGS,
            f"step_weighting must be one of {STEP_WEIGHTINGS}, got step_weighting={self.step_weighting!r}",
        )
        need(0 < self.step_threshold <= 1, f"step_threshold must be in (0, 1], got {self.step_threshold}")
        need(
            not self.step_weights or len(self.step_weights) == self.num_inference_steps,
            f"step_weights must have num_inference_steps={self.num_inference_steps} entries, "
            f"got {len(self.step_weights)}",
        )
        for name in ("backprop_steps", "eval_every", "save_every", "image_every", "window_start"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an int >= 0, got {name}={value!r}")
        need(
            self.step_window is None
            or (
                isinstance(self.step_window, int)
                and not isinstance(self.step_window, bool)
                and self.step_window >= 0
            ),
            f"step_window must be None (the algorithm's default) or an int >= 0, got step_window={self.step_window!r}",
        )
        for name, allowed in (("window_placement", WINDOW_PLACEMENTS), ("window_outside", WINDOW_OUTSIDE)):
            value = getattr(self, name)
            need(
                value is None or value in allowed,
                f"{name} must be None (the algorithm's default) or one of {allowed}, got {name}={value!r}",
            )
        need(
            self.window_start < self.num_inference_steps,
            f"window_start must be a step in [0, {self.num_inference_steps}), got window_start={self.window_start}",
        )
        need(
            not self.reuse_sampling_pass
            or (self.train_batch_size % self.sample_batch_size == 0 and self.timestep_fraction == 1),
            "reuse_sampling_pass takes whole sampling batches' graphs into the first minibatch: it needs "
            f"train_batch_size a multiple of sample_batch_size and timestep_fraction 1, got "
            f"train_batch_size={self.train_batch_size}, sample_batch_size={self.sample_batch_size}, "
            f"timestep_fraction={self.timestep_fraction}",
        )
        need(
            not (self.resume and self.overwrite),
            "resume and overwrite exclude each other: resume continues the run, overwrite deletes it",
        )
        need(
            self.ema_decay is None or 0 <= self.ema_decay < 1,
            f"ema_decay must be None or in [0, 1), got ema_decay={self.ema_decay}",
        )
        need(
            self.group_size is None or (isinstance(self.group_size, int) and self.group_size >= 2),
            f"group_size must be None or an int >= 2 (a group of one has no spread), got group_size={self.group_size!r}",
        )
        need(self.kl_coef >= 0, f"kl_coef must be >= 0, got kl_coef={self.kl_coef}")
        need(
            math.isfinite(self.dist_timeout) and self.dist_timeout > 0,
            f"dist_timeout must be a finite number of seconds > 0, got dist_timeout={self.dist_timeout}",
        )
        need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        need(
            self.noise_level is None or (math.isfinite(self.noise_level) and self.noise_level > 0),
            f"noise_level must be None or a finite number > 0 (flow-matching models), got {self.noise_level}",
        )
        for name, low in (("lora_rank", 0), ("threads", 1)):
            value = getattr(self, name)
            need(
                value is None or (isinstance(value, int) and value >= low),
                f"{name} must be None or an int >= {low}, got {name}={value!r}",
            )
        need(self.guidance_scale >= 1, f"guidance_scale must be >= 1, got {self.guidance_scale}")
        try:
            kwargs = json.loads(self.reward_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"reward_kwargs must be a JSON object, got {self.reward_kwargs!r}: {err}"
            ) from err
        need(isinstance(kwargs, dict), f"reward_kwargs must be a JSON object, got {self.reward_kwargs!r}")
        self.algo_options()  # well-formed; their values are the algorithm's to check
        if is_builtin(self.algo):  # an import path is imported only when the trainer is built
            self.algo_config()  # validates the algorithm's own fields

    def with_window_defaults(self, cls: type | None = None) -> TrainConfig:
        """This config with ``step_window``, ``window_placement`` and ``window_outside`` resolved: with
        ``step_window`` None, the None ones from the algorithm's ``default_window`` (``cls``; None resolves
        ``algo``); with ``step_window`` given, the None ones from ``WINDOW_NONE`` (a window you size yourself
        slides and stays stochastic unless you say otherwise); with no window (0), all from ``WINDOW_NONE``."""
        cls = cls or self.algorithm()
        defaults = dict(WINDOW_NONE)
        if self.step_window is None:
            defaults.update(getattr(cls, "default_window", {}))
        given = {name: getattr(self, name) for name in WINDOW_NONE}
        resolved = {k: defaults[k] if v is None else v for k, v in given.items()}
        if not resolved["step_window"]:
            resolved = dict(WINDOW_NONE)  # nothing is outside no window
        return dataclasses.replace(self, **resolved)

    @property
    def images_per_epoch(self) -> int:
        return self.sample_batch_size * self.sample_batches_per_epoch

    def resolved_lora_rank(self, latent: bool) -> int:
        """The LoRA rank actually used (0 = full fine-tuning) for a latent or pixel model."""
        if self.lora_rank is not None:
            return self.lora_rank
        return DEFAULT_LATENT_LORA_RANK if latent else 0

    @property
    def reward_spec(self) -> str | list[str]:
        """The env's ``reward`` argument: the one reward's spec, or the list of weighted ones."""
        return self.reward[0] if len(self.reward) == 1 else list(self.reward)

    @property
    def run_dir(self) -> Path:
        """``out``, else runs/ALGO-ESTIMATOR-REWARD[-MODEL]-seedSEED (MODEL: left out for the default model,
        else its name or folder name (an export's run name), so that runs on different models never share a
        folder)."""
        name = "+".join(self.reward).replace(":", "_")
        parts = Path(self.model).parts or ("model",)
        tag = parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]  # an export: its run's name
        model = "" if self.model == "default" else "-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", tag)
        algo = label(self.algo)
        return Path(self.out or f"runs/{algo}-{self.estimator}-{name}{model}-seed{self.seed}")

    @property
    def env_batch_size(self) -> int:
        """The vector env's num_envs: the oracle denoises (and backpropagates) one train batch at a time."""
        with_gradients = getattr(self.algorithm(), "samples_with_gradients", False)
        return self.train_batch_size if with_gradients else self.sample_batch_size

    def algo_options(self) -> dict[str, Any]:
        """``algo_option`` as a dict (values parsed as JSON where they parse, else kept as text).

        Raises:
            ValueError: an option without '=' or named twice.
        """
        return key_values(self.algo_option, "algo_option")

    def algorithm(self) -> type:
        """The algorithm class (``agents.algorithms.resolve_algorithm``: an import path is imported here)."""
        return resolve_algorithm(self.algo)

    def algo_config(self, sample_elements: int | None = None, cls: type | None = None) -> Any:
        """The algorithm's own config (``cls.config_class``): the shared options this config sets for the
        fields it has (PXPO's too, by name), then ``algo_option``.

        Args:
            sample_elements: C h w of the model's sample; with it, an algorithm whose ``default_clip_range``
                is 'elements' (DDPO) gets its clip range scaled for the element count (``ddpo_clip_range``).
            cls: the algorithm class; None resolves ``algo``.

        Raises:
            ValueError: an option the algorithm's config does not have, or a value it refuses.
        """
        cls = cls or self.algorithm()
        if getattr(cls, "samples_with_gradients", False) and self.kl_coef:
            raise ValueError(
                f"kl_coef={self.kl_coef} is a policy-gradient penalty; algo={self.algo!r} does not take it"
            )
        if getattr(cls, "samples_with_gradients", False) and (self.step_window or self.reuse_sampling_pass):
            # the window's default (None) is the algorithm's own: none for these
            raise ValueError(
                f"step_window={self.step_window} and reuse_sampling_pass={self.reuse_sampling_pass} shape a "
                f"policy-gradient epoch; algo={self.algo!r} backpropagates through its sampler and takes neither"
            )
        config_class = cls.config_class
        fields = {f.name for f in dataclasses.fields(config_class)}
        # A group is a buffer that holds exactly this epoch's group_size rewards of a context.
        values: dict[str, Any] = dict(
            estimator=self.estimator,
            adv_clip_max=self.adv_clip_max,
            stat_buffer_size=self.group_size or self.stat_buffer_size,
            stat_min_count=self.group_size or self.stat_min_count,
            pixel_std=self.pixel_std,
            image_advantage_weight=self.image_advantage_weight,
            credit=self.credit,
            credit_threshold=self.credit_threshold,
            check_scales=tuple(self.credit_check_scales),
            check_restore=self.credit_check_restore,
            check_drop=self.credit_check_drop,
            silent_kl_coef=self.silent_kl_coef,
            pinned_kl_coef=self.pinned_kl_coef,
            pin_band=self.pin_band,
            silent_mode=self.silent_mode,
            silent_test=self.silent_test,
        )
        if self.clip_range is not None:
            values["clip_range"] = self.clip_range
        elif getattr(cls, "default_clip_range", "fixed") == "elements" and sample_elements:
            values["clip_range"] = ddpo_clip_range(sample_elements)
        values = {k: v for k, v in values.items() if k in fields}
        options = self.algo_options()
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ValueError(
                f"algo_option {unknown} are not options of algo={self.algo!r}; it has {sorted(fields)}"
            )
        values.update(options)
        try:
            return config_class(**values)
        except TypeError as err:
            raise ValueError(
                f"algo={self.algo!r}: its options do not fit {config_class.__name__}: {err}"
            ) from err


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
    """``TrainConfig.reward`` in its one form: a tuple of specs, ('color',) when empty."""
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
    (docs/results.md, "Sample efficiency"). SD 1.5 at 512 px gets exactly 1e-4.
    """
    return DDPO_REFERENCE_CLIP * math.sqrt(DDPO_REFERENCE_ELEMENTS / sample_elements)


def make_envs(config: TrainConfig, num_envs: int | None = None, device: str | None = None):
    """The vector env a config trains on (``num_envs`` overrides its batch size, e.g. for evaluation or a
    rank's share of it; ``device`` the config's, e.g. a rank's own GPU)."""
    contexts = [int(c) if c.lstrip("-").isdigit() else c for c in config.contexts] or None
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=num_envs or config.env_batch_size,
        model=config.model,
        reward=config.reward_spec,
        reward_kwargs=json.loads(config.reward_kwargs),
        num_inference_steps=config.num_inference_steps,
        eta=config.eta,
        noise_level=config.noise_level,
        transition=config.transition,
        log_density=config.log_density,
        device=device or config.device,
        dtype=config.model_dtype,
        context=contexts,
        prompts=list(config.prompts) or None,
        resolution=config.resolution,
        decode_chunk_size=config.decode_chunk_size,
        held_pixels="off",  # a run starts from the weights: an export's pin is not part of them
    )


def check_envs(config: TrainConfig, envs: Any, ranks: int = 1) -> None:
    """Refuses an env whose schedule or batch size disagrees with the config, that is not in the default
    action and observation form the agents are written for, whose model cannot do the config's guidance,
    or whose contexts do not divide the config's groups."""
    core = envs.unwrapped
    wrappers = generic_wrappers(envs)
    if wrappers:
        raise ValueError(
            f"the agents act with noise predictions on the default observation: build the env without "
            f"generic-learner wrappers (action_mode='eps', no obs_* options), got {wrappers}"
        )
    flow = getattr(core.schedule, "transition", None)
    stochasticity = (
        [("noise_level", config.noise_level or DEFAULT_NOISE_LEVEL, core.schedule.noise_level)]
        + [("transition", config.transition, flow)]
        + [("log_density", config.log_density, core.schedule.log_density)]
        if flow is not None
        else [("eta", config.eta, core.schedule.eta)]
    )
    pairs = [
        *stochasticity,
        ("num_inference_steps", config.num_inference_steps, core.num_steps),
        (
            "train_batch_size" if config.algorithm().samples_with_gradients else "sample_batch_size",
            config.env_batch_size // ranks,
            core.num_envs,
        ),
    ]
    for name, want, got in pairs:
        if want != got:
            raise ValueError(f"config {name}={want} but the env has {got}: build the env from the config")
    if config.guidance_scale != 1 and core.loaded.null_context is None:
        raise ValueError(
            f"guidance_scale={config.guidance_scale} needs a model with a null context "
            "(pxpo_gym.json 'null_context'); use guidance_scale=1"
        )
    if config.group_size is not None:
        contexts = len(core.context_choices)
        if config.images_per_epoch != config.group_size * contexts:
            raise ValueError(
                f"group_size={config.group_size} needs {config.group_size} x {contexts} contexts = "
                f"{config.group_size * contexts} images per epoch, got {config.images_per_epoch} "
                "(sample_batch_size x sample_batches_per_epoch)"
            )


def autocast(mixed_precision: str, device: torch.device):
    """The autocast context of the policy's forward passes (one object, re-entered by every pass)."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
