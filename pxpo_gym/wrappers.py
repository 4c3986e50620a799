"""Views of the env for generic learners: residual actions and observation options, as Gymnasium wrappers.

The MDP (``DiffusionDenoiseVectorEnv``) acts with full model outputs (noise
predictions, or a flow model's velocities) and observes ``sample``, ``timestep`` and ``context``. A generic RL algorithm that
starts from a random policy does better with a bounded correction to the
pretrained model and a smaller observation; these wrappers provide both,
composed the way Gymnasium composes ``TransformAction`` and
``FlattenObservation``:

    envs = ObservationView(ResidualAction(gym.make_vec("DiffusionDenoise-v0", num_envs=16),
                                          action_grid=1), downscale=4, flatten=True)

Vector wrappers (torch, batched) and single-env ones (numpy) share the same
pure functions, ``residual_action`` and ``view_observation``. ``gym.make`` and
``gym.make_vec`` keep the keywords (``action_mode``, ``residual_scale``,
``action_grid``, ``obs_keys``, ``obs_downscale``, ``obs_flatten``,
``obs_one_hot_context``) as a convenience that applies them
(``make_vector_env``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorActionWrapper, VectorObservationWrapper
from gymnasium.vector.utils import batch_space

from pxpo_gym.deprecation import moved_names, warn_renamed
from pxpo_gym.loading import size_pair
from pxpo_gym.validation import check_actions
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv

DEFAULT_RESIDUAL_SCALE = 0.25
"""Default ``residual_scale``: a quarter of a unit-variance model output.
On the default model a constant full-range correction (every element +-1)
already moves the colour reward from 0.41 to 1.0, while uniformly random
actions leave it near the pretrained sampler's (measured: 0.41 -> 0.41)."""
OBS_KEYS = ("sample", "timestep", "context", "step_index")
DEFAULT_OBS_KEYS = ("sample", "timestep", "context")
ACTION_MODES = ("model_output", "residual")
"""``action_mode``: the action is the model output itself ('model_output': a noise prediction, or a flow
model's velocity; 'eps' is its old name, deprecated) or a bounded correction to the pretrained model's
('residual', ``ResidualAction``)."""
GENERIC_OPTIONS = (
    "action_mode",
    "residual_scale",
    "action_grid",
    "obs_keys",
    "obs_downscale",
    "obs_flatten",
    "obs_one_hot_context",
)
"""The ``gym.make`` keywords that ``make_vector_env`` turns into wrappers."""


def _core(env: Any) -> DiffusionDenoiseVectorEnv:
    core = env.unwrapped
    if isinstance(core, gym.Env) and hasattr(core, "core"):  # the single env's vector core
        core = core.core
    if not isinstance(core, DiffusionDenoiseVectorEnv):
        raise TypeError(f"expected a DiffusionDenoise-v0 env, got {type(core).__name__}")
    return core


# -- the pure functions both kinds of wrapper use -------------------------------------


def parse_residual_options(core: DiffusionDenoiseVectorEnv, residual_scale: Any, action_grid: Any) -> tuple:
    """(scale, (gh, gw)) or a ValueError naming the bad argument."""
    _, height, width = core.loaded.sample_shape
    is_number = isinstance(residual_scale, (int, float, np.integer, np.floating)) and not isinstance(
        residual_scale, (bool, np.bool_)
    )
    if not (is_number and math.isfinite(residual_scale) and residual_scale > 0):
        raise ValueError(f"residual_scale must be a positive float, got residual_scale={residual_scale!r}")
    grid = (height, width) if action_grid is None else size_pair(action_grid)
    if grid is None or height % grid[0] or width % grid[1]:
        raise ValueError(
            f"action_grid must be an int or (h, w) pair of positive ints dividing the sample's "
            f"({height}, {width}), got action_grid={action_grid!r}"
        )
    return float(residual_scale), grid


def residual_action(core: DiffusionDenoiseVectorEnv, actions: torch.Tensor, scale: float) -> torch.Tensor:
    """The env's action from a residual one: model(x_t, t, c) + scale * up(clip(a, -1, 1)), the pretrained
    model's output plus the correction, a (B, C, gh, gw) -> (B, C, h, w).

    ``up`` repeats each cell of the (gh, gw) grid over its (h/gh, w/gw) block.
    """
    sample = core.current_sample()
    with torch.no_grad():
        base = core.model(sample, core.current_timesteps(), core.current_contexts())
    block_h = sample.shape[2] // actions.shape[2]
    block_w = sample.shape[3] // actions.shape[3]
    correction = actions.clamp(-1.0, 1.0).repeat_interleave(block_h, 2).repeat_interleave(block_w, 3)
    return base + scale * correction


def parse_view_options(
    core: DiffusionDenoiseVectorEnv, keys: Any, downscale: Any, flatten: Any, one_hot: Any
) -> tuple[tuple[str, ...], int, bool, bool]:
    """(keys, downscale, flatten, one_hot) or a ValueError naming the bad argument."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys or len(set(keys)) != len(keys) or not set(keys) <= set(OBS_KEYS):
        raise ValueError(
            f"obs_keys must be distinct names from {OBS_KEYS} (at least one), got obs_keys={keys!r}"
        )
    _, height, width = core.loaded.sample_shape
    if (
        isinstance(downscale, (bool, np.bool_))
        or not isinstance(downscale, (int, np.integer))
        or downscale < 1
        or height % downscale
        or width % downscale
    ):
        raise ValueError(
            f"obs_downscale must be a positive int dividing the sample's height and width "
            f"({height}, {width}), got obs_downscale={downscale!r}"
        )
    for name, value in (("obs_flatten", flatten), ("obs_one_hot_context", one_hot)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {name}={value!r}")
    return keys, int(downscale), flatten, one_hot


def view_space(
    core: DiffusionDenoiseVectorEnv, keys, downscale: int, flatten: bool, one_hot: bool
) -> gym.spaces.Dict:
    """The unbatched observation space of a view."""
    channels, height, width = core.loaded.sample_shape
    spaces = {}
    for key in keys:
        if key == "sample":
            shape = (channels, height // downscale, width // downscale)
            spaces[key] = gym.spaces.Box(
                -np.inf, np.inf, (math.prod(shape),) if flatten else shape, np.float32
            )
        elif key == "timestep":
            spaces[key] = core.single_observation_space["timestep"]
        elif key == "step_index":
            spaces[key] = gym.spaces.Box(0, core.num_steps, (1,), np.int64)
        elif one_hot:
            spaces[key] = gym.spaces.Box(0.0, 1.0, (core.loaded.num_contexts,), np.float32)
        else:
            spaces[key] = core.single_observation_space["context"]
    return gym.spaces.Dict(spaces)


def view_observation(
    obs: dict[str, torch.Tensor],
    step_index: torch.Tensor,
    num_contexts: int,
    keys: Sequence[str],
    downscale: int,
    flatten: bool,
    one_hot: bool,
) -> dict[str, torch.Tensor]:
    """The core's batched observation -> the view's (new tensors: editing them never edits the env).

    Args:
        obs: ``sample`` (B, C, h, w), ``timestep`` (B, 1), ``context`` (B, 1).
        step_index: (B,) int64, the step each env is at.
    """
    out = {}
    for key in keys:
        if key == "sample":
            sample = obs["sample"]
            if downscale > 1:
                sample = torch.nn.functional.avg_pool2d(sample, downscale)  # (B, C, h/k, w/k)
            out[key] = sample.flatten(1).clone() if flatten else sample.clone()
        elif key == "step_index":
            out[key] = step_index[:, None].clone()  # (B, 1)
        elif key == "context" and one_hot:
            out[key] = torch.nn.functional.one_hot(obs["context"][:, 0], num_contexts).float()
        else:
            out[key] = obs[key].clone()
    return out


@dataclass(frozen=True)
class View:
    """A parsed observation view: what both observation wrappers apply."""

    keys: tuple[str, ...]
    downscale: int
    flatten: bool
    one_hot_context: bool

    @classmethod
    def parse(
        cls, core: DiffusionDenoiseVectorEnv, keys: Any, downscale: Any, flatten: Any, one_hot: Any
    ) -> View:
        return cls(*parse_view_options(core, keys, downscale, flatten, one_hot))

    def space(self, core: DiffusionDenoiseVectorEnv) -> gym.spaces.Dict:
        return view_space(core, self.keys, self.downscale, self.flatten, self.one_hot_context)

    def apply(self, core: DiffusionDenoiseVectorEnv, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        step_index = core.current_step_index().to(obs["sample"].device)
        return view_observation(
            obs,
            step_index,
            core.loaded.num_contexts,
            self.keys,
            self.downscale,
            self.flatten,
            self.one_hot_context,
        )


# -- vector wrappers (torch) ------------------------------------------------------------


class ResidualAction(VectorActionWrapper):
    """Acts with a bounded correction to the frozen pretrained model's output.

    Action space: Box(-1, 1, (C, gh, gw), float32) per env; the env's action is
    model(x_t, t, c) + residual_scale * up(clip(a, -1, 1)), where ``up``
    repeats each cell of the (gh, gw) ``action_grid`` over its block of the
    sample (the sample's own grid by default; 1 gives one value per channel).
    A zero action is exactly the pretrained sampler.

    Args:
        env: a ``DiffusionDenoise-v0`` vector env (or a wrapper of one).
        residual_scale: > 0 (default 0.25).
        action_grid: an int or (gh, gw) dividing the sample's (h, w); None: (h, w).
    """

    def __init__(
        self, env: Any, residual_scale: float = DEFAULT_RESIDUAL_SCALE, action_grid: Any = None
    ) -> None:
        super().__init__(env)
        self.core = _core(env)
        self.residual_scale, self.action_grid = parse_residual_options(self.core, residual_scale, action_grid)
        channels = self.core.loaded.sample_shape[0]
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (channels, *self.action_grid), np.float32)
        self.action_space = batch_space(self.single_action_space, self.core.num_envs)

    def check_action(self, actions: Any) -> torch.Tensor:
        """Validates a batch of corrections (shape, dtype, layout, device, finiteness)."""
        return check_actions(actions, (self.core.num_envs, *self.single_action_space.shape), self.core.device)

    def actions(self, actions: Any) -> torch.Tensor:
        return residual_action(self.core, self.check_action(actions), self.residual_scale)


class ObservationView(VectorObservationWrapper):
    """Picks, pools, flattens and one-hot-encodes the observation.

    Args:
        env: a ``DiffusionDenoise-v0`` vector env (or a wrapper of one).
        keys: names from ``OBS_KEYS`` in the order wanted; ``step_index`` is (1,) int64 in [0, T].
        downscale: area-pool the sample by this factor (dividing h and w).
        flatten: give the sample as a vector.
        one_hot_context: give the context as a float32 one-hot vector.
    """

    def __init__(
        self,
        env: Any,
        keys: Sequence[str] = DEFAULT_OBS_KEYS,
        downscale: int = 1,
        flatten: bool = False,
        one_hot_context: bool = False,
    ) -> None:
        super().__init__(env)
        self.core = _core(env)
        self.view = View.parse(self.core, keys, downscale, flatten, one_hot_context)
        self.single_observation_space = self.view.space(self.core)
        self.observation_space = batch_space(self.single_observation_space, self.core.num_envs)

    def observations(self, observations: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.view.apply(self.core, observations)


# -- single-env wrappers (numpy) --------------------------------------------------------


class SingleResidualAction(gym.ActionWrapper):
    """``ResidualAction`` for the single numpy env: a (C, gh, gw) float array in [-1, 1]."""

    def __init__(
        self, env: gym.Env, residual_scale: float = DEFAULT_RESIDUAL_SCALE, action_grid: Any = None
    ) -> None:
        super().__init__(env)
        self.core = _core(env)
        self.residual_scale, self.action_grid = parse_residual_options(self.core, residual_scale, action_grid)
        channels = self.core.loaded.sample_shape[0]
        self.action_space = gym.spaces.Box(-1.0, 1.0, (channels, *self.action_grid), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action)
        if not np.issubdtype(action.dtype, np.floating):
            raise TypeError(f"action must have a floating dtype, got dtype={action.dtype}")
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got shape {action.shape}")
        batch = check_actions(
            torch.as_tensor(action, device=self.core.device)[None], (1, *action.shape), self.core.device
        )
        return residual_action(self.core, batch, self.residual_scale)[0].cpu().numpy()


class SingleObservationView(gym.ObservationWrapper):
    """``ObservationView`` for the single numpy env (same arguments)."""

    def __init__(
        self,
        env: gym.Env,
        keys: Sequence[str] = DEFAULT_OBS_KEYS,
        downscale: int = 1,
        flatten: bool = False,
        one_hot_context: bool = False,
    ) -> None:
        super().__init__(env)
        self.core = _core(env)
        self.view = View.parse(self.core, keys, downscale, flatten, one_hot_context)
        self.observation_space = self.view.space(self.core)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = {k: torch.as_tensor(v)[None] for k, v in observation.items()}  # (1, ...) each
        return {k: v[0].numpy() for k, v in self.view.apply(self.core, batch).items()}


# -- the gym.make convenience -------------------------------------------------------------


def split_generic_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the core's keyword arguments, the generic-learner options among them)."""
    options = {k: kwargs[k] for k in GENERIC_OPTIONS if k in kwargs}
    return {k: v for k, v in kwargs.items() if k not in GENERIC_OPTIONS}, options


def _validate_mode(options: dict[str, Any]) -> str:
    mode = options.get("action_mode", "model_output")
    if isinstance(mode, str) and mode == "eps":
        warn_renamed("action_mode='eps'", "action_mode='model_output'")
        mode = "model_output"
    if not isinstance(mode, str) or mode not in ACTION_MODES:
        raise ValueError(f"action_mode must be one of {ACTION_MODES}, got action_mode={mode!r}")
    if mode == "model_output" and ("action_grid" in options or "residual_scale" in options):
        given = "action_grid" if "action_grid" in options else "residual_scale"
        raise ValueError(
            f"{given}={options[given]!r} needs action_mode='residual' (a 'model_output' action is the full "
            "model output)"
        )
    return mode


def wrap_vector(envs: Any, options: dict[str, Any]) -> Any:
    """Applies the generic-learner ``options`` (``GENERIC_OPTIONS`` keywords) as wrappers."""
    if _validate_mode(options) == "residual":
        envs = ResidualAction(
            envs, options.get("residual_scale", DEFAULT_RESIDUAL_SCALE), options.get("action_grid")
        )
    view = _view_kwargs(options)
    return ObservationView(envs, **view) if view else envs


def _view_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    names = {
        "obs_keys": "keys",
        "obs_downscale": "downscale",
        "obs_flatten": "flatten",
        "obs_one_hot_context": "one_hot_context",
    }
    return {names[k]: v for k, v in options.items() if k in names}


def make_vector_env(**kwargs: Any) -> Any:
    """``gym.make_vec("DiffusionDenoise-v0", ...)``'s entry point: the core, wrapped as the keywords ask."""
    core_kwargs, options = split_generic_options(kwargs)
    options["action_mode"] = _validate_mode(options)  # before the (slow) model load; an old name warns once
    return wrap_vector(DiffusionDenoiseVectorEnv(**core_kwargs), options)


def generic_wrappers(env: Any) -> list[str]:
    """Names of the generic-learner wrappers around ``env`` (outermost first)."""
    found = []
    while hasattr(env, "env"):
        if isinstance(env, (ResidualAction, ObservationView, SingleResidualAction, SingleObservationView)):
            found.append(type(env).__name__)
        env = env.env
    return found


__getattr__ = moved_names(__name__, {"residual_eps": "pxpo_gym.wrappers:residual_action"})
