"""Flow-matching transitions: hand-worked coefficients, the Euler limit against diffusers, the
log-density against torch.distributions, and both samplers drawing the right marginal."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pxpo_gym.flow import FlowSchedule, cps_coefficients, sde_coefficients
from pxpo_gym.transition import step_log_prob, transition_mean, transition_step

T = torch.tensor


def test_sde_coefficients_hand_worked():
    # sigma 0.5 -> 0.25, noise level 0.5: dt = -0.25, g^2 = 0.25 * 0.5 / 0.5 = 0.25;
    # a = 1 + 0.25 * -0.25 / 1 = 0.9375; b = -0.25 * (1 + 0.25 * 0.5 / 1) = -0.28125; s = sqrt(0.25 * 0.25).
    a, b, s = sde_coefficients(T(0.5), T(0.25), 0.5, sigma_max=0.9)
    assert (a.item(), b.item(), s.item()) == pytest.approx((0.9375, -0.28125, 0.25))
    # At sigma = 1 the denominator 1 - sigma is 1 - sigma_max: g^2 = 0.25 * 1 / (1 - 0.75) = 1,
    # dt = -0.25: a = 1 - 0.125, b = -0.25 * (1 + 0) , s = sqrt(0.25).
    a, b, s = sde_coefficients(T(1.0), T(0.75), 0.5, sigma_max=0.75)
    assert (a.item(), b.item(), s.item()) == pytest.approx((0.875, -0.25, 0.5))


def test_cps_coefficients_hand_worked():
    # sigma 0.5 -> 0.25, noise level 1/3 (angle pi / 6): s = 0.25 * 0.5 = 0.125, c = 0.25 * sqrt(3) / 2;
    # a = 0.75 + c, b = 0.5 c - 0.5 * 0.75.
    c = 0.25 * math.sqrt(3) / 2
    a, b, s = cps_coefficients(T(0.5), T(0.25), 1 / 3)
    assert (a.item(), b.item(), s.item()) == pytest.approx((0.75 + c, 0.5 * c - 0.375, 0.125))


def test_cps_preserves_the_coefficients_of_data_and_noise():
    # With the true velocity of x = (1 - sigma) x0 + sigma eps, CPS's mean is (1 - sigma') x0 + c eps and
    # c^2 + s^2 = sigma'^2: the next sample has exactly the noise a sample at sigma' should.
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    sigma, sigma_prev = T(0.7), T(0.4)
    coeffs = cps_coefficients(sigma, sigma_prev, 0.6)
    x = (1 - sigma) * x0 + sigma * eps
    c = 0.4 * math.cos(0.6 * math.pi / 2)
    torch.testing.assert_close(transition_mean(x, eps - x0, coeffs), (1 - sigma_prev) * x0 + c * eps)
    assert c**2 + coeffs.std_dev_t.item() ** 2 == pytest.approx(0.4**2)


@pytest.mark.parametrize("transition", ["sde", "cps"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_zero_noise_is_diffusers_euler_step(transition, shift):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    schedule = FlowSchedule.from_scheduler(scheduler, 8, noise_level=1e-12, transition=transition)
    scheduler.set_timesteps(8)
    torch.testing.assert_close(schedule.timesteps, scheduler.timesteps.float())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    for k in range(8):
        v = torch.randn(2, 3, 4, 4, generator=gen)
        coeffs = schedule.at(torch.tensor([k, k]))
        ours = transition_mean(x, v, coeffs)
        theirs = scheduler.step(v, scheduler.timesteps[k], x).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        x = theirs


@pytest.mark.parametrize("transition", ["sde", "cps"])
def test_step_log_prob_matches_torch_distributions(transition):
    schedule = FlowSchedule.from_scheduler(
        FlowMatchEulerDiscreteScheduler(shift=3.0), 10, noise_level=0.7, transition=transition
    )
    gen = torch.Generator().manual_seed(2)
    index = torch.tensor([0, 4, 9])
    coeffs = schedule.at(index)
    x, v, z = (torch.randn(3, 2, 3, 3, generator=gen) for _ in range(3))
    prev = transition_step(x, v, coeffs, z)
    expected = torch.distributions.Normal(
        transition_mean(x, v, coeffs), coeffs.std_dev_t.view(3, 1, 1, 1)
    ).log_prob(prev)
    torch.testing.assert_close(step_log_prob(prev, x, v, coeffs), expected)
    assert bool((coeffs.std_dev_t > 0).all()), "every step, the last included, has a likelihood"
    if transition == "cps":  # the last step (to sigma' = 0) is the SDE step
        sde = FlowSchedule.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), 10, noise_level=0.7)
        assert [c[-1].item() for c in schedule.coefficients] == [c[-1].item() for c in sde.coefficients]


@pytest.mark.parametrize("transition, noise_level", [("sde", 0.7), ("sde", 1.5), ("cps", 0.1)])
def test_samplers_draw_the_data_marginal_with_the_exact_velocity(transition, noise_level):
    # Data N(0, tau^2) per element: the exact velocity is E[eps - x0 | x_sigma] = x (sigma - (1 - sigma) tau^2)
    # / ((1 - sigma)^2 tau^2 + sigma^2). A correct sampler ends with variance ~ tau^2 at sigma_min; a wrong
    # sign in the drift correction or the noise scale does not. (CPS re-noises a fixed share of sigma' at
    # every step, so only at low noise levels: at 0.7 it ends at 0.165, and 0.177 with 200 steps.)
    tau2 = 0.25
    schedule = FlowSchedule.from_scheduler(
        FlowMatchEulerDiscreteScheduler(), 40, noise_level=noise_level, transition=transition
    )
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(200_000, generator=gen, dtype=torch.float64)
    for k in range(schedule.num_steps):
        sigma = schedule.sigmas[k].double()
        v = x * (sigma - (1 - sigma) * tau2) / ((1 - sigma) ** 2 * tau2 + sigma**2)
        coeffs = tuple(c.double() for c in schedule.at(torch.tensor(k)))
        x = (
            coeffs[0] * x
            + coeffs[1] * v
            + coeffs[2] * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        )
    assert float(x.var()) == pytest.approx(tau2, rel=0.1 if transition == "cps" else 0.03)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_level": 0.0}, "deterministic ODE step"),
        ({"noise_level": float("nan")}, "noise_level must be > 0"),
        ({"noise_level": 1.5, "transition": "cps"}, "noise_level must be in \\(0, 1\\]"),
        ({"transition": "ode"}, "transition must be one of"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an int >= 1"),
    ],
)
def test_flow_schedule_refuses_bad_settings(kwargs, message):
    args = {"num_inference_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        FlowSchedule.from_scheduler(FlowMatchEulerDiscreteScheduler(), **args)


def test_one_step_episode_uses_the_next_grid_sigma():
    # T = 1: the grid is 1 -> 0, and the next grid sigma (0) stands in for sigma in 1 - sigma, as in
    # Flow-GRPO: g^2 = 0.49, a = 1 - 0.49 / 2 = 0.755, b = -1, s = 0.7 (before: 1 - 1e-3, a = -244).
    schedule = FlowSchedule.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), 1, noise_level=0.7)
    a, b, s = (c.item() for c in schedule.coefficients)
    assert (a, b, s) == pytest.approx((0.755, -1.0, 0.7))


def reference_flow_step(x, v, sigma, sigma_next, sigma_second, noise_level, transition):
    """An independent float64 transcription of the published steps (mean and std of x_{sigma_next}):
    Flow-GRPO's Eq. 9 as its sde_step_with_logprob writes it, and coefficients-preserving sampling as the
    CPS paper writes it (x0 and eps estimated from v; the last step to 0 is the SDE step)."""
    dt = sigma_next - sigma
    if transition == "cps" and sigma_next > 0:
        x0, eps = x - sigma * v, x + (1 - sigma) * v
        angle = noise_level * math.pi / 2
        return (1 - sigma_next) * x0 + sigma_next * math.cos(angle) * eps, sigma_next * math.sin(angle)
    std_dev_t = math.sqrt(sigma / (1 - (sigma_second if sigma == 1 else sigma))) * noise_level
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, std_dev_t * math.sqrt(-dt)


@pytest.mark.parametrize("transition", ["sde", "cps"])
@pytest.mark.parametrize("noise_level", [0.5, 0.7, 1.0])
@pytest.mark.parametrize("steps", [1, 10])
def test_steps_match_a_float64_transcription_at_the_noise_users_train_with(transition, noise_level, steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = FlowSchedule.from_scheduler(scheduler, steps, noise_level=noise_level, transition=transition)
    scheduler.set_timesteps(steps)
    grid = scheduler.sigmas.double().tolist()
    gen = torch.Generator().manual_seed(3)
    for k in range(steps):
        x, v, z = (torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
        mean, std = reference_flow_step(x, v, grid[k], grid[k + 1], grid[1], noise_level, transition)
        coeffs = schedule.at(torch.tensor([k, k]))
        torch.testing.assert_close(
            transition_mean(x.float(), v.float(), coeffs).double(), mean, rtol=1e-5, atol=1e-5
        )
        assert coeffs.std_dev_t[0].item() == pytest.approx(std, rel=1e-5)
        prev = mean + std * z  # the step taken, and its log-density under both
        expected = torch.distributions.Normal(mean, std).log_prob(prev)
        torch.testing.assert_close(
            step_log_prob(prev.float(), x.float(), v.float(), coeffs).double(), expected, rtol=1e-4, atol=1e-4
        )


def test_the_public_cps_log_density_is_the_unnormalised_square():
    from pxpo_gym.transition import TransitionCoefficients

    coeffs = TransitionCoefficients(T([0.5]), T([-0.25]), T([0.2]))
    x, v, prev = T([[1.0, 2.0]]), T([[0.4, -0.4]]), T([[0.3, 1.2]])
    # mean = 0.5 x - 0.25 v = (0.4, 1.1): -(prev - mean)^2 = (-0.01, -0.01)
    torch.testing.assert_close(step_log_prob(prev, x, v, coeffs, "public"), T([[-0.01, -0.01]]))
    exact = step_log_prob(prev, x, v, coeffs)
    torch.testing.assert_close(
        exact, -0.01 / (2 * 0.04) - math.log(0.2) - 0.5 * math.log(2 * math.pi) + 0 * exact
    )
    with pytest.raises(ValueError, match="density must be one of"):
        step_log_prob(prev, x, v, coeffs, "exact")
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert FlowSchedule.from_scheduler(scheduler, 4, 0.7, "cps", log_density="public").log_density == "public"
    with pytest.raises(ValueError, match="'public' with transition='cps'"):
        FlowSchedule.from_scheduler(scheduler, 4, 0.7, "sde", log_density="public")


def test_training_with_the_public_cps_density_records_it(tiny_flow_dir, tmp_path):
    from agents.trainer import Trainer
    from tests.agents.test_agents import tiny_config

    trainer = Trainer(tiny_config(tiny_flow_dir, tmp_path, transition="cps", log_density="public"))
    metrics, traj = trainer.train_epoch()
    # the recorded per-pixel log-likelihoods are sums of -(x - mean)^2: never positive, and 0 only on exact means
    assert bool((traj.logp_pixels <= 0).all()) and float(traj.logp_pixels.mean()) > -10
    gaussian = Trainer(tiny_config(tiny_flow_dir, tmp_path, transition="cps"))
    _, plain = gaussian.train_epoch()
    assert torch.equal(
        plain.images, traj.images
    )  # the same first epoch's samples (sampling is unchanged) ...
    assert not torch.allclose(plain.logp_pixels, traj.logp_pixels)  # ... under another log-density
