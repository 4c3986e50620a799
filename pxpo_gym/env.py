"""The single, numpy-facing env: a view of ``DiffusionDenoiseVectorEnv`` with one env.

All of the MDP lives in the vector env; this class only converts between numpy
and torch and enforces the single-env protocol (no autoreset: ``step`` after
the end of an episode is an error until ``reset``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pxpo_gym.vector_env import OLD_INFO_KEYS, DiffusionDenoiseVectorEnv


def _to_numpy(value: Any) -> Any:
    """Unbatches env 0 of a tensor (or dict of tensors) into numpy."""
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value[0].detach().cpu().numpy()
    return value


class DiffusionDenoiseEnv(gym.Env):
    """One image being denoised with DDIM; numpy observations and actions.

    Same MDP, spaces (unbatched) and arguments as ``DiffusionDenoiseVectorEnv``
    (see its docstring), except ``num_envs``. Observations are numpy:
    ``sample`` (C, h, w) float32, ``timestep`` (1,) int64, ``context`` (1,) int64.
    The action is a (C, h, w) floating numpy array. The reward is a Python
    float; at the last step ``info["reward_map"]`` is (H, W) float32 and
    ``info["image"]`` (3, H, W) float32 in [0, 1]. ``info`` also holds the
    transition coefficients of the step just taken (``coef_sample``,
    ``coef_model_output``, ``std_dev_t``; not the old name ``coef_eps``, which only the vector
    env's info keeps) and ``step_index``.

    ``env.unwrapped.model`` is the pretrained noise model; it accepts these numpy
    observations directly: ``model(obs["sample"], obs["timestep"], obs["context"])``.
    ``render()`` (render_mode="rgb_array") returns the decoded current sample,
    (H, W, 3) uint8.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got render_mode={render_mode!r}")
        if "num_envs" in kwargs:
            raise ValueError("num_envs is not an argument of the single env: use gym.make_vec")
        from pxpo_gym.wrappers import make_vector_env

        self.render_mode = render_mode
        self.envs = make_vector_env(num_envs=1, **kwargs)
        """The one-env vector env (with the generic-learner wrappers the keywords ask for)."""
        self.core: DiffusionDenoiseVectorEnv = self.envs.unwrapped
        self.model = _NumpyModel(self.core.model)
        self.observation_space = self.envs.single_observation_space
        self.action_space = self.envs.single_action_space
        self._done = True
        self._has_reset = False

    @property
    def schedule(self):
        """The sampler's table (``pxpo_gym.transition.StepTable``: ``pxpo_gym.ddim.DDIMSchedule``, or
        ``pxpo_gym.flow.FlowSchedule`` for flow models)."""
        return self.core.schedule

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        if "reset_mask" in options:
            raise ValueError("options['reset_mask'] is for the vector env only")
        obs, info = self.envs.reset(seed=seed, options=options)
        self._done = False
        self._has_reset = True
        return _to_numpy(obs), _to_numpy(info)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(
                "step() called after the episode ended (or before the first reset): call reset() first"
            )
        if isinstance(action, torch.Tensor):
            raise TypeError("action must be a numpy array for the single env (the vector env takes tensors)")
        action = np.asarray(action)
        if not np.issubdtype(action.dtype, np.floating):
            raise TypeError(f"action must have a floating dtype, got dtype={action.dtype}")
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got shape {action.shape}")
        batch = torch.as_tensor(action, device=self.core.device)[None]  # (1, C, h, w)
        obs, reward, terminated, truncated, info = self.envs.step(batch)
        self._done = bool(terminated[0])
        info = {k: _to_numpy(v) for k, v in info.items() if not k.startswith("_") and k not in OLD_INFO_KEYS}
        return _to_numpy(obs), float(reward[0]), self._done, bool(truncated[0]), info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or not self._has_reset:
            return None
        image = self.core.decode(self.core.current_sample())[0]  # (3, H, W)
        return (image.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()


class _NumpyModel:
    """The env's model, accepting one unbatched numpy observation."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.module = model

    def __call__(self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        """(C, h, w), (1,), (1,) numpy -> the model output (C, h, w) float32 numpy."""
        device = next(self.module.parameters()).device
        with torch.no_grad():
            model_output = self.module(
                torch.as_tensor(sample, device=device)[None],
                torch.as_tensor(timestep, device=device).reshape(1),
                torch.as_tensor(context, device=device).reshape(1),
            )
        return model_output[0].cpu().numpy()
