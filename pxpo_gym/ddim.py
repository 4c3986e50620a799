"""The DDIM sampler: its coefficients, its per-step table and its plug-in (``DDIMSampler``).

Notation follows DDIM (Song et al., arXiv 2010.02502, Eq. 12) with diffusers'
variable names: ``alpha_prod_t`` is abar_t, ``alpha_prod_t_prev`` is
abar_{t_prev}, ``std_dev_t`` is sigma_t. Without sample clipping the DDIM
update is linear in the noise prediction eps (the model output, the env's action),
so it is the transition every sampler keeps (``pxpo_gym.transition``)::

    x_{t-1} = coef_sample * x_t + coef_model_output * eps + std_dev_t * z,   z ~ N(0, I)

    coef_sample       = sqrt(abar_prev / abar_t)
    coef_model_output = sqrt(1 - abar_prev - sigma_t^2)
                        - sqrt(abar_prev) * sqrt(1 - abar_t) / sqrt(abar_t)
    sigma_t           = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))

so a noise prediction defines the isotropic Gaussian policy
N(x_{t-1}; coef_sample x_t + coef_model_output eps, sigma_t^2 I); its step, mean and
log-density are ``pxpo_gym.transition``'s. Coefficients of shape (B,) broadcast over a
sample's trailing dimensions, so each sample in a batch may sit at a different timestep.

The last step: we set abar_prev = abar_0 (diffusers' ``set_alpha_to_one=False``,
as Stable Diffusion ships) so that sigma_t > 0 at every step, including the one
that produces x_0. Every step is therefore stochastic and has a likelihood;
``DDIMSchedule`` refuses a schedule where some sigma_t is 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pxpo_gym.deprecation import moved_names
from pxpo_gym.transition import Sampler, StepTable, TransitionCoefficients

START_ALPHA_PROD_MAX = 0.05
"""A grid that starts more than one step below the top, where alpha_prod_t is above this, is warned about."""


def transition_coefficients(
    alpha_prod_t: torch.Tensor, alpha_prod_t_prev: torch.Tensor, eta: float
) -> TransitionCoefficients:
    """DDIM coefficients (a_t, b_t, sigma_t) for cumulative alphas of any matching shape.

    Args:
        alpha_prod_t: abar_t, float tensor of any shape, values in (0, 1).
        alpha_prod_t_prev: abar_prev, same shape, >= alpha_prod_t elementwise.
        eta: DDIM stochasticity in (0, 1]; 1 gives the DDPM posterior variance.

    Returns:
        ``TransitionCoefficients`` with tensors of the inputs' shape.
    """
    beta_prod_t = 1 - alpha_prod_t
    # DDIM Eq. 16: sigma_t^2 = eta^2 (1 - abar_prev)/(1 - abar_t) (1 - abar_t/abar_prev)
    variance = (1 - alpha_prod_t_prev) / beta_prod_t * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance.clamp(min=0).sqrt()
    # DDIM Eq. 12, with x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) substituted.
    direction = (1 - alpha_prod_t_prev - std_dev_t**2).clamp(min=0).sqrt()
    coef_sample = (alpha_prod_t_prev / alpha_prod_t).sqrt()
    coef_model_output = direction - alpha_prod_t_prev.sqrt() * beta_prod_t.sqrt() / alpha_prod_t.sqrt()
    return TransitionCoefficients(coef_sample, coef_model_output, std_dev_t)


@dataclass(frozen=True)
class DDIMSchedule(StepTable):
    """The per-step table of a DDIM sampler with T inference steps.

    Step k (0-based, k = 0 first) maps x at training timestep ``timesteps[k]`` to x at
    ``prev_timesteps[k]`` (-1 means the clean sample x_0). All tensors have shape (T,)
    and live on one device; coefficients are float32.
    """

    timesteps: torch.Tensor
    prev_timesteps: torch.Tensor
    alpha_prod_t: torch.Tensor
    alpha_prod_t_prev: torch.Tensor
    coefficients: TransitionCoefficients
    ode_coefficients: TransitionCoefficients
    eta: float

    @classmethod
    def from_scheduler(
        cls,
        scheduler,
        num_inference_steps: int,
        eta: float,
        device: torch.device | str = "cpu",
    ) -> DDIMSchedule:
        """Builds the table from a diffusers scheduler's training schedule and spacing.

        Timesteps come from diffusers' own ``DDIMScheduler.set_timesteps`` (so its
        ``timestep_spacing`` and ``steps_offset`` are honoured); the previous timestep
        is t - num_train_timesteps // T as in ``DDIMScheduler.step``.

        Args:
            scheduler: any diffusers scheduler with a DDPM-style config (betas).
            num_inference_steps: T >= 1, below the number of training timesteps.
            eta: DDIM stochasticity in (0, 1].
            device: where the tables live.

        Raises:
            ValueError: T or eta out of range, a step past the last training timestep, or a
                step whose sigma_t is 0.

        Warns:
            UserWarning: the grid's first timestep is far from pure noise (e.g. a 'leading'
                grid with T = 501, whose step size is 1, starts at t = 501).
        """
        from diffusers import DDIMScheduler

        if (
            isinstance(eta, (bool, np.bool_))
            or not isinstance(eta, (int, float, np.integer, np.floating))
            or not 0 < eta <= 1
        ):
            raise ValueError(
                f"eta must be in (0, 1] for a stochastic policy (eta=0 is deterministic DDIM "
                f"and has no policy gradient), got eta={eta!r}"
            )
        num_train = int(scheduler.config.num_train_timesteps)
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or not (1 <= num_inference_steps < num_train)
        ):
            # T = num_train would need a step t = 0 -> x_0 with alpha_prod_prev = alpha_prod_0,
            # whose sigma_t is 0: no grid of that length has a likelihood at every step.
            raise ValueError(
                f"num_inference_steps must be an int in [1, {num_train - 1}], "
                f"got num_inference_steps={num_inference_steps!r}"
            )
        ddim = DDIMScheduler.from_config(scheduler.config)  # abar_prev of the last step: set below
        num_inference_steps = int(num_inference_steps)
        ddim.set_timesteps(num_inference_steps)
        timesteps = ddim.timesteps.to(torch.int64)
        spacing = (ddim.config.timestep_spacing, ddim.config.steps_offset)
        if int(timesteps.max()) >= num_train:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} on this scheduler's grid "
                f"(timestep_spacing={spacing[0]!r}, steps_offset={spacing[1]}) puts a step at "
                f"t={int(timesteps.max())}, past the last training timestep {num_train - 1}: "
                f"use at most {num_train - 1} steps"
            )
        top, top_alpha = int(timesteps[0]), float(ddim.alphas_cumprod[int(timesteps[0])])
        if top < num_train - 1 - num_train / num_inference_steps and top_alpha > START_ALPHA_PROD_MAX:
            # e.g. 'leading' with T = 501: its step num_train // T is 1, so it starts at t = 501.
            warnings.warn(
                f"num_inference_steps={num_inference_steps} on this scheduler's grid "
                f"(timestep_spacing={spacing[0]!r}) starts at t={top}, more than one step below the last "
                f"training timestep {num_train - 1}, where alpha_prod_t={top_alpha:.3g}: the episode's "
                f"pure-noise x_T is not what the model expects there. Use a T that divides {num_train}, "
                "or timestep_spacing='trailing'",
                stacklevel=2,
            )
        prev_timesteps = timesteps - num_train // num_inference_steps
        alphas_cumprod = ddim.alphas_cumprod.to(torch.float64)
        alpha_prod_t = alphas_cumprod[timesteps]
        alpha_prod_t_prev = torch.where(
            prev_timesteps >= 0, alphas_cumprod[prev_timesteps.clamp(min=0)], alphas_cumprod[0]
        )
        # Coefficients computed in float64 then stored as float32: the last step's
        # sigma is tiny and would lose digits otherwise.
        coeffs = transition_coefficients(alpha_prod_t, alpha_prod_t_prev, float(eta))
        if bool((coeffs.std_dev_t <= 0).any()):
            bad = int((coeffs.std_dev_t <= 0).nonzero()[0, 0])
            raise ValueError(
                f"the scheduler's DDIM step {bad} (timestep {int(timesteps[bad])} -> "
                f"{int(prev_timesteps[bad])}) has std_dev_t = 0, so it has no likelihood; "
                "use timestep_spacing='trailing' or steps_offset=1 in the scheduler config"
            )
        prev_timesteps = prev_timesteps.clamp(min=-1)
        ode = transition_coefficients(alpha_prod_t, alpha_prod_t_prev, 0.0)
        return cls(
            timesteps=timesteps.to(device),
            prev_timesteps=prev_timesteps.to(device),
            alpha_prod_t=alpha_prod_t.float().to(device),
            alpha_prod_t_prev=alpha_prod_t_prev.float().to(device),
            coefficients=TransitionCoefficients(*(c.float().to(device) for c in coeffs)),
            ode_coefficients=TransitionCoefficients(*(c.float().to(device) for c in ode)),
            eta=float(eta),
        )


class DDIMSampler(Sampler):
    """The DDIM sampler plug-in, for DDPM-family models (noise or v-prediction; ``NoiseModel`` turns a
    v-prediction into eps): the action is the noise prediction eps, the stochasticity ``eta``."""

    name = "ddim"
    prediction_types = ("epsilon", "v_prediction")
    prediction = "eps"

    @classmethod
    def build(
        cls,
        loaded: Any,
        num_inference_steps: int,
        device: torch.device | str,
        eta: float | None,
        noise_level: float | None,
        transition: str | None,
        log_density: str | None,
    ) -> DDIMSchedule:
        """``DDIMSchedule.from_scheduler`` with ``eta`` (default 1.0).

        Raises:
            ValueError: a flow-matching setting given (noise_level, transition other than 'sde',
                log_density other than 'gaussian'), or what ``DDIMSchedule.from_scheduler`` refuses.
        """
        transition = transition or "sde"
        if noise_level is not None or transition != "sde" or log_density not in (None, "gaussian"):
            raise ValueError(
                f"noise_level, transition and log_density are for flow-matching models; model={loaded.source!r} "
                f"samples with DDIM: use eta (got noise_level={noise_level!r}, transition={transition!r}, "
                f"log_density={log_density!r})"
            )
        return DDIMSchedule.from_scheduler(
            loaded.scheduler, num_inference_steps, 1.0 if eta is None else eta, device
        )

    @classmethod
    def timestep_space(cls, num_train_timesteps: int) -> Any:
        """Box(-1, num_train_timesteps - 1, (1,), int64): the training-schedule timestep."""
        import gymnasium as gym

        return gym.spaces.Box(-1, num_train_timesteps - 1, (1,), np.int64)

    @classmethod
    def settings(cls, table: DDIMSchedule) -> dict[str, Any]:
        return {"eta": table.eta, "sampler": cls.name, "noise_level": None}


__getattr__ = moved_names(
    __name__,
    {
        "ddim_mean": "pxpo_gym.transition:transition_mean",
        "ddim_step": "pxpo_gym.transition:transition_step",
        "step_log_prob": "pxpo_gym.transition:step_log_prob",
        "step_kl": "pxpo_gym.transition:step_kl",
        "gaussian_log_prob": "pxpo_gym.transition:gaussian_log_prob",
        "LOG_DENSITIES": "pxpo_gym.transition:LOG_DENSITIES",
    },
)
