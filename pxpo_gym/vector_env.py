"""The torch-native vector env: a batch of images being denoised in lock-step.

This file owns the MDP. The single env (``pxpo_gym.env``) is a numpy view of
this class with one env, so both share one implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from pxpo_gym.deprecation import renamed_keywords
from pxpo_gym.guidance import check_guidance, guided
from pxpo_gym.loading import load_model, read_metadata
from pxpo_gym.models import DEFAULT_MODEL_NAME, METADATA_FILE, LoadedModel, parse_dtype
from pxpo_gym.pinning import pinned_policy, read_pinned_pixels
from pxpo_gym.rewards import Reward, RewardFn, aggregator, make_reward
from pxpo_gym.samplers import sampler_for
from pxpo_gym.transition import StepTable, transition_step
from pxpo_gym.validation import check_actions, parse_device, parse_num_envs

ACTION_BOUND = 10.0
OLD_INFO_KEYS = {"coef_eps": "coef_model_output"}
"""The vector env's info keys kept under an old name ({old: new}, the same tensor); the single env and the
SB3 adapter leave them out (a copy per step)."""
"""Nominal bound of the action Box. Noise predictions of a model trained on N(0, I)
noise (and velocities, noise - x_0) lie far inside it; actions are not clipped to it."""


def run_sampler(
    run: dict[str, Any],
    num_inference_steps: int | None = None,
    eta: float | None = None,
    noise_level: float | None = None,
    transition: str | None = None,
    log_density: str | None = None,
) -> dict[str, Any]:
    """The sampler settings to build an env with: those given, and from ``run`` (an export's run config,
    ``pxpo_gym.json``'s ``run.config``; {} for other models) what was left out. The step count on its own;
    eta, noise_level, transition and log_density whole: the run's four where none is given, else none of
    them (half of one sampler mixed with half of another would be a sampler nobody chose). None values
    are the env's defaults."""
    steps = run.get("num_inference_steps", 20) if num_inference_steps is None else num_inference_steps
    settings = {"eta": eta, "noise_level": noise_level, "transition": transition, "log_density": log_density}
    if all(value is None for value in settings.values()):
        settings = {name: run.get(name) for name in settings}
    return {"num_inference_steps": steps, **settings}


def run_config(metadata: dict[str, Any], folder: str | None) -> dict[str, Any]:
    """An export's run settings (``pxpo_gym.json``'s ``run.config``; {} without them).

    Raises:
        ValueError: ``run`` or its ``config`` is not a JSON object (naming the file).
    """
    run = metadata.get("run", {})
    where = f"{str(Path(folder or '') / METADATA_FILE)!r}"
    if not isinstance(run, dict):
        raise ValueError(f"{where}: 'run' must be a JSON object, got {type(run).__name__}")
    config = run.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{where}: 'run'['config'] must be a JSON object, got {type(config).__name__}")
    return config


class DiffusionDenoiseVectorEnv(VectorEnv):
    """Denoising a batch of images with DDIM, one env per image, as a Gymnasium VectorEnv.

    ## Description
    Episode = the T-step DDIM reverse process of one image. At step k the
    state is x_t (t = ``timesteps[k]``); the agent's action is the model output, a noise
    prediction eps, and the env draws x_{t-1} = a_t x_t + b_t eps + sigma_t z
    (``pxpo_gym.transition``, coefficients from ``pxpo_gym.ddim``). Flow-matching models (a
    ``FlowMatchEulerDiscreteScheduler``, e.g. ``model="default-flow"``): the action is the velocity v
    and the step x_{sigma'} = a x + b v + s z is Flow-GRPO's SDE or CPS (``pxpo_gym.flow``);
    ``self.prediction`` says which ('eps' or 'velocity'), ``self.sampler`` is the sampler plug-in
    (``pxpo_gym.samplers``). After T steps the clean sample x_0 is decoded to an
    RGB image (identity for pixel models, the VAE for latent ones), scored per
    pixel at image resolution, and the episode terminates.

    ## Action space
    Box(-10, 10, (C, h, w), float32) per env: the model output itself. The
    bound is nominal (actions are not clipped). Actions must be finite, dense
    torch tensors of a floating dtype on ``device``, shape (num_envs, C, h, w).
    A bounded correction to the pretrained model instead (for generic
    learners) is the ``pxpo_gym.wrappers.ResidualAction`` wrapper.

    ## Observation space
    Dict of torch tensors on ``device`` (always copies of the env's state):
    ``sample`` (num_envs, C, h, w) float32 x_t; ``timestep`` (num_envs, 1) int64
    training-schedule timestep t (-1 once x_0 is reached; flow models: float32
    sigma x num_train_timesteps, what the model is called with); ``context``
    (num_envs, 1) int64 conditioning id (class label, or prompt index for text
    models). Picked, pooled, flattened or one-hot views (and ``step_index``)
    are the ``pxpo_gym.wrappers.ObservationView`` wrapper.

    ## Rewards
    0 until the last step; then the aggregate (mean by default) of the reward
    map. ``info["reward_map"]`` (num_envs, H, W) and ``info["image"]``
    (num_envs, 3, H, W) hold the terminal maps and images, with masks
    ``info["_reward_map"]``, ``info["_image"]`` marking which envs terminated.
    A weighted reward (``reward=["color:0.5", "segmentation:0.5"]``, see
    ``pxpo_gym.rewards.make_reward``) also gives ``info["reward_components"]``:
    {name: (num_envs,) aggregate of that component's map}.

    ## Transition coefficients
    Every step's info holds ``coef_sample``, ``coef_model_output`` and ``std_dev_t``
    (num_envs,) for the transition just taken (NaN for envs that were autoreset
    instead), and ``step_index`` (num_envs,) of the returned observation; with
    ``pxpo_gym.transition.step_log_prob`` they give log p(next sample | sample, action).
    ``coef_eps`` is the same tensor as ``coef_model_output`` under its old name, kept for
    existing code (deprecated).
    The full table is ``self.schedule``.

    ## Episode end
    ``terminated`` after exactly ``num_inference_steps`` steps; never truncated.
    Autoreset mode NEXT_STEP: the step after termination resets that env,
    ignores its action and returns its first observation with reward 0.
    ``reset(options={"reset_mask": mask})`` resets only the masked envs.

    ## Randomness
    Env i has its own torch generator, seeded with ``seed + i``; at reset it
    draws the context, x_T and the noise of all T steps. So env i of a vector
    env seeded s matches a single env seeded s + i. CPU runs are bitwise
    reproducible; CUDA generators give other (equally valid) numbers.

    ## Arguments
    num_envs: batch size. model: ``"default"``, a diffusers folder, a hub id or
    a ``LoadedModel``. reward: a built-in name, ``"module:function"``, a
    callable, or several with weights (``pxpo_gym.rewards``); reward_kwargs:
    options of a built-in (of several: keyed by reward name).
    num_inference_steps: T (default 20). eta: DDIM stochasticity in (0, 1]
    (default 1.0). noise_level, transition: flow-matching models only: the
    sampler's noise (default Flow-GRPO's 0.7) and ``"sde"`` (Flow-GRPO) or
    ``"cps"`` (coefficient-preserving); log_density: ``"gaussian"`` (exact) or,
    with ``"cps"``, ``"public"`` (the public CPS code's -(x - mean)^2, for parity;
    ``pxpo_gym.transition.LOG_DENSITIES``). On a run's export (``RUN/model``),
    num_inference_steps left out is the run's own, and so are eta, noise_level,
    transition and log_density when none of them is given, so the export samples
    as it trained. device, dtype: where and in what precision the model runs
    (the env's own math is float32). context: None (uniform over the model's
    contexts), an id or name (fixed), or a sequence of them (uniform over
    those); ``reset(options={"context": ...})`` overrides it per reset.
    reward_aggregate: "mean", "sum" or a callable (B, H, W) -> (B,).
    prompts: latent text-to-image pipelines only (required there): a list of
    prompts or a function returning one; context k is ``prompts[k]``
    (``self.prompts``), its embedding computed once and kept on ``device``.
    resolution: image size of a latent pipeline (default: an export's run's own, else the model's).
    decode_chunk_size: latent pipelines decode at most this many samples per VAE
    call at the terminal step (None: all at once).
    pinned_pixels: an export of a run that pinned pixels (``pxpo_gym.pinning``):
    ``"auto"`` applies its pin in ``policy()``, ``"off"`` samples the weights alone
    (the old keyword ``held_pixels`` still works, with a DeprecationWarning).
    guidance_scale: classifier-free guidance in ``policy()`` (>= 1; not 1 needs a
    model with a null context; default: an export's run's own, else 1). The env
    steps with whatever action it is given; this is how its own sampler acts.
    The generic-learner keywords of ``gym.make_vec`` (``action_mode``,
    ``residual_scale``, ``action_grid``, ``obs_*``) are applied as wrappers by
    ``pxpo_gym.wrappers.make_vector_env``; this class does not take them.

    ## Version history
    v0: first release.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    @renamed_keywords(held_pixels="pinned_pixels")
    def __init__(
        self,
        num_envs: int = 1,
        model: str | LoadedModel = DEFAULT_MODEL_NAME,
        reward: str | RewardFn | Reward | Sequence[Any] | dict[Any, float] = "color",
        reward_kwargs: dict[str, Any] | None = None,
        num_inference_steps: int | None = None,
        eta: float | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        context: int | str | Sequence[int | str] | None = None,
        reward_aggregate: str | Callable[[torch.Tensor], torch.Tensor] = "mean",
        prompts: Sequence[str] | str | Callable[[], Sequence[str]] | None = None,
        resolution: int | Sequence[int] | None = None,
        decode_chunk_size: int | None = None,
        noise_level: float | None = None,
        transition: str | None = None,
        log_density: str | None = None,
        pinned_pixels: str = "auto",
        guidance_scale: float | None = None,
    ) -> None:
        num_envs = parse_num_envs(num_envs)
        if pinned_pixels not in ("auto", "off"):
            raise ValueError(f"pinned_pixels must be 'auto' or 'off', got pinned_pixels={pinned_pixels!r}")
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype)
        if isinstance(model, LoadedModel):
            given = {"prompts": prompts, "resolution": resolution, "decode_chunk_size": decode_chunk_size}
            if any(value is not None for value in given.values()):
                raise ValueError(
                    f"{sorted(k for k, v in given.items() if v is not None)} are loading options: "
                    "pass them to load_model, not with an already loaded model"
                )
            self.loaded = model
        else:
            if resolution is None:  # a latent run's export samples at the run's resolution, as it trained
                # (0 in files written before the sectioned config means none)
                resolution = run_config(read_metadata(model), str(model)).get("resolution") or None
            self.loaded = load_model(model, self.device, self.dtype, prompts, resolution, decode_chunk_size)
        self.model = self.loaded.noise_model.requires_grad_(False)
        # an export's run settings: in the folder the user named (a LoRA export's weights live in its base)
        folder = self.loaded.source if Path(self.loaded.source).is_dir() else self.loaded.location
        metadata = read_metadata(folder) if folder else {}
        run = run_config(metadata, folder)
        self.pin = None
        """An export's pin (``pxpo_gym.pinning``): (mode, pinned, the model it was fine-tuned from), applied by
        ``policy()`` unless pinned_pixels='off'; None without one."""
        if folder and pinned_pixels == "auto":
            pin = read_pinned_pixels(folder, self.loaded.num_contexts, tuple(self.loaded.sample_shape[-2:]))
            if pin is not None:
                if not metadata.get("fine_tuned_from"):
                    raise ValueError(f"{folder!r} pins pixels but names no model it was fine-tuned from")
                self.pin = (*pin, str(metadata["fine_tuned_from"]))
        self._pin_base: Any = None
        given = guidance_scale is not None
        self.guidance_scale = check_guidance(
            guidance_scale if given else run.get("guidance_scale", 1.0),
            self.loaded.null_context,
            "guidance_scale"
            if given
            else f"guidance_scale (the run's own, in {str(Path(folder or '') / METADATA_FILE)!r})",
            repr(self.loaded.source),
        )
        """Classifier-free guidance in ``policy()`` (``pxpo_gym.guidance``): the keyword, else an export's run's
        own, else 1 (none). Actions passed to ``step`` are taken as they are."""
        settings = run_sampler(run, num_inference_steps, eta, noise_level, transition, log_density)
        self.sampler = sampler_for(self.loaded)
        """The sampler plug-in (``pxpo_gym.samplers``): DDIM for DDPM-family models, Flow-GRPO's SDE or CPS
        for flow-matching ones, or the one the ``LoadedModel`` names."""
        self.schedule: StepTable = self.sampler.build(
            self.loaded,
            settings["num_inference_steps"],
            self.device,
            eta=settings["eta"],
            noise_level=settings["noise_level"],
            transition=settings["transition"],
            log_density=settings["log_density"],
        )
        self.prediction = self.sampler.prediction
        """What the action is: the model's own output, a noise prediction ('eps', DDIM) or a velocity
        ('velocity', flow matching)."""
        if reward_kwargs is not None and not isinstance(reward_kwargs, dict):
            raise ValueError(
                f"reward_kwargs must be a dict of reward options, got reward_kwargs={reward_kwargs!r}"
            )
        self.reward_fn = make_reward(reward, **(reward_kwargs or {}))
        self.aggregate = aggregator(reward_aggregate)
        self.context_choices = self._parse_contexts(context, "context")
        self.num_envs = num_envs
        self.num_steps = self.schedule.num_steps

        channels, height, width = self.loaded.sample_shape
        num_train = int(self.loaded.scheduler.config.num_train_timesteps)
        self.single_observation_space = gym.spaces.Dict(
            {
                "sample": gym.spaces.Box(-np.inf, np.inf, (channels, height, width), np.float32),
                # What the model is called with (flow models: sigma x num_train_timesteps, a float).
                "timestep": self.sampler.timestep_space(num_train),
                "context": gym.spaces.Box(0, self.loaded.num_contexts - 1, (1,), np.int64),
            }
        )
        self.single_action_space = gym.spaces.Box(
            -ACTION_BOUND, ACTION_BOUND, (channels, height, width), np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        self._generators = [torch.Generator(device=self.device) for _ in range(num_envs)]
        for i, gen in enumerate(self._generators):
            gen.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]) + i)
        shape = (num_envs, channels, height, width)
        self._sample = torch.zeros(shape, device=self.device)
        self._noise = torch.zeros((num_envs, self.num_steps + 1, channels, height, width), device=self.device)
        self._step_index = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._context = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._autoreset = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._stochastic = torch.ones((num_envs, self.num_steps), dtype=torch.bool, device=self.device)
        """(num_envs, T): which of each env's steps add noise (reset option ``stochastic_steps``)."""
        self._all_stochastic = True
        """Whether every step of every env adds noise (decided at reset: no host sync in ``step``)."""
        self._has_reset = False
        self.reward_seconds = 0.0
        """Wall-clock seconds spent in the reward function so far (callers may reset it)."""
        self._check_reward()

    # -- construction helpers -------------------------------------------------

    def policy(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The env's own sampler as a policy for one batch of episodes: the model, guided at
        ``self.guidance_scale``, or for an export that pins pixels (``self.pin``) with them pinned to the model
        it was fine-tuned from (loaded on first use, guided alike), as training sampled: what
        ``run_policy(envs)`` draws."""
        null = self.loaded.null_context
        if self.pin is None:
            return guided(self.model, self.guidance_scale, null)
        mode, pinned, base = self.pin
        if self._pin_base is None:
            latent = self.loaded.is_latent
            self._pin_base = load_model(
                base,
                self.device,
                self.dtype,
                prompts=self.loaded.prompts,
                resolution=self.loaded.image_size if latent else None,
            )
            if tuple(self._pin_base.sample_shape) != tuple(self.loaded.sample_shape):
                raise ValueError(
                    f"the pin's base model {base!r} draws samples of shape {tuple(self._pin_base.sample_shape)}, "
                    f"the export {tuple(self.loaded.sample_shape)}"
                )
        base_model = self._pin_base.noise_model.requires_grad_(False)
        return pinned_policy(
            mode,
            guided(self.model, self.guidance_scale, null),
            guided(base_model, self.guidance_scale, null),
            pinned.to(self.device),
        )

    def _parse_contexts(self, context: Any, name: str) -> torch.Tensor:
        """Context spec -> (n,) int64 ids; None means every real context."""
        names = self.loaded.context_names
        if context is None:
            return torch.arange(len(names), device=self.device)
        scalar = isinstance(context, (int, float, str, np.integer, np.floating)) or np.ndim(context) == 0
        items = [context] if scalar else list(context)
        ids = []
        for item in items:
            if isinstance(item, str) and item in names:
                item = names.index(item)
            if (
                isinstance(item, bool)
                or not isinstance(item, (int, np.integer))
                or not 0 <= item < len(names)
            ):
                raise ValueError(
                    f"{name} must be a context id in [0, {len(names)}) or a name in {names}, got {item!r}"
                )
            ids.append(int(item))
        if not ids:
            raise ValueError(f"{name} must name at least one context, got {context!r}")
        return torch.tensor(ids, dtype=torch.int64, device=self.device)

    def _check_reward(self) -> None:
        """Calls the reward once on a grey image so a broken reward fails at construction."""
        grey = torch.full((1, 3, *self.loaded.image_size), 0.5, device=self.device)
        self.reward_fn(grey, self.context_choices[:1])

    # -- the MDP --------------------------------------------------------------

    def _observation(self) -> dict[str, torch.Tensor]:
        """The batched observation: new tensors, so editing one never edits the env."""
        done = self._step_index >= self.num_steps
        return {
            "sample": self._sample.clone(),
            "timestep": torch.where(done, -1, self.current_timesteps())[:, None],  # (B, 1)
            "context": self._context[:, None].clone(),  # (B, 1)
        }

    def _reset_envs(
        self,
        mask: torch.Tensor,
        contexts: torch.Tensor | None,
        noise: torch.Tensor | None = None,
        stochastic: torch.Tensor | None = None,
    ) -> None:
        """Draws context, x_T and all step noise for the envs in ``mask`` from their generators
        (or takes the given (num_envs, T + 1, C, h, w) ``noise``, leaving the generators untouched); their
        steps are stochastic where the (T,) bool ``stochastic`` says (None: every step)."""
        shape = self._noise.shape[1:]  # (T + 1, C, h, w)
        for i in mask.nonzero().flatten().tolist():  # one generator per env, at reset only
            gen = self._generators[i]
            if contexts is None:
                pick = torch.randint(len(self.context_choices), (1,), generator=gen, device=self.device)
                self._context[i] = self.context_choices[pick[0]]
            else:
                self._context[i] = contexts[i]
            self._noise[i] = (
                torch.randn(shape, generator=gen, device=self.device) if noise is None else noise[i]
            )
        if bool(mask.all()):
            # A full reset keeps no link to the previous episodes (an autograd graph
            # through them, when a caller differentiates the chain, must not survive it).
            self._sample = self._noise[:, 0].clone()
        else:
            self._sample = torch.where(mask[:, None, None, None], self._noise[:, 0], self._sample)
        self._step_index = torch.where(mask, 0, self._step_index)
        self._autoreset = self._autoreset & ~mask
        steps = (
            torch.ones(self.num_steps, dtype=torch.bool, device=self.device)
            if stochastic is None
            else stochastic
        )
        self._stochastic = torch.where(mask[:, None], steps, self._stochastic)
        self._all_stochastic = (stochastic is None and self._all_stochastic) or bool(self._stochastic.all())

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Starts new episodes.

        Args:
            seed: int (env i gets seed + i) or one seed per env; None keeps the generators' state.
            options: ``{"context": id, name or one per env, "reset_mask": (num_envs,) bool,
                "noise": (num_envs, T + 1, C, h, w) float, "stochastic_steps": (T,) bool}``. ``noise``
                gives each env's episode noise itself (x_T first, then each step's), e.g. to share a
                prefix between envs or replay an episode; the generators are then not drawn.
                ``stochastic_steps`` says which steps of the new episodes add noise; the others take the
                sampler's deterministic step (DDIM at eta 0, the flow's Euler step; their ``std_dev_t`` is
                0 and they have no likelihood), as Flow-GRPO-Fast samples outside its trained steps. Left
                out, and for episodes an autoreset starts: every step is stochastic. The noise is drawn alike
                either way.

        Returns:
            (observation, info) with ``info["step_index"]``.
        """
        options = dict(options or {})
        allowed = ("context", "reset_mask", "noise", "stochastic_steps")
        unknown = set(options) - set(allowed)
        if unknown:
            raise ValueError(
                f"options has unknown keys {sorted(unknown)}; allowed: {', '.join(map(repr, allowed))}"
            )
        mask = self._parse_reset_mask(options.get("reset_mask"))
        contexts = self._parse_reset_contexts(options.get("context"))
        noise = self._parse_reset_noise(options.get("noise"))
        stochastic = self._parse_stochastic_steps(options.get("stochastic_steps"))
        seeds = self._parse_seed(seed)
        if seeds is not None:
            for gen, s in zip(self._generators, seeds):
                gen.manual_seed(s)
        self._reset_envs(mask, contexts, noise, stochastic)
        self._has_reset = True
        return self._observation(), {"step_index": self._step_index.clone()}

    def _bool_option(self, value: Any, name: str, length: int) -> torch.Tensor:
        """``options[name]`` -> a (length,) bool tensor on the device, or a ValueError naming the option."""
        try:
            mask = torch.as_tensor(value, device=self.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"options[{name!r}] must be a bool array of shape ({length},), got {value!r}"
            ) from err
        if mask.shape != (length,) or mask.dtype != torch.bool:
            raise ValueError(
                f"options[{name!r}] must be a bool array of shape ({length},), "
                f"got dtype {mask.dtype} shape {tuple(mask.shape)}"
            )
        return mask

    def _parse_reset_mask(self, reset_mask: Any) -> torch.Tensor:
        """``options['reset_mask']`` -> (num_envs,) bool tensor; all True if None."""
        if reset_mask is None:
            return torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        mask = self._bool_option(reset_mask, "reset_mask", self.num_envs)
        if not self._has_reset and not bool(mask.all()):
            raise ValueError("the first reset must reset every env: drop options['reset_mask']")
        return mask

    def _parse_stochastic_steps(self, steps: Any) -> torch.Tensor | None:
        """``options['stochastic_steps']`` -> (T,) bool tensor on the device (one per step), or None (every
        step)."""
        return None if steps is None else self._bool_option(steps, "stochastic_steps", self.num_steps)

    def _parse_reset_noise(self, noise: Any) -> torch.Tensor | None:
        """``options['noise']`` -> (num_envs, T + 1, C, h, w) float32 on the device, or None."""
        if noise is None:
            return None
        shape = tuple(self._noise.shape)
        if (
            not isinstance(noise, torch.Tensor)
            or tuple(noise.shape) != shape
            or not noise.is_floating_point()
        ):
            got = f"{type(noise).__name__} {tuple(getattr(noise, 'shape', ()))}"
            raise ValueError(
                f"options['noise'] must be a float tensor of shape {shape} (num_envs, T + 1, C, h, w), got {got}"
            )
        if not bool(torch.isfinite(noise).all()):
            raise ValueError("options['noise'] contains NaN or inf")
        return noise.to(device=self.device, dtype=torch.float32)

    def _parse_reset_contexts(self, context: Any) -> torch.Tensor | None:
        """``options['context']`` -> (num_envs,) int64 ids, or None to sample them."""
        if context is None:
            return None
        if isinstance(context, torch.Tensor):
            context = context.reshape(-1).tolist()
        ids = self._parse_contexts(context, "options['context']")
        if ids.numel() not in (1, self.num_envs):
            raise ValueError(f"options['context'] must be one context or {self.num_envs}, got {ids.numel()}")
        return ids.expand(self.num_envs)

    def _parse_seed(self, seed: int | Sequence[int] | None) -> list[int] | None:
        """Validates every seed before any generator is touched: ints (numpy ints too) with
        each env's seed in [0, 2**64 - 1]."""
        if seed is None:
            return None
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        elif isinstance(seed, (str, bytes, float, bool, np.floating, np.bool_)) or np.ndim(seed) != 1:
            raise ValueError(f"seed must be an int or a sequence of {self.num_envs} ints, got seed={seed!r}")
        else:
            items = list(seed)
            if len(items) != self.num_envs or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in items
            ):
                raise ValueError(f"seed must be an int or {self.num_envs} ints, got seed={seed!r}")
            seeds = [int(s) for s in items]
        bad = [s for s in seeds if not 0 <= s < 2**64]
        if bad:
            raise ValueError(
                f"seed={seed!r} gives env seeds outside [0, 2**64 - 1] (env i gets seed + i): {bad[:3]}"
            )
        return seeds

    def check_action(self, actions: Any) -> torch.Tensor:
        """Validates a batch of actions (model outputs; ``check_actions``); returns it as float32."""
        return check_actions(actions, (self.num_envs, *self.single_action_space.shape), self.device)

    def step(
        self, actions: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Applies one sampler step per env with the given actions (model outputs).

        Args:
            actions: (num_envs, C, h, w) floating tensor on ``device``.

        Returns:
            (observation, reward (B,) float32, terminated (B,) bool, truncated (B,) bool, info).

        Raises:
            RuntimeError: before the first reset.
            TypeError, ValueError: bad actions or a reward that returns bad values;
                the env's state is then unchanged.
        """
        if not self._has_reset:
            raise RuntimeError("call reset() before step()")
        action = self.check_action(actions)
        active = ~self._autoreset  # envs that take a step; the rest autoreset
        index = self._step_index.clamp(max=self.num_steps - 1)
        if self._all_stochastic:
            coeffs = self.schedule.at(index)
        else:
            coeffs = self.schedule.at(
                index, self._stochastic[torch.arange(self.num_envs, device=self.device), index]
            )
        noise = self._noise[torch.arange(self.num_envs, device=self.device), index + 1]  # (B, C, h, w)
        new_sample = transition_step(self._sample, action, coeffs, noise)
        new_sample = torch.where(active[:, None, None, None], new_sample, self._sample)
        new_index = torch.where(active, self._step_index + 1, self._step_index)
        terminated = active & (new_index == self.num_steps)

        rewards = torch.zeros(self.num_envs, device=self.device)
        info: dict[str, Any] = {}
        if bool(terminated.any()):
            done = terminated.nonzero().flatten()
            images = self.loaded.decode(new_sample[done])  # (n, 3, H, W)
            started = time.perf_counter()
            reward_map, components = self.reward_fn.parts(images, self._context[done])  # (n, H, W), checked
            self.reward_seconds += time.perf_counter() - started
            rewards[done] = self.aggregate(reward_map).float()
            full_map = torch.zeros((self.num_envs, *reward_map.shape[1:]), device=self.device)
            full_map[done] = reward_map
            full_images = torch.zeros((self.num_envs, *images.shape[1:]), device=self.device)
            full_images[done] = images
            info.update(reward_map=full_map, _reward_map=terminated, image=full_images, _image=terminated)
            if components:  # a weighted reward: each component's aggregate too
                parts = {}
                for name, part in components.items():
                    parts[name] = torch.zeros(self.num_envs, device=self.device)
                    parts[name][done] = self.aggregate(part).float()
                info.update(reward_components=parts, _reward_components=terminated)

        # Commit only now: every check above has passed.
        reset_now = self._autoreset.clone()
        self._sample, self._step_index = new_sample, new_index
        self._autoreset = terminated
        if bool(reset_now.any()):
            self._reset_envs(reset_now, None)
        nan = torch.full_like(coeffs.coef_sample, float("nan"))
        info.update(
            step_index=self._step_index.clone(),
            coef_sample=torch.where(active, coeffs.coef_sample, nan),
            coef_model_output=torch.where(active, coeffs.coef_model_output, nan),
            std_dev_t=torch.where(active, coeffs.std_dev_t, nan),
        )
        for old, new in OLD_INFO_KEYS.items():  # the old names (deprecated), for existing code
            info[old] = info[new]
        truncated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self._observation(), rewards, terminated, truncated, info

    def get_rng_state(self) -> list[torch.Tensor]:
        """Each env's generator state (CPU uint8 tensors), for exact checkpoints."""
        return [gen.get_state() for gen in self._generators]

    def set_rng_state(self, states: Sequence[torch.Tensor]) -> None:
        """Restores generator states from ``get_rng_state``.

        Raises:
            ValueError: not one state per env.
        """
        if len(states) != self.num_envs:
            raise ValueError(f"need {self.num_envs} generator states, got {len(states)}")
        for gen, state in zip(self._generators, states):
            gen.set_state(state)

    @property
    def prompts(self) -> tuple[str, ...] | None:
        """The prompt of each context id for text-to-image pipelines (None for class-conditional models)."""
        return self.loaded.prompts

    def current_sample(self) -> torch.Tensor:
        """Every env's current x_t at full resolution (B, C, h, w), a copy."""
        return self._sample.clone()

    def current_step_index(self) -> torch.Tensor:
        """(B,) int64: the step each env is at, in [0, T] (T once x_0 is reached)."""
        return self._step_index.clone()

    def current_timesteps(self) -> torch.Tensor:
        """(B,) int64: the training-schedule timestep of each env's next step (the last one's at x_0)."""
        return self.schedule.timesteps[self._step_index.clamp(max=self.num_steps - 1)]

    def current_contexts(self) -> torch.Tensor:
        """(B,) int64: each env's context id."""
        return self._context.clone()

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        """Sample (B, C, h, w) -> RGB images (B, 3, H, W) in [0, 1]."""
        return self.loaded.decode(sample)
