"""The flow-matching sampler: Flow-GRPO's SDE step and coefficient-preserving sampling (``FlowSampler``).

Rectified-flow notation (diffusers' ``FlowMatchEulerDiscreteScheduler``, SD3, FLUX):
x_sigma = (1 - sigma) x_0 + sigma eps, sigma from 1 (noise) to 0 (data), and the model
predicts the velocity v = eps - x_0. The ODE's Euler step is
x_{sigma'} = x_sigma + (sigma' - sigma) v: deterministic, so it has no likelihood. The two
stochastic samplers RL fine-tuning uses are affine-Gaussian in v, like DDIM's step in eps:

    x_{sigma'} = a x_sigma + b v + s z,   z ~ N(0, I)

so they keep the transition every sampler keeps (``pxpo_gym.transition``: ``coef_sample`` = a,
``coef_model_output`` = b, the weight of the model's output, ``std_dev_t`` = s) and with it
``transition_mean``, ``step_log_prob`` and ``step_kl`` unchanged: every agent works on either kind
of model. ``FlowSampler`` is the plug-in (``pxpo_gym.samplers``).

- ``"sde"`` (Flow-GRPO, Liu et al. arXiv 2505.05470, Eq. 9), with dt = sigma' - sigma < 0
  and g = noise_level sqrt(sigma / (1 - sigma)) (at sigma = 1 the grid's second sigma
  stands in for the denominator, as in Flow-GRPO; with one step that is the terminal 0):

      mean = x + [v + g^2 / (2 sigma) (x + (1 - sigma) v)] dt
      a = 1 + g^2 dt / (2 sigma),  b = dt (1 + g^2 (1 - sigma) / (2 sigma)),  s = g sqrt(-dt)

- ``"cps"`` (coefficient-preserving sampling, Wang & Yu arXiv 2509.05952): with the
  model's own estimates x0 = x - sigma v and eps = x + (1 - sigma) v, s = sigma'
  sin(noise_level pi / 2) and c = sigma' cos(noise_level pi / 2),

      mean = (1 - sigma') x0 + c eps
      a = 1 - sigma' + c,  b = c (1 - sigma) - sigma (1 - sigma')

  so x_{sigma'} keeps the coefficients of x_0 and of the (unit-variance) noise that a
  sample at sigma' has: (1 - sigma') and sigma' (c^2 + s^2 = sigma'^2). It re-noises a
  fixed share of sigma' at every step, however small the steps, so with a model's
  posterior-mean x_0 it under-disperses at high noise levels (measured on Gaussian data
  with the exact velocity, tests/pxpo_gym/test_flow.py: variance 0.165 for 0.25 at level 0.7 and
  40 steps, 0.177 at 200 steps; 0.230 at level 0.1), where the SDE draws the marginal
  (0.247 at 0.7).

Both reduce to the Euler step at noise_level = 0 (the tests check it against diffusers).
The grid is diffusers' own (its shift honoured), ending at sigma' = 0. There CPS's s is 0
(a step to clean data keeps no noise), so it would have no likelihood: CPS's last step is
the SDE step at the same noise level instead, and every step of either sampler is stochastic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pxpo_gym.backbones import get_backbone
from pxpo_gym.transition import LOG_DENSITIES, Sampler, StepTable, TransitionCoefficients

TRANSITIONS = ("sde", "cps")
DEFAULT_NOISE_LEVEL = 0.7
"""Flow-GRPO's default noise level for its SDE step."""


def sde_coefficients(
    sigma: torch.Tensor, sigma_prev: torch.Tensor, noise_level: float, sigma_max: float
) -> TransitionCoefficients:
    """Flow-GRPO's SDE step as (a, b, s) for sigmas of any matching shape (module docstring).

    Args:
        sigma: the current sigma, in (0, 1].
        sigma_prev: the next (smaller) sigma, in [0, sigma).
        noise_level: >= 0; 0 is the Euler step.
        sigma_max: the value standing in for sigma in 1 - sigma where sigma = 1 (the grid's second
            sigma in Flow-GRPO), < 1.
    """
    dt = sigma_prev - sigma
    denominator = 1 - torch.where(sigma >= 1, torch.full_like(sigma, sigma_max), sigma)
    g2 = noise_level**2 * sigma / denominator
    coef_sample = 1 + g2 * dt / (2 * sigma)
    coef_model_output = dt * (1 + g2 * (1 - sigma) / (2 * sigma))
    return TransitionCoefficients(coef_sample, coef_model_output, (g2 * -dt).sqrt())


def cps_coefficients(
    sigma: torch.Tensor, sigma_prev: torch.Tensor, noise_level: float
) -> TransitionCoefficients:
    """Coefficient-preserving sampling as (a, b, s) for sigmas of any matching shape (module docstring).

    Args:
        sigma: the current sigma, in (0, 1].
        sigma_prev: the next (smaller) sigma, in [0, sigma).
        noise_level: in [0, 1]; 0 is the Euler step, 1 draws fresh noise (DDPM-like).
    """
    angle = noise_level * math.pi / 2
    std = sigma_prev * math.sin(angle)
    c = sigma_prev * math.cos(angle)
    return TransitionCoefficients(1 - sigma_prev + c, c * (1 - sigma) - sigma * (1 - sigma_prev), std)


@dataclass(frozen=True)
class FlowSchedule(StepTable):
    """The per-step table of a flow-matching sampler with T steps (the flow twin of ``DDIMSchedule``).

    Step k maps x at ``sigmas[k]`` to x at ``sigmas_prev[k]``. ``timesteps`` are what the model is
    called with (sigma x num_train_timesteps, as diffusers' flow schedulers). All tensors have
    shape (T,); coefficients are float32.
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor
    sigmas_prev: torch.Tensor
    coefficients: TransitionCoefficients
    ode_coefficients: TransitionCoefficients
    noise_level: float
    transition: str
    log_density: str = "gaussian"

    @classmethod
    def from_scheduler(
        cls,
        scheduler,
        num_inference_steps: int,
        noise_level: float = DEFAULT_NOISE_LEVEL,
        transition: str = "sde",
        device: torch.device | str = "cpu",
        shift_mu: float | None = None,
        grid: str = "flux",
        log_density: str = "gaussian",
    ) -> FlowSchedule:
        """Builds the table from a diffusers flow-matching scheduler's own sigma grid (its shift honoured).

        Args:
            scheduler: a ``FlowMatchEulerDiscreteScheduler`` (or its config's twin).
            num_inference_steps: T >= 1.
            noise_level: > 0 ("sde"; Flow-GRPO's default 0.7) or in (0, 1] ("cps").
            transition: "sde" or "cps".
            device: where the tables live.
            shift_mu: schedulers with ``use_dynamic_shifting`` (FLUX): the resolution's shift ``mu``
                (``LoadedModel.schedule_shift_mu``); required there, refused elsewhere.
            log_density: 'gaussian' (the exact step likelihood) or, with transition 'cps' only, 'public'
                (the public CPS code's -(x - mean)^2; ``pxpo_gym.transition.LOG_DENSITIES``).
            grid: with dynamic shifting, whose sigma grid: 'flux' (FluxPipeline's: sigmas 1 ... 1 / T, then
                shifted by mu) or 'sd3' (StableDiffusion3Pipeline's: the scheduler's own grid, shifted by mu).

        Raises:
            ValueError: an unknown transition, T < 1, or a noise level with no likelihood (0 is the
                deterministic ODE step) or out of range.
        """
        from diffusers import FlowMatchEulerDiscreteScheduler

        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got transition={transition!r}")
        if (
            isinstance(noise_level, (bool, np.bool_))
            or not isinstance(noise_level, (int, float, np.integer, np.floating))
            or not math.isfinite(noise_level)
            or noise_level <= 0
            or (transition == "cps" and noise_level > 1)
        ):
            allowed = "in (0, 1]" if transition == "cps" else "> 0"
            raise ValueError(
                f"noise_level must be {allowed} for transition={transition!r} (0 is the deterministic ODE "
                f"step, which has no likelihood), got noise_level={noise_level!r}"
            )
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        flow = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
        dynamic = bool(flow.config.get("use_dynamic_shifting", False))
        if dynamic != (shift_mu is not None):
            raise ValueError(
                "a scheduler with use_dynamic_shifting needs shift_mu (the resolution's shift), and only "
                f"such a scheduler takes it; use_dynamic_shifting={dynamic}, shift_mu={shift_mu!r}"
            )
        if log_density not in LOG_DENSITIES or (log_density == "public" and transition != "cps"):
            raise ValueError(
                f"log_density must be 'gaussian', or 'public' with transition='cps' (the public CPS code's "
                f"form), got log_density={log_density!r} with transition={transition!r}"
            )
        if grid not in ("flux", "sd3"):
            raise ValueError(f"grid must be 'flux' or 'sd3', got grid={grid!r}")
        if dynamic and grid == "flux":  # FluxPipeline's grid: sigmas 1 ... 1 / T, then shifted by mu
            steps = int(num_inference_steps)
            flow.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps).tolist(), mu=float(shift_mu))
        elif dynamic:  # StableDiffusion3Pipeline's: the scheduler's own grid, shifted by mu
            flow.set_timesteps(int(num_inference_steps), mu=float(shift_mu))
        else:
            flow.set_timesteps(int(num_inference_steps))
        sigmas = flow.sigmas.to(torch.float64)  # (T + 1,), ending at 0 (or the config's terminal value)
        current, following = sigmas[:-1], sigmas[1:]
        if bool((following >= current).any()) or float(current[-1]) <= 0:
            raise ValueError(
                "the scheduler's sigma grid must decrease at every step and stay above 0 until the end"
            )
        # Flow-GRPO: where sigma = 1, the grid's second sigma stands in for it in 1 - sigma (for T = 1 that is
        # the terminal 0: the step 1 -> 0 has g = noise_level, a = 1 - g^2 / 2, b = -1, s = g).
        sigma_max = float(sigmas[1]) if float(sigmas[1]) < 1 else 1 - 1e-3
        coeffs = sde_coefficients(current, following, float(noise_level), sigma_max)
        if transition == "cps":
            cps = cps_coefficients(current, following, float(noise_level))
            keep = following > 0  # a CPS step to sigma' = 0 has no noise: the SDE step there (docstring)
            coeffs = TransitionCoefficients(*(torch.where(keep, c, d) for c, d in zip(cps, coeffs)))
        ode = sde_coefficients(current, following, 0.0, sigma_max)  # the Euler step
        num_train = float(flow.config.num_train_timesteps)
        return cls(
            timesteps=(current * num_train).float().to(device),
            sigmas=current.float().to(device),
            sigmas_prev=following.float().to(device),
            coefficients=TransitionCoefficients(*(c.float().to(device) for c in coeffs)),
            ode_coefficients=TransitionCoefficients(*(c.float().to(device) for c in ode)),
            noise_level=float(noise_level),
            transition=transition,
            log_density=log_density,
        )


class FlowSampler(Sampler):
    """The flow-matching sampler plug-in, for models that predict the velocity (a
    ``FlowMatchEulerDiscreteScheduler``): the action is the velocity v; the step is Flow-GRPO's SDE or CPS
    (``transition``) at ``noise_level``, on the sigma grid of the model's pipeline
    (``pxpo_gym.backbones.Backbone.flow_grid``)."""

    name = "flow"
    prediction_types = ("velocity",)
    prediction = "velocity"

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
    ) -> FlowSchedule:
        """``FlowSchedule.from_scheduler`` with ``noise_level`` (default ``DEFAULT_NOISE_LEVEL``),
        ``transition`` (default 'sde') and ``log_density`` (default 'gaussian').

        Raises:
            ValueError: an eta other than 1.0 (DDIM's setting), or what ``FlowSchedule.from_scheduler``
                refuses.
        """
        eta = 1.0 if eta is None else eta
        if eta != 1.0:
            raise ValueError(
                f"eta={eta!r} is DDIM's stochasticity; model={loaded.source!r} is a flow-matching model: set "
                f"its sampler's noise with noise_level (default {DEFAULT_NOISE_LEVEL}) instead"
            )
        return FlowSchedule.from_scheduler(
            loaded.scheduler,
            num_inference_steps,
            DEFAULT_NOISE_LEVEL if noise_level is None else noise_level,
            transition or "sde",
            device,
            loaded.schedule_shift_mu,
            get_backbone(loaded.noise_model.backbone).flow_grid,  # each pipeline's own sigma grid
            log_density or "gaussian",
        )

    @classmethod
    def timestep_space(cls, num_train_timesteps: int) -> Any:
        """Box(-1, num_train_timesteps, (1,), float32): sigma x num_train_timesteps, what the model is called
        with (diffusers' convention)."""
        import gymnasium as gym

        return gym.spaces.Box(-1, num_train_timesteps, (1,), np.float32)

    @classmethod
    def settings(cls, table: FlowSchedule) -> dict[str, Any]:
        return {"eta": None, "sampler": table.transition, "noise_level": table.noise_level}
