"""pxpo-gym: the denoising process of a diffusion model as a Gymnasium environment.

``import pxpo_gym`` registers ``DiffusionDenoise-v0``:

    env = gym.make("DiffusionDenoise-v0")                       # numpy, one image
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=16)     # torch, batched
"""

from __future__ import annotations

import gymnasium as gym

from pxpo_gym.ddim import DDIMSchedule, transition_coefficients
from pxpo_gym.deprecation import moved_names
from pxpo_gym.loading import load_model
from pxpo_gym.models import LoadedModel, NoiseModel
from pxpo_gym.rewards import REWARDS, Reward, make_reward
from pxpo_gym.transition import (
    TransitionCoefficients,
    gaussian_log_prob,
    step_log_prob,
    transition_mean,
    transition_step,
)

__all__ = [
    "DDIMSchedule",
    "LoadedModel",
    "NoiseModel",
    "REWARDS",
    "Reward",
    "TransitionCoefficients",
    "gaussian_log_prob",
    "load_model",
    "make_reward",
    "step_log_prob",
    "transition_coefficients",
    "transition_mean",
    "transition_step",
]

__getattr__ = moved_names(
    __name__,
    {"ddim_mean": "pxpo_gym.transition:transition_mean", "ddim_step": "pxpo_gym.transition:transition_step"},
)

ENV_ID = "DiffusionDenoise-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="pxpo_gym.env:DiffusionDenoiseEnv",
        vector_entry_point="pxpo_gym.wrappers:make_vector_env",
    )
