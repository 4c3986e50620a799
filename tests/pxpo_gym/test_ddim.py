"""The DDIM math against diffusers' scheduler, torch.distributions and hand-worked numbers."""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import make_scheduler
from diffusers import DDIMScheduler

from pxpo_gym.ddim import DDIMSchedule, transition_coefficients
from pxpo_gym.transition import (
    TransitionCoefficients,
    gaussian_log_prob,
    step_log_prob,
    transition_step,
)


@pytest.mark.parametrize(
    "overrides, steps, eta",
    [
        ({}, 20, 1.0),
        ({"timestep_spacing": "trailing", "steps_offset": 0}, 20, 1.0),
        ({}, 7, 0.5),
        ({"timestep_spacing": "leading", "steps_offset": 1, "beta_schedule": "linear"}, 50, 1.0),
    ],
)
def test_step_matches_diffusers_ddim(overrides, steps, eta):
    scheduler = make_scheduler(**overrides)
    schedule = DDIMSchedule.from_scheduler(scheduler, steps, eta)
    reference = DDIMScheduler.from_config(scheduler.config, set_alpha_to_one=False, clip_sample=False)
    reference.set_timesteps(steps)
    assert torch.equal(schedule.timesteps, reference.timesteps.long())
    gen = torch.Generator().manual_seed(0)
    for k, t in enumerate(reference.timesteps):
        sample, eps, noise = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
        expected = reference.step(eps, t, sample, eta=eta, variance_noise=noise).prev_sample
        index = torch.full((2,), k)
        got = transition_step(sample, eps, schedule.at(index), noise)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_per_sample_timesteps_match_one_at_a_time():
    schedule = DDIMSchedule.from_scheduler(make_scheduler(), 10, 1.0)
    gen = torch.Generator().manual_seed(1)
    sample, eps, noise = (torch.randn(4, 3, 5, 5, generator=gen) for _ in range(3))
    index = torch.tensor([0, 3, 9, 5])
    batched = transition_step(sample, eps, schedule.at(index), noise)
    for i in range(4):
        single = transition_step(
            sample[i : i + 1], eps[i : i + 1], schedule.at(index[i : i + 1]), noise[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], single)


def test_every_step_is_stochastic_including_the_last():
    schedule = DDIMSchedule.from_scheduler(make_scheduler(), 20, 1.0)
    assert bool((schedule.coefficients.std_dev_t > 0).all())
    assert int(schedule.prev_timesteps[-1]) == -1


def test_gaussian_log_prob_matches_torch_distributions():
    gen = torch.Generator().manual_seed(2)
    value, mean = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    std = torch.tensor([0.1, 1.0, 2.5])
    expected = torch.distributions.Normal(mean, std[:, None, None, None]).log_prob(value)
    torch.testing.assert_close(gaussian_log_prob(value, mean, std), expected)


def test_step_log_prob_hand_worked():
    # a = 2, b = -1, sigma = 0.5; x_t = 1, eps = 0.5 -> mean = 2 - 0.5 = 1.5.
    # x_prev = 2: log N(2; 1.5, 0.25) = -(0.5^2)/(2 * 0.25) - log 0.5 - 0.5 log(2 pi)
    #           = -0.5 + 0.693147 - 0.918939 = -0.725791
    coeffs = TransitionCoefficients(torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([0.5]))
    out = step_log_prob(
        torch.full((1, 1, 1, 1), 2.0), torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 0.5), coeffs
    )
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(-0.5 + math.log(2) - 0.5 * math.log(2 * math.pi), abs=1e-6)


def test_coefficients_hand_worked():
    # abar_t = 0.25, abar_prev = 0.5, eta = 1:
    # sigma^2 = (0.5 / 0.75) * (1 - 0.5) = 1/3; a = sqrt(2);
    # b = sqrt(1 - 0.5 - 1/3) - sqrt(0.5) * sqrt(0.75) / 0.5 = sqrt(1/6) - sqrt(1.5)
    c = transition_coefficients(torch.tensor(0.25), torch.tensor(0.5), 1.0)
    assert c.std_dev_t.item() == pytest.approx(math.sqrt(1 / 3))
    assert c.coef_sample.item() == pytest.approx(math.sqrt(2))
    assert c.coef_model_output.item() == pytest.approx(math.sqrt(1 / 6) - math.sqrt(1.5))


@pytest.mark.parametrize("eta", [0.0, -1.0, 1.5, float("nan"), True])
def test_bad_eta_is_rejected(eta):
    with pytest.raises(ValueError, match="eta"):
        DDIMSchedule.from_scheduler(make_scheduler(), 20, eta)


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5])
def test_bad_num_inference_steps_is_rejected(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIMSchedule.from_scheduler(make_scheduler(), steps, 1.0)


def refused_with(message: str, scheduler, steps: int) -> None:
    """DDIMSchedule.from_scheduler(scheduler, steps, 1.0) raises ValueError with exactly ``message``."""
    with pytest.raises(ValueError) as caught:
        DDIMSchedule.from_scheduler(scheduler, steps, 1.0)
    assert str(caught.value) == message


def test_schedule_with_a_deterministic_last_step_is_rejected():
    # 'leading' spacing with offset 0 ends at t = 0, where abar_prev = abar_t: sigma = 0.
    message = (
        "the scheduler's DDIM step 19 (timestep 0 -> -50) has std_dev_t = 0, so it has no likelihood; use "
        "timestep_spacing='trailing' or steps_offset=1 in the scheduler config"
    )
    refused_with(message, make_scheduler(steps_offset=0), 20)


def test_schedule_tables_are_the_schedulers_cumulative_alphas():
    scheduler = make_scheduler()
    schedule = DDIMSchedule.from_scheduler(scheduler, 20, 1.0)
    torch.testing.assert_close(schedule.alpha_prod_t, scheduler.alphas_cumprod[schedule.timesteps])
    assert schedule.timesteps.dtype == torch.int64


def test_few_step_trailing_schedule_stays_finite():
    # diffusers' float32 DDIMScheduler.step returns NaN here (first step from t=999);
    # our coefficients are computed in float64 and clamped.
    schedule = DDIMSchedule.from_scheduler(
        make_scheduler(timestep_spacing="trailing", steps_offset=0), 5, 1.0
    )
    for coef in schedule.coefficients:
        assert bool(torch.isfinite(coef).all())


def test_num_inference_steps_boundaries_and_messages():
    assert DDIMSchedule.from_scheduler(make_scheduler(), 1, 1.0).num_steps == 1
    assert DDIMSchedule.from_scheduler(make_scheduler(), 999, 1.0).num_steps == 999
    refused_with(
        "num_inference_steps must be an int in [1, 999], got num_inference_steps=1000", make_scheduler(), 1000
    )
    # A grid whose offset puts its first step at t = 1000, one past the last training timestep.
    message = (
        "num_inference_steps=10 on this scheduler's grid (timestep_spacing='leading', steps_offset=100) puts a "
        "step at t=1000, past the last training timestep 999: use at most 999 steps"
    )
    refused_with(message, make_scheduler(steps_offset=100), 10)


def test_a_grid_far_below_pure_noise_is_warned_about_with_its_first_timestep():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DDIMSchedule.from_scheduler(make_scheduler(), 501, 1.0)
    (warning,) = caught
    abar = float(make_scheduler().alphas_cumprod[501])
    assert str(warning.message) == (
        "num_inference_steps=501 on this scheduler's grid (timestep_spacing='leading') starts at t=501, more "
        f"than one step below the last training timestep 999, where alpha_prod_t={abar:.3g}: the episode's "
        "pure-noise x_T is not what the model expects there. Use a T that divides 1000, or "
        "timestep_spacing='trailing'"
    )
    # It points at the caller (stacklevel), not at the line in pxpo_gym/ddim.py that raised it.
    assert not warning.filename.endswith(os.path.join("pxpo_gym", "ddim.py")), warning.filename


def test_no_warning_where_the_grid_starts_at_the_top_or_at_pure_noise():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # A schedule that barely noises (abar = 0.6 at t = 951): the standard 20-step grid starts one step
        # below the top, which is no reason to warn.
        DDIMSchedule.from_scheduler(
            make_scheduler(beta_schedule="linear", beta_start=1e-5, beta_end=1e-3), 20, 1.0
        )
        # A grid far below the top, but where the schedule is already pure noise (abar < 0.05).
        DDIMSchedule.from_scheduler(
            make_scheduler(beta_schedule="linear", beta_start=1e-3, beta_end=0.2), 501, 1.0
        )


def test_a_last_step_to_timestep_zero_uses_abar_zero_and_float64_digits():
    # T = 30 (step 33) with offset 33: the grid ends at t = 33 -> 0.
    scheduler = make_scheduler(steps_offset=33)
    schedule = DDIMSchedule.from_scheduler(scheduler, 30, 1.0)
    abar = scheduler.alphas_cumprod.double()
    assert int(schedule.prev_timesteps[-1]) == 0
    assert schedule.alpha_prod_t_prev[-1].item() == pytest.approx(float(abar[0]), rel=1e-7)
    # The last step of the standard grid (t = 1 -> abar_0): sigma from float64, to float32's precision.
    schedule = DDIMSchedule.from_scheduler(make_scheduler(), 20, 1.0)
    a_t, a_prev = abar[1], abar[0]
    sigma = math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    assert schedule.coefficients.std_dev_t[-1].item() == pytest.approx(sigma, rel=1e-6)


def test_the_warning_threshold_is_one_step_below_the_top():
    import warnings

    # A barely-noising schedule (abar ~ 0.6 near the top), T = 30 'leading' (step 33, last step 29 x 33 = 957):
    # the threshold is 999 - 1000 / 30 = 965.67. Offset 8 starts at t = 965 (warned), offset 9 at 966 (not).
    barely = {"beta_schedule": "linear", "beta_start": 1e-5, "beta_end": 1e-3}
    with pytest.warns(UserWarning, match="starts at t=965"):
        DDIMSchedule.from_scheduler(make_scheduler(steps_offset=8, **barely), 30, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DDIMSchedule.from_scheduler(make_scheduler(steps_offset=9, **barely), 30, 1.0)
