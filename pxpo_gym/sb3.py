"""Stable-Baselines3 adapter: the torch vector env as an SB3 ``VecEnv``.

SB3 algorithms talk numpy and expect an env that resets itself in the step
that ends an episode (the last observation travels in
``info["terminal_observation"]``). ``DiffusionDenoiseVectorEnv`` is torch-native
with Gymnasium's NEXT_STEP autoreset, so this adapter converts at the boundary
and resets the finished envs (a masked partial reset) inside that same step.
Because the partial reset draws from each env's own generator exactly as the
NEXT_STEP autoreset would, an adapter run visits the same episodes as the
vector env run under the same seed.

    from pxpo_gym.sb3 import make_sb3_env
    venv = make_sb3_env(num_envs=16, action_mode="residual", action_grid=1)
    PPO("MultiInputPolicy", venv).learn(10_000)

Needs the ``sb3`` extra (``pip install "pxpo-gym[sb3]"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

try:
    from stable_baselines3.common.vec_env import VecEnv
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'pxpo_gym.sb3 needs Stable-Baselines3: pip install "pxpo-gym[sb3]" (or stable-baselines3>=2.3)'
    ) from err

from pxpo_gym.vector_env import OLD_INFO_KEYS, DiffusionDenoiseVectorEnv
from pxpo_gym.wrappers import ResidualAction


def _outermost_action_checker(envs: Any):
    """The ``check_action`` of whatever defines the actions ``envs.step`` takes."""
    while not isinstance(envs, (ResidualAction, DiffusionDenoiseVectorEnv)):
        envs = envs.env
    return envs.check_action


class SB3VecEnv(VecEnv):
    """SB3 view of a ``DiffusionDenoiseVectorEnv`` (numpy in and out, same-step reset).

    Actions are presented as Box(-1, 1) float32 of the env's action shape and
    mapped linearly onto the env's own bounds inside (identity under the
    ``ResidualAction`` wrapper, ``action_mode="residual"``; the model output = 10 a otherwise). Bad actions
    (wrong shape, NaN or inf) raise the env's errors at ``step_async``.

    Per-env infos hold ``step_index`` and the transition coefficients
    (``coef_sample``, ``coef_model_output``, ``std_dev_t``); an env whose episode ended
    also holds ``terminal_observation``, ``reward_map`` (H, W), ``image``
    (3, H, W) and ``TimeLimit.truncated`` (always False: episodes only terminate).
    """

    def __init__(self, envs: Any, render_mode: str | None = None) -> None:
        core = getattr(envs, "unwrapped", envs)
        if not isinstance(core, DiffusionDenoiseVectorEnv):
            raise TypeError(
                "envs must be a DiffusionDenoiseVectorEnv (e.g. gym.make_vec('DiffusionDenoise-v0', ...)), "
                f"got {type(envs).__name__}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got render_mode={render_mode!r}")
        self.envs = envs
        self.core = core
        self.render_mode = render_mode
        self._checker = _outermost_action_checker(envs)
        space = envs.single_action_space
        low = torch.as_tensor(space.low, device=core.device)
        high = torch.as_tensor(space.high, device=core.device)
        self._mid, self._half = (high + low) / 2, (high - low) / 2  # exact for [-1, 1]: 0 and 1
        action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        super().__init__(core.num_envs, envs.single_observation_space, action_space)
        self._actions: torch.Tensor | None = None

    # -- numpy <-> torch ------------------------------------------------------

    def _scale(self, actions: np.ndarray) -> torch.Tensor:
        """[-1, 1] numpy actions -> the env's own range, as a tensor on its device."""
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        actions = np.asarray(actions)
        if not np.issubdtype(actions.dtype, np.floating):
            raise TypeError(f"actions must have a floating dtype, got dtype={actions.dtype}")
        tensor = torch.as_tensor(actions, dtype=torch.float32, device=self.core.device)
        want = (self.num_envs, *self.action_space.shape)
        if tuple(tensor.shape) != want:
            raise ValueError(f"actions must have shape {want}, got shape {tuple(tensor.shape)}")
        return self._mid + self._half * tensor

    @staticmethod
    def _numpy(obs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {key: value.detach().cpu().numpy() for key, value in obs.items()}

    # -- VecEnv API -----------------------------------------------------------

    def reset(self) -> dict[str, np.ndarray]:
        seeds = None if all(s is None for s in self._seeds) else self._seeds
        if seeds is not None and any(s is None for s in seeds):
            raise ValueError(f"seed every env or none, got seeds {seeds}")
        obs, _ = self.envs.reset(seed=seeds, options=self._merged_options())
        self._reset_seeds()
        self._reset_options()
        return self._numpy(obs)

    def _merged_options(self) -> dict[str, Any] | None:
        """SB3's per-env option dicts -> one options dict for the vector env."""
        if all(not opts for opts in self._options):
            return None
        keys = {key for opts in self._options for key in opts}
        if keys != {"context"} or any("context" not in opts for opts in self._options):
            raise ValueError(
                "set_options supports only {'context': ...} given for every env (or for all at once), "
                f"got {self._options}"
            )
        contexts = [opts["context"] for opts in self._options]
        return {"context": contexts[0] if all(c == contexts[0] for c in contexts) else contexts}

    def step_async(self, actions: np.ndarray) -> None:
        scaled = self._scale(actions)
        self._actions = self._checker(scaled)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.envs.step(actions)
        dones = terminated | truncated
        infos = self._infos(info)
        if bool(dones.any()):
            final = self._numpy(obs)
            for i in dones.nonzero().flatten().tolist():
                infos[i]["terminal_observation"] = {key: value[i] for key, value in final.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs, _ = self.envs.reset(options={"reset_mask": dones})
        return (
            self._numpy(obs),
            rewards.detach().cpu().numpy().astype(np.float32),
            dones.cpu().numpy(),
            infos,
        )

    def _infos(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """The vector env's batched info -> one dict per env (terminal maps only where they exist)."""
        per_key = {
            key: value.detach().cpu().numpy()
            for key, value in info.items()
            if not key.startswith("_") and key not in OLD_INFO_KEYS and isinstance(value, torch.Tensor)
        }
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, values in per_key.items():
            mask = info.get(f"_{key}")
            has = None if mask is None else mask.cpu().numpy()
            for i in range(self.num_envs):
                if has is None or has[i]:
                    infos[i][key] = values[i].item() if values[i].ndim == 0 else values[i]
        return infos

    def close(self) -> None:
        self.envs.close()

    def _targets(self, indices: Any) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """The vector env's attribute, once per requested env (they share one object)."""
        if attr_name == "render_mode":
            return [self.render_mode for _ in self._targets(indices)]
        value = getattr(self.core, attr_name)
        return [value for _ in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Sets an attribute of the shared vector env; only for all envs at once."""
        if sorted(self._targets(indices)) != list(range(self.num_envs)):
            raise ValueError(
                "the envs share one batched core: set_attr works only for all envs (indices=None)"
            )
        setattr(self.core, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list:
        """Calls a method of the shared vector env once; the result is repeated per requested env."""
        result = getattr(self.core, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._targets(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The decoded current samples, (H, W, 3) uint8 each (pretrained decoder; sample key needed)."""
        if self.render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        with torch.no_grad():
            images = self.core.decode(self.core.current_sample())  # (B, 3, H, W)
        pixels = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return list(pixels)


def make_sb3_env(num_envs: int = 16, render_mode: str | None = None, **kwargs: Any) -> SB3VecEnv:
    """``gym.make_vec("DiffusionDenoise-v0", num_envs, **kwargs)`` wrapped for SB3."""
    return SB3VecEnv(
        gym.make_vec("DiffusionDenoise-v0", num_envs=num_envs, **kwargs), render_mode=render_mode
    )
