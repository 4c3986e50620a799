"""PXPO's credit kernels (agents.credit): by hand, their footprint and its probes, image credit against DDPO."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.credit import Footprint, apply_kernels, credit_kernels, measure_footprint
from agents.trainer import Trainer
from tests.agents.test_agents import policy_grad, tiny_config
from tests.agents.toy_rewards import box_brightness, brightness, right_neighbour_brightness


def delta(steps: int, h: int, w: int) -> torch.Tensor:
    kernel = torch.zeros(steps, 2 * h - 1, 2 * w - 1)
    kernel[:, h - 1, w - 1] = 1.0
    return kernel


# -- kernels by hand on a 4x4 map ---------------------------------------------

A = torch.arange(16, dtype=torch.float32).view(1, 4, 4) - 7.5  # one 4x4 advantage map


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean().sqrt()


def footprint_env(tiny_model_dir, reward, num_envs=8):
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=num_envs,
        model=str(tiny_model_dir),
        reward=reward,
        num_inference_steps=4,
    )


def test_identity_kernel_gives_the_map_back_bit_for_bit():
    out = apply_kernels(A, delta(2, 4, 4))
    assert out.shape == (1, 2, 4, 4)
    assert torch.equal(out[:, 0], A) and torch.equal(out[:, 1], A)


def test_shift_kernel_credits_the_right_neighbour():
    # Kernel index (a, b) is the offset o = (a - 3, b - 3) = reward pixel - noise pixel; o = (0, +1):
    # each noise pixel gets the advantage of the pixel to its right (0 past the last column).
    kernel = torch.zeros(1, 7, 7)
    kernel[0, 3, 4] = 1.0
    out = apply_kernels(A, kernel)[:, 0]
    shifted = torch.zeros(1, 4, 4)
    shifted[..., :3] = A[..., 1:]  # e.g. pixel (0, 0) gets A[0, 1] = 1 - 7.5 = -6.5
    expected = shifted * rms(A) / rms(shifted)
    torch.testing.assert_close(out, expected)
    assert out[0, 0, 0] < 0 and out[0, 0, 3] == 0


def test_all_ones_kernel_gives_every_pixel_the_map_sum():
    # Every offset weighted 1: each pixel is credited with sum_ij A_ij = 0 here (A is centred), so
    # use A + 1 (sum 16): a constant map whose RMS is rescaled to A + 1's RMS.
    shifted = A + 1
    out = apply_kernels(shifted, torch.ones(1, 7, 7))[:, 0]
    expected = torch.full((1, 4, 4), float(rms(shifted)))  # 16 everywhere, rescaled to RMS(A + 1)
    torch.testing.assert_close(out, expected)


def test_cross_kernel_by_hand():
    # Offsets (0,0), (+-1,0), (0,+-1) with weights 1, 0.5: pixel (1, 1) of A gets
    # A[1,1] + 0.5 (A[0,1] + A[2,1] + A[1,0] + A[1,2]) = -2.5 + 0.5 (-6.5 + 1.5 - 3.5 - 1.5) = -7.5.
    kernel = torch.zeros(1, 7, 7)
    kernel[0, 3, 3] = 1.0
    kernel[0, 2, 3] = kernel[0, 4, 3] = kernel[0, 3, 2] = kernel[0, 3, 4] = 0.5
    raw = torch.nn.functional.conv2d(A[:, None], kernel[:, None], padding=3)[:, 0]
    assert float(raw[0, 1, 1]) == -7.5
    torch.testing.assert_close(apply_kernels(A, kernel)[:, 0], raw * rms(A) / rms(raw))


def test_credit_kernels_by_hand():
    influence = torch.zeros(2, 3, 3)
    influence[0] = torch.tensor([[0.0, 0.1, 0.0], [0.5, 1.0, 0.2], [0.0, 0.05, 0.0]])
    # step 1: all zero -> identity
    footprint = credit_kernels(influence, "footprint", 0.15)
    torch.testing.assert_close(
        footprint[0], torch.tensor([[0.0, 0.0, 0.0], [0.5, 1.0, 0.2], [0.0, 0.0, 0.0]])
    )
    torch.testing.assert_close(footprint[1], delta(1, 2, 2)[0])
    # Squared mass: 1, 0.25, 0.04, 0.01, 0.0025 (total 1.3025). Holding 1 - 0.2 = 0.8 of it needs
    # only the centre (1 / 1.3025 = 0.77 < 0.8: not enough) -> centre + left (0.96).
    support = credit_kernels(influence, "support", 0.2)
    torch.testing.assert_close(support[0], torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    # Holding 0.99: centre, left, right (0.992).
    support = credit_kernels(influence, "support", 0.01)
    torch.testing.assert_close(support[0], torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))


def test_receptive_credit_is_the_last_steps_footprint_kernel_at_every_step():
    # Step 0 wide (a denoiser spreading its noise), step 1 (the last) the reward's own 1 x 3 field.
    influence = torch.zeros(2, 3, 3)
    influence[0] = 1.0
    influence[1] = torch.tensor([[0.0, 0.05, 0.0], [0.4, 2.0, 1.0], [0.0, 0.0, 0.0]])
    receptive = credit_kernels(influence, "receptive", 0.15)
    # Last step / its max (2.0), entries under 0.15 dropped (0.05 / 2 = 0.025): at both steps.
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.2, 1.0, 0.5], [0.0, 0.0, 0.0]])
    for t in range(2):
        torch.testing.assert_close(receptive[t], expected)
    # A pixel-local reward (last step: the centre only) gives the identity at every step, so
    # receptive credit is pure PXPO there whatever the earlier steps measured.
    influence[1] = 0.0
    influence[1, 1, 1] = 3.0
    receptive = credit_kernels(influence, "receptive", 0.3)
    assert torch.equal(receptive, delta(2, 2, 2))


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.ones(2, 3, 3), "pixel", 0.1), "credit must be one of"),
        ((torch.ones(2, 3, 3), "footprint", 1.0), "credit_threshold must be in"),
        ((torch.ones(2, 4, 3), "footprint", 0.1), "must be \\(T, 2h - 1, 2w - 1\\)"),
        ((torch.ones(2, 3, 4), "footprint", 0.1), "must be \\(T, 2h - 1, 2w - 1\\)"),
        ((torch.ones(3, 3), "footprint", 0.1), "must be \\(T, 2h - 1, 2w - 1\\)"),
        ((-torch.ones(2, 3, 3), "support", 0.1), "^influence must be finite and >= 0$"),
    ],
)
def test_credit_kernels_refuse_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        credit_kernels(*args)


def test_credit_kernels_per_step_over_three_steps_with_an_empty_one():
    influence = torch.zeros(3, 3, 3)  # step 0 reaches nothing: the identity; steps 1 and 2 differ
    influence[1, 1, 1], influence[1, 0, 1] = 2.0, 1.0
    influence[2, 1, 1], influence[2, 1, 2] = 4.0, 1.0
    footprint = credit_kernels(influence, "footprint", 0.1)
    assert torch.equal(footprint[0], delta(1, 2, 2)[0])
    torch.testing.assert_close(footprint[1], influence[1] / 2.0)
    torch.testing.assert_close(footprint[2], influence[2] / 4.0)
    receptive = credit_kernels(influence, "receptive", 0.1)  # the last step's at all three
    for t in range(3):
        torch.testing.assert_close(receptive[t], influence[2] / 4.0)


def test_credit_kernels_at_their_boundaries():
    # footprint: an entry exactly at threshold x max is kept ("below" is dropped)
    influence = torch.tensor([[[0.0, 0.5, 0.0], [0.4, 2.0, 0.0], [0.0, 0.0, 0.0]]])
    expected = torch.tensor([[[0.0, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.equal(credit_kernels(influence, "footprint", 0.25), expected)
    # support: squared masses 50, 20, 10, 9.5, 5, 2.5, 1, 1, 1 (total 100, none 0): 90% needs the first 5
    # (the first 4 hold 89.5, short of 90 but above 90% of all but the last entry)
    mass = torch.tensor([50.0, 20.0, 10.0, 9.5, 5.0, 2.5, 1.0, 1.0, 1.0])
    support = credit_kernels(mass.sqrt().view(1, 3, 3), "support", 0.1)
    assert torch.equal(support.flatten(), torch.tensor([1.0] * 5 + [0.0] * 4))


def test_apply_kernels_refuses_a_kernel_of_the_wrong_size_naming_both_shapes():
    # A 3 x 4 map needs (T, 5, 7) kernels: h and w differ, so a swapped or mis-sized message shows.
    with pytest.raises(ValueError) as err:
        apply_kernels(torch.zeros(2, 3, 4), torch.zeros(2, 3, 3))
    assert str(err.value) == "kernels must be (T, 5, 7) for (3, 4) maps, got (2, 3, 3)"


def test_apply_kernels_takes_float64_kernels_and_returns_float32():
    out = apply_kernels(A, delta(1, 4, 4).double())
    assert out.dtype == torch.float32
    assert torch.equal(out[:, 0], A)


def test_footprint_summary_by_hand():
    influence = torch.zeros(4, 5, 5)  # offsets -2 ... 2; index 2 is o = 0
    influence[0, 2, 2] = 1.0  # all at the pixel itself: share 1, radius 0
    # step 1 all 0: nothing measured reaches the map (and the steps after it are still summarised)
    influence[2, 2, 2] = 1.0  # squared mass 1 at o = 0, 2 at |o| = 1 (two cells), 6 at |o| = 2
    influence[2, 1, 2] = 1.0
    influence[2, 2, 3] = 1.0
    influence[2, 0, 0] = 6.0**0.5
    influence[3, 2, 2] = 3.0  # squared mass 9 at o = 0 and 1 at |o| = 1: exactly 90% at radius 0
    influence[3, 3, 3] = 1.0
    summary = Footprint(influence, "autograd", 4, 1.23456).summary()
    assert summary["self_share"] == [1.0, 0.0, pytest.approx(1 / 9), pytest.approx(0.9)]
    # step 2: 1 / 9 within radius 0, 3 / 9 within 1, 9 / 9 within 2: 90% needs radius 2
    assert summary["radius90"] == [0, 0, 2, 0]
    assert summary["method"] == "autograd" and summary["images"] == 4 and summary["seconds"] == 1.235


def test_probe_sensitivity_by_hand(monkeypatch):
    """A reward map that is the square of the last step's noise summed over channels, at each pixel: a
    forward difference of size d at pixel p of that step moves every channel by d / sqrt(C), so
    ((s + d sqrt(C))^2 - s^2) / d squared lands at (image, step, p); other steps read nothing."""
    import agents.credit as credit

    def maps_of(envs, action_fn, noise, contexts):
        return noise[:, -1].sum(dim=1).square()  # (n, h, w)

    monkeypatch.setattr(credit, "_rollout_maps", maps_of)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 3, 4, 5, generator=generator)  # n=2, T=3 steps (+ x_T), C=3, 4 x 5 grid
    rows, cols = torch.tensor([1, 3]), torch.tensor([4, 0])
    probe_steps = torch.tensor([2, 0])  # image 0: the last step (its noise index 3); image 1: the first
    d = 0.5
    out = credit._probe_sensitivity(None, None, noise, torch.zeros(2), rows, cols, probe_steps, d)
    assert out.shape == (2, 3, 4, 5)
    s = noise[0, 3, :, 1, 4].sum()
    expected = torch.zeros(2, 3, 4, 5)
    expected[0, 2, 1, 4] = (((s + d * 3**0.5) ** 2 - s**2) / d) ** 2
    torch.testing.assert_close(out, expected)


def test_pxpo_config_refuses_bad_credit():
    with pytest.raises(ValueError, match="credit must be one of"):
        PXPOConfig(credit="global")
    with pytest.raises(ValueError, match="silent_kl_coef must be >= 0"):
        PXPOConfig(silent_kl_coef=-1.0)


# -- the two limits: identity == pure PXPO, all-ones == DDPO -------------------


def test_identity_footprint_equals_pure_pxpo_bit_for_bit():
    torch.manual_seed(0)
    rewards, maps, contexts = torch.rand(8), torch.rand(8, 4, 4), torch.tensor([0, 1] * 4)
    pure = PXPO(PXPOConfig(credit="pixel", stat_min_count=2), 2, (4, 4))
    kernel = PXPO(PXPOConfig(credit="footprint", stat_min_count=2), 2, (4, 4))
    kernel.set_footprint(delta(3, 4, 4))
    a_pure = pure.advantages(rewards, maps, contexts)
    a_kernel = kernel.advantages(rewards, maps, contexts)
    assert a_kernel.shape == (8, 3, 4, 4)
    for t in range(3):
        assert torch.equal(a_kernel[:, t], a_pure)


def test_image_credit_equals_ddpo_sf_on_the_same_batch(tiny_model_dir, tmp_path):
    ddpo = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo", estimator="sf"))
    pxpo = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="pxpo", estimator="sf", credit="image"))
    traj = ddpo.sample()
    adv_ddpo = ddpo.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    adv_pxpo = pxpo.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    # The advantages bit for bit (the same buffer statistics on the same rewards) ...
    assert torch.equal(adv_pxpo, adv_ddpo[:, None, None].expand_as(adv_pxpo))
    # ... and the gradients to float rounding (PXPO sums A log p over pixels; DDPO averages log p first).
    g_pxpo, g_ddpo = policy_grad(pxpo, traj, adv_pxpo), policy_grad(ddpo, traj, adv_ddpo)
    assert float((g_pxpo - g_ddpo).norm() / g_ddpo.norm()) < 1e-5


# -- the footprint estimator --------------------------------------------------


@pytest.mark.parametrize("method", ["autograd", "probe"])
def test_footprint_recovers_a_known_box_at_the_last_step(tiny_model_dir, method):
    # At the last step x_0 = a x_1 + b eps(x_1) + sigma z: z reaches the image only at its own pixel,
    # so the reward's footprint there is exactly the reward's own 3x3 box.
    envs = footprint_env(tiny_model_dir, box_brightness)
    model = envs.unwrapped.model
    footprint = measure_footprint(envs, model, images=24, seed=0, method=method)
    assert footprint.method == method and footprint.influence.shape == (4, 15, 15)
    last = footprint.influence[-1]
    support = last > 1e-6 * last.max()
    box = torch.zeros(15, 15, dtype=torch.bool)
    box[6:9, 6:9] = True
    assert torch.equal(support, box)
    # Earlier steps pass through the UNet: their footprint is wider than the box.
    assert int((footprint.influence[0] > 1e-6 * footprint.influence[0].max()).sum()) > 9


@pytest.mark.parametrize("method", ["autograd", "probe"])
def test_footprint_offsets_point_from_the_noise_pixel_to_the_reward_pixel(tiny_model_dir, method):
    # Noise at p reaches (at the last step) only the reward of q = p - (0, 1): offset o = q - p = (0, -1),
    # kernel index (h - 1, w - 2). A flipped offset convention would put it at (h - 1, w).
    envs = footprint_env(tiny_model_dir, right_neighbour_brightness)
    footprint = measure_footprint(envs, envs.unwrapped.model, images=24, seed=0, method=method)
    last = footprint.influence[-1]
    support = (last > 1e-6 * last.max()).nonzero().tolist()
    assert support == [[7, 6]]


def test_pixel_local_reward_at_the_last_step_gives_the_identity(tiny_model_dir):
    envs = footprint_env(tiny_model_dir, brightness)
    footprint = measure_footprint(envs, envs.unwrapped.model, images=16, seed=1)
    assert footprint.method == "autograd"  # brightness is differentiable
    kernels = credit_kernels(footprint.influence, "footprint", 1e-6)
    assert torch.equal(kernels[-1], delta(1, 8, 8)[0])
    summary = footprint.summary()
    assert summary["self_share"][-1] == 1.0 and summary["radius90"][-1] == 0


def test_probe_measures_a_whole_image_reward_as_global(tiny_model_dir):
    # A scalar reward per image (broadcast to a constant map): every noise pixel reaches every reward pixel.
    def mean_brightness(images, contexts):
        return images.mean(dim=(1, 2, 3)).detach()  # no gradient, as JPEG size

    envs = footprint_env(tiny_model_dir, mean_brightness)
    footprint = measure_footprint(envs, envs.unwrapped.model, images=16, seed=0)
    assert footprint.method == "probe"
    # The first step: at least 4 probes (the corners) see every offset of the 8x8 map.
    assert bool((footprint.influence[0] > 0).all())


def test_autograd_is_refused_for_a_reward_without_gradient(tiny_model_dir):
    envs = footprint_env(tiny_model_dir, lambda images, contexts: images.mean(dim=1).detach())
    with pytest.raises(ValueError, match="use 'probe'"):
        measure_footprint(envs, envs.unwrapped.model, method="autograd")


# -- silent pixels --------------------------------------------------------------
