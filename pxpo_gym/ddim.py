"""DDIM transition math: the single home of the step and its log-likelihood.

Notation follows DDIM (Song et al., arXiv 2010.02502, Eq. 12) with diffusers'
variable names: ``alpha_prod_t`` is abar_t, ``alpha_prod_t_prev`` is
abar_{t_prev}, ``std_dev_t`` is sigma_t. Without sample clipping the DDIM
update is linear in the noise prediction ``eps``::

    x_{t-1} = coef_sample * x_t + coef_eps * eps + std_dev_t * z,   z ~ N(0, I)

    coef_sample = sqrt(abar_prev / abar_t)
    coef_eps    = sqrt(1 - abar_prev - sigma_t^2)
                  - sqrt(abar_prev) * sqrt(1 - abar_t) / sqrt(abar_t)
    sigma_t     = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))

so a noise prediction defines the isotropic Gaussian policy
N(x_{t-1}; coef_sample x_t + coef_eps eps, sigma_t^2 I). Every function here is
pure and batched: coefficients of shape (B,) broadcast over a sample's trailing
dimensions, so each sample in a batch may sit at a different timestep.

The last step: we set abar_prev = abar_0 (diffusers' ``set_alpha_to_one=False``,
as Stable Diffusion ships) so that sigma_t > 0 at every step, including the one
that produces x_0. Every step is therefore stochastic and has a likelihood;
``DDIMSchedule`` refuses a schedule where some sigma_t is 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

_LOG_SQRT_2PI = 0.9189385332046727  # 0.5 * log(2 * pi)
START_ALPHA_PROD_MAX = 0.05
"""A grid that starts more than one step below the top, where alpha_prod_t is above this, is warned about."""


class TransitionCoefficients(NamedTuple):
    """The three numbers that define one DDIM step, each of shape (B,) or ()."""

    coef_sample: torch.Tensor
    """a_t: weight of x_t in the mean."""
    coef_eps: torch.Tensor
    """b_t: weight of the noise prediction in the mean."""
    std_dev_t: torch.Tensor
    """sigma_t: standard deviation of the step's Gaussian noise."""


def _expand_like(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshapes per-sample coefficients (B,) to (B, 1, ..., 1) to broadcast over ``like``."""
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim))


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
    coef_eps = direction - alpha_prod_t_prev.sqrt() * beta_prod_t.sqrt() / alpha_prod_t.sqrt()
    return TransitionCoefficients(coef_sample, coef_eps, std_dev_t)


def ddim_mean(sample: torch.Tensor, eps: torch.Tensor, coeffs: TransitionCoefficients) -> torch.Tensor:
    """Mean of the DDIM step, a_t x_t + b_t eps.

    Args:
        sample: x_t, (B, ...) float.
        eps: noise prediction, same shape as ``sample``.
        coeffs: per-sample coefficients of shape (B,) (or scalars).

    Returns:
        (B, ...) tensor, the mean of x_{t-1}.
    """
    return _expand_like(coeffs.coef_sample, sample) * sample + _expand_like(coeffs.coef_eps, eps) * eps


def ddim_step(
    sample: torch.Tensor, eps: torch.Tensor, coeffs: TransitionCoefficients, noise: torch.Tensor
) -> torch.Tensor:
    """One DDIM step x_t -> x_{t-1} with the given standard-normal ``noise``.

    Args:
        sample: x_t, (B, ...) float.
        eps: noise prediction, same shape.
        coeffs: per-sample coefficients of shape (B,).
        noise: z ~ N(0, I), same shape; passing it makes the step deterministic under test.

    Returns:
        x_{t-1}, (B, ...).
    """
    return ddim_mean(sample, eps, coeffs) + _expand_like(coeffs.std_dev_t, noise) * noise


def gaussian_log_prob(value: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-element log N(value; mean, std^2), unreduced.

    Args:
        value: (B, ...) float.
        mean: broadcastable to ``value``.
        std: (B,) per-sample standard deviation (broadcast over trailing dims), > 0.

    Returns:
        (B, ...) per-element log-density, the shape of ``value``.
    """
    std = _expand_like(std, value)
    return -((value - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI


LOG_DENSITIES = ("gaussian", "public")
"""How a step's log-likelihood is computed: 'gaussian', the exact log N(x_{t-1}; mean, s^2) (the default,
every sampler); 'public', the unnormalised -(x_{t-1} - mean)^2 that the public coefficient-preserving
sampling (CPS) code uses as its log-probability (flow models with transition 'cps' only: for parity with
those runs; its ratios and clipping differ from the Gaussian's by the factor 1 / (2 s^2) in the exponent)."""


def step_log_prob(
    prev_sample: torch.Tensor,
    sample: torch.Tensor,
    eps: torch.Tensor,
    coeffs: TransitionCoefficients,
    density: str = "gaussian",
) -> torch.Tensor:
    """Per-element log p(x_{t-1} | x_t) of the DDIM policy defined by ``eps``, unreduced.

    This is the function every agent builds its likelihoods from: reduce it with a
    mean over elements for DDPO, or a sum over channels per pixel for PXPO.

    Args:
        prev_sample: x_{t-1} actually reached, (B, C, H, W).
        sample: x_t, (B, C, H, W).
        eps: noise prediction (the action), (B, C, H, W); gradients flow through it.
        coeffs: per-sample coefficients of shape (B,).
        density: 'gaussian' or 'public' (``LOG_DENSITIES``).

    Returns:
        (B, C, H, W) float log-density.
    """
    mean = ddim_mean(sample, eps, coeffs)
    if density == "public":
        return -((prev_sample - mean) ** 2)
    if density != "gaussian":
        raise ValueError(f"density must be one of {LOG_DENSITIES}, got density={density!r}")
    return gaussian_log_prob(prev_sample, mean, coeffs.std_dev_t)


def step_kl(eps: torch.Tensor, eps_ref: torch.Tensor, coeffs: TransitionCoefficients) -> torch.Tensor:
    """Per-element KL(p_eps || p_ref) between the DDIM steps two noise predictions define, unreduced.

    Both are Gaussians with the same std sigma_t and means a_t x_t + b_t eps, so
    KL = (b_t (eps - eps_ref))^2 / (2 sigma_t^2), independent of x_t.

    Args:
        eps: (B, C, H, W) the policy's noise prediction; gradients flow through it.
        eps_ref: (B, C, H, W) the reference model's.
        coeffs: per-sample coefficients of shape (B,).

    Returns:
        (B, C, H, W) float KL per element (nats).
    """
    diff = _expand_like(coeffs.coef_eps, eps) * (eps - eps_ref)
    return diff.square() / (2 * _expand_like(coeffs.std_dev_t, eps).square())


class StepTable:
    """What the env asks of any sampler's per-step table (``DDIMSchedule``, ``pxpo_gym.flow.FlowSchedule``):
    its (T,) ``timesteps`` and ``coefficients``."""

    timesteps: torch.Tensor
    coefficients: TransitionCoefficients
    ode_coefficients: TransitionCoefficients
    """The same steps without noise (DDIM at eta 0, the flow's Euler step: std_dev_t 0), for steps a caller
    samples deterministically (the env's reset option ``stochastic_steps``); they have no likelihood."""
    log_density = "gaussian"
    """How agents compute the step's log-likelihood (``LOG_DENSITIES``); only a flow CPS table may differ."""

    @property
    def num_steps(self) -> int:
        """T, the number of denoising steps in an episode."""
        return int(self.timesteps.shape[0])

    def at(self, step_index: torch.Tensor, stochastic: torch.Tensor | None = None) -> TransitionCoefficients:
        """Coefficients for a batch of step indices, (B,) int64 in [0, T) -> (B,) each; where the (B,) bool
        ``stochastic`` is False, the deterministic step's (``ode_coefficients``)."""
        coeffs = TransitionCoefficients(*(c[step_index] for c in self.coefficients))
        if stochastic is None:
            return coeffs
        ode = (c[step_index] for c in self.ode_coefficients)
        return TransitionCoefficients(*(torch.where(stochastic, c, d) for c, d in zip(coeffs, ode)))


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
