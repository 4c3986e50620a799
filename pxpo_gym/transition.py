"""The transition every sampler keeps: one affine-Gaussian step and its log-density, written once.

Each step of every sampler the env offers (DDIM, ``pxpo_gym.ddim``; flow matching's SDE and CPS,
``pxpo_gym.flow``) is affine in the model's output plus Gaussian noise::

    x_{t-1} = a * x_t + b * model_output + s * z,   z ~ N(0, I)

with the step's coefficients (a, b, s) = (``coef_sample``, ``coef_model_output``, ``std_dev_t``)
(diffusers' names). ``model_output`` is what the denoising network predicts and what the env takes as
its action: the noise eps for DDIM, the velocity v for flow matching. So an action defines the
isotropic Gaussian policy N(x_{t-1}; a x_t + b model_output, s^2 I), and this module's
``step_log_prob`` is the one log-density every agent builds its likelihoods from. Every function is
pure and batched: coefficients of shape (B,) broadcast over a sample's trailing dimensions, so each
sample in a batch may sit at a different step.

A sampler is a plug-in (``Sampler``, registered in ``pxpo_gym.samplers``): it turns a model's
scheduler into a per-step table of coefficients (``StepTable``); the env and the agents never ask
which sampler made it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch

from pxpo_gym.deprecation import renamed_keywords, warn_renamed

if TYPE_CHECKING:
    import gymnasium as gym

    from pxpo_gym.models import LoadedModel

_LOG_SQRT_2PI = 0.9189385332046727  # 0.5 * log(2 * pi)


class TransitionCoefficients(NamedTuple):
    """The three numbers that define one step, each of shape (B,) or ()."""

    coef_sample: torch.Tensor
    """a: weight of x_t in the mean."""
    coef_model_output: torch.Tensor
    """b: weight of the model output (the action) in the mean."""
    std_dev_t: torch.Tensor
    """s: standard deviation of the step's Gaussian noise."""

    @property
    def coef_eps(self) -> torch.Tensor:
        """The old name of ``coef_model_output`` (deprecated)."""
        warn_renamed("TransitionCoefficients.coef_eps", "coef_model_output")
        return self.coef_model_output


def _expand_like(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshapes per-sample coefficients (B,) to (B, 1, ..., 1) to broadcast over ``like``."""
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim))


@renamed_keywords(eps="model_output")
def transition_mean(
    sample: torch.Tensor, model_output: torch.Tensor, coeffs: TransitionCoefficients
) -> torch.Tensor:
    """Mean of the step, a x_t + b model_output.

    Args:
        sample: x_t, (B, ...) float.
        model_output: the model's prediction (the action), same shape as ``sample``.
        coeffs: per-sample coefficients of shape (B,) (or scalars).

    Returns:
        (B, ...) tensor, the mean of x_{t-1}.
    """
    return (
        _expand_like(coeffs.coef_sample, sample) * sample
        + _expand_like(coeffs.coef_model_output, model_output) * model_output
    )


@renamed_keywords(eps="model_output")
def transition_step(
    sample: torch.Tensor, model_output: torch.Tensor, coeffs: TransitionCoefficients, noise: torch.Tensor
) -> torch.Tensor:
    """One step x_t -> x_{t-1} with the given standard-normal ``noise``.

    Args:
        sample: x_t, (B, ...) float.
        model_output: the model's prediction (the action), same shape.
        coeffs: per-sample coefficients of shape (B,).
        noise: z ~ N(0, I), same shape; passing it makes the step deterministic under test.

    Returns:
        x_{t-1}, (B, ...).
    """
    return transition_mean(sample, model_output, coeffs) + _expand_like(coeffs.std_dev_t, noise) * noise


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


@renamed_keywords(eps="model_output")
def step_log_prob(
    prev_sample: torch.Tensor,
    sample: torch.Tensor,
    model_output: torch.Tensor,
    coeffs: TransitionCoefficients,
    density: str = "gaussian",
) -> torch.Tensor:
    """Per-element log p(x_{t-1} | x_t) of the step policy that ``model_output`` defines, unreduced.

    This is the function every agent builds its likelihoods from: reduce it with a
    mean over elements for DDPO, or a sum over channels per pixel for PXPO.

    Args:
        prev_sample: x_{t-1} actually reached, (B, C, H, W).
        sample: x_t, (B, C, H, W).
        model_output: the action (a noise prediction, or a flow model's velocity), (B, C, H, W);
            gradients flow through it.
        coeffs: per-sample coefficients of shape (B,).
        density: 'gaussian' or 'public' (``LOG_DENSITIES``).

    Returns:
        (B, C, H, W) float log-density.

    Raises:
        ValueError: an unknown ``density``.
    """
    mean = transition_mean(sample, model_output, coeffs)
    if density == "public":
        return -((prev_sample - mean) ** 2)
    if density != "gaussian":
        raise ValueError(f"density must be one of {LOG_DENSITIES}, got density={density!r}")
    return gaussian_log_prob(prev_sample, mean, coeffs.std_dev_t)


@renamed_keywords(eps="model_output", eps_ref="reference_output")
def step_kl(
    model_output: torch.Tensor, reference_output: torch.Tensor, coeffs: TransitionCoefficients
) -> torch.Tensor:
    """Per-element KL(p_policy || p_ref) between the steps two model outputs define, unreduced.

    Both are Gaussians with the same std s and means a x_t + b output, so
    KL = (b (model_output - reference_output))^2 / (2 s^2), independent of x_t.

    Args:
        model_output: (B, C, H, W) the policy's prediction; gradients flow through it.
        reference_output: (B, C, H, W) the reference model's.
        coeffs: per-sample coefficients of shape (B,).

    Returns:
        (B, C, H, W) float KL per element (nats).
    """
    diff = _expand_like(coeffs.coef_model_output, model_output) * (model_output - reference_output)
    return diff.square() / (2 * _expand_like(coeffs.std_dev_t, model_output).square())


class StepTable:
    """What the env asks of any sampler's per-step table (``pxpo_gym.ddim.DDIMSchedule``,
    ``pxpo_gym.flow.FlowSchedule``): its (T,) ``timesteps`` and ``coefficients``."""

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


class Sampler:
    """A sampler plug-in: how the env builds its ``StepTable`` for a model (register it with
    ``pxpo_gym.samplers.register_sampler``).

    Subclass it, set the class attributes and define ``build`` and ``timestep_space``. The env picks the
    sampler named by ``LoadedModel.sampler``, or else the first registered one whose ``prediction_types``
    hold the model's ``NoiseModel.prediction_type``.
    """

    name: ClassVar[str]
    """The registry key."""
    prediction_types: ClassVar[tuple[str, ...]] = ()
    """The ``NoiseModel.prediction_type`` values this sampler steps with by default."""
    prediction: ClassVar[str]
    """What the action is, as the env reports it (``DiffusionDenoiseVectorEnv.prediction``): 'eps' (a
    noise prediction) or 'velocity'."""

    @classmethod
    def build(
        cls,
        loaded: LoadedModel,
        num_inference_steps: int,
        device: torch.device | str,
        eta: float | None,
        noise_level: float | None,
        transition: str | None,
        log_density: str | None,
    ) -> StepTable:
        """The per-step table of ``loaded``'s scheduler with T = ``num_inference_steps`` steps, on ``device``.

        The other arguments are the env's sampler keywords as the user gave them (None: not given); a
        sampler refuses those it does not take, with a ValueError naming them.
        """
        raise NotImplementedError

    @classmethod
    def timestep_space(cls, num_train_timesteps: int) -> gym.spaces.Box:
        """The observation's ``timestep`` entry, (1,) per env: what the model is called with (-1 at x_0)."""
        raise NotImplementedError

    @classmethod
    def settings(cls, table: Any) -> dict[str, Any]:
        """The settings ``table`` samples with, for reports: ``eta``, ``sampler`` and ``noise_level`` (JSON
        values; None where the sampler has no such setting)."""
        return {"eta": None, "sampler": cls.name, "noise_level": None}
