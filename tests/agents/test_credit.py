"""PXPO's credit assignment: kernels by hand, the two limits (pure PXPO, DDPO), the footprint
estimator on rewards with a known footprint, silent pixels, checkpoints."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from agents.advantages import ContextStats
from agents.algorithms.ddpo import DDPO, DDPOConfig
from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.checkpoint import load_checkpoint
from agents.credit import Footprint, apply_kernels, credit_kernels, measure_footprint
from agents.metrics import read_metrics
from agents.runs import train
from agents.trainer import Trainer
from tests.agents.test_agents import policy_grad, tiny_config


def delta(steps: int, h: int, w: int) -> torch.Tensor:
    kernel = torch.zeros(steps, 2 * h - 1, 2 * w - 1)
    kernel[:, h - 1, w - 1] = 1.0
    return kernel


# -- kernels by hand on a 4x4 map ---------------------------------------------

A = torch.arange(16, dtype=torch.float32).view(1, 4, 4) - 7.5  # one 4x4 advantage map


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean().sqrt()


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


def test_credit_kernels_threshold_0_keeps_every_offset():
    influence = torch.tensor([[[0.0, 0.1, 0.0], [0.2, 2.0, 1.0], [0.0, 0.0, 0.4]]])
    torch.testing.assert_close(credit_kernels(influence, "footprint", 0.0), influence / 2.0)
    assert torch.equal(credit_kernels(influence, "support", 0.0), (influence > 0).float())


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


def tiny_core(model_dir, reward: str):
    """The core env of 2 slots on the tiny model with the given reward."""
    return gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(model_dir), reward=reward).unwrapped


def box_brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """A reward with a known 3x3 footprint: the mean brightness of the pixel's 3x3 neighbourhood."""
    gray = images.mean(dim=1, keepdim=True)
    return torch.nn.functional.avg_pool2d(gray, 3, stride=1, padding=1, count_include_pad=True)[:, 0]


def brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=1)


def footprint_env(tiny_model_dir, reward, num_envs=8):
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=num_envs,
        model=str(tiny_model_dir),
        reward=reward,
        num_inference_steps=4,
    )


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


def right_neighbour_brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """A reward with a known one-sided footprint: pixel q scores the brightness of q + (0, 1)."""
    gray = images.mean(dim=1)
    out = torch.zeros_like(gray)
    out[..., :-1] = gray[..., 1:]
    return out


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


def test_context_stats_silent_pixels_by_hand():
    stats = ContextStats(num_contexts=2, buffer_size=4, min_count=2, value_shape=(1, 2))
    # Context 0: pixel 0 varies (std 0.5), pixel 1 is always 0.3 -> silent. Context 1: one value only.
    stats.update(torch.tensor([0, 0, 1]), torch.tensor([[[0.0, 0.3]], [[1.0, 0.3]], [[0.2, 0.2]]]))
    silent = stats.silent(1e-3)
    assert silent.tolist() == [[[False, True]], [[False, False]]]


def test_silence_decided_on_the_first_maps_is_kept_and_resumes_exactly():
    """Pixel 0 is constant in the first 2 maps, then varies (redrawn); pixel 1 varies, then converges."""
    first = [[[0.3, 0.0]], [[0.3, 1.0]]]
    later = [[[0.0, 0.5]], [[1.0, 0.5]], [[0.0, 0.5]], [[1.0, 0.5]]]
    algos = {
        test: PXPO(
            PXPOConfig(stat_buffer_size=4, stat_min_count=2, silent_test=test, credit="pixel"),
            num_contexts=2,
            map_shape=(1, 2),
        )
        for test in ("recent", "first")
    }
    for algo in algos.values():
        algo.advantages(torch.zeros(1), torch.tensor([first[0]]), torch.tensor([0]))
        assert not bool(algo.silent_contexts().any())  # one map: nothing decided
        algo.advantages(torch.zeros(1), torch.tensor([first[1]]), torch.tensor([0]))
        assert algo.silent_contexts()[0].tolist() == [[True, False]]
        assert algo.silent_contexts()[1].tolist() == [[False, False]]  # context 1: no maps yet
    for algo in algos.values():
        algo.advantages(torch.zeros(4), torch.tensor(later), torch.zeros(4, dtype=torch.long))
    assert algos["recent"].silent_contexts()[0].tolist() == [[False, True]]  # re-decided on the last 4
    assert algos["first"].silent_contexts()[0].tolist() == [[True, False]]  # kept
    # The decision is part of the state: a resumed algorithm keeps it, a fresh one has none.
    resumed = PXPO(algos["first"].config, num_contexts=2, map_shape=(1, 2))
    resumed.load_state_dict(algos["first"].state_dict())
    assert torch.equal(resumed.silent_contexts(), algos["first"].silent_contexts())
    with pytest.raises(ValueError, match="silent_test must be one of"):
        PXPOConfig(silent_test="latest")


def region_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Scores the left half's redness; the right half scores 0 whatever it shows."""
    out = images[:, 0].clone()
    out[..., images.shape[-1] // 2 :] = 0.0
    return out


@pytest.mark.parametrize("silent_test, decided_at", [("recent", 2), ("first", 4)])
def test_silent_mask_marks_the_unscored_half(tiny_model_dir, tmp_path, silent_test, decided_at):
    region = ("tests.agents.test_credit:region_reward",)
    trainer = Trainer(
        tiny_config(tiny_model_dir, tmp_path, credit="pixel", reward=region, silent_test=silent_test)
    )
    for _ in range(2):  # 16 maps over 4 contexts
        traj = trainer.sample()
        trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    silent = trainer.algo.silent_mask(traj.contexts)
    assert silent.shape == (8, 8, 8)
    # 'recent': contexts with 2 maps or more have statistics; 'first': those with stat_min_count (4)
    seen = trainer.algo.stats.count[traj.contexts] >= decided_at
    assert bool(seen.any()) and not bool(silent[~seen].any())
    # The right half never scores; on the left only pixels the random tiny model always saturates
    # (red clamped at 0 or 1 in every image) can be silent.
    assert bool((silent[seen][..., 4:] == 1).all()) and float(silent[seen][..., :4].mean()) < 0.2


def test_silent_kl_pulls_silent_pixels_back_to_the_pretrained_model(tiny_model_dir, tmp_path):
    # Zero advantages: the only force is the penalty. Start from a perturbed policy; one update with
    # every pixel silent moves it toward the pretrained model, with no pixel silent it does not move.
    def run(silent_value: float) -> tuple[float, float]:
        config = tiny_config(tiny_model_dir, tmp_path, credit="pixel", silent_kl_coef=100.0)
        trainer = Trainer(config.replace(learning_rate=3e-3, weight_decay=0.0))
        torch.manual_seed(1)
        with torch.no_grad():
            for p in trainer.policy.parameters():
                p.add_(0.05 * torch.randn_like(p))
        traj = trainer.sample()
        zeros = torch.zeros(8, 8, 8)
        silent = torch.full((8, 8, 8), silent_value)
        # the algorithm's hook weighs the penalty on silent pixels (PXPO: where none qualifies it gives None)
        trainer.algo.silent_weights = lambda contexts: silent if bool(silent.any()) else None
        before = kl_to_reference(trainer, traj)
        metrics = trainer.update(traj, zeros)
        return before, kl_to_reference(trainer, traj), metrics["silent_kl"]

    before, after, logged = run(1.0)
    assert after < 0.9 * before and logged > 0
    before, after, logged = run(0.0)
    assert after == before and logged != logged  # no silent pixel: no penalty, NaN logged


@torch.no_grad()
def kl_to_reference(trainer: Trainer, traj) -> float:
    from agents.trajectories import coefficients_from

    k = torch.zeros(len(traj), dtype=torch.int64)
    idx = torch.arange(len(traj))
    eps = trainer.action(traj.samples[idx, k], traj.timesteps[idx, k], traj.contexts)
    coeffs = coefficients_from(traj.coeffs[idx, k])
    return float(
        trainer.reference_kl(traj.samples[idx, k], traj.timesteps[idx, k], traj.contexts, eps, coeffs).mean()
    )


# -- checkpoints -----------------------------------------------------------------


def test_footprint_is_checkpointed_and_not_measured_again_on_resume(tiny_model_dir, tmp_path, monkeypatch):
    config = tiny_config(tiny_model_dir, tmp_path, credit="footprint", credit_images=8, save_every=1)
    whole = train(config.replace(out=str(tmp_path / "whole")))
    first = config.replace(out=str(tmp_path / "part"), num_epochs=1)
    train(first)
    tensors, _ = load_checkpoint(tmp_path / "part")
    assert tensors["stats/credit_influence"].shape == (4, 15, 15)
    assert (tmp_path / "part" / "footprint.json").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("the footprint must come from the checkpoint")

    monkeypatch.setattr("agents.algorithms.pxpo.measure_footprint", fail)
    resumed = train(config.replace(out="", resume=str(tmp_path / "part")))
    rows = read_metrics(tmp_path / "part" / "metrics.csv")
    assert [r["reward_mean"] for r in rows] == [m["reward_mean"] for m in whole]
    assert resumed[-1]["loss"] == whole[-1]["loss"]


def test_ddpo_is_unaffected_by_pxpo_credit_fields(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo"))
    assert isinstance(trainer.algo, DDPO) and isinstance(trainer.algo.config, DDPOConfig)


def test_evaluation_measures_the_silent_and_the_scored_part_by_hand(tiny_model_dir):
    from agents.heldout import Evaluator

    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=4,
        model=str(tiny_model_dir),
        reward="tests.agents.test_credit:region_reward",
        num_inference_steps=3,
    )
    evaluator = Evaluator(envs, seed=0, context_ids=envs.unwrapped.context_choices)
    # The right half never scores, so it is silent (the left half's red varies between images).
    assert bool(evaluator.silent[:, 4:].all()) and not bool(evaluator.silent[:, :4].all())
    reference = evaluator.reference.images
    assert evaluator.reference_metrics["fidelity_silent"] == 0.0
    # Move only the silent half by 0.1 in every channel: silent RMS distance 0.1, scored 0, whole
    # image sqrt(0.1^2 x (silent share)).
    moved = reference.clone()
    moved[..., 4:] += 0.1
    scores = evaluator.score(moved, evaluator.reference.rewards)
    assert abs(scores["fidelity_silent"] - 0.1) < 1e-6 and scores["fidelity_scored"] == 0.0
    share = float(evaluator.silent.float().mean())
    assert abs(scores["fidelity_distance"] - (0.01 * share) ** 0.5) < 1e-6


def test_evaluation_reports_nan_without_silent_pixels(tiny_model_dir):
    from agents.heldout import Evaluator

    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=4, model=str(tiny_model_dir), num_inference_steps=3)
    metrics = Evaluator(envs, seed=0, context_ids=envs.unwrapped.context_choices).reference_metrics
    assert metrics["fidelity_silent"] != metrics["fidelity_silent"]  # NaN: colour scores every pixel


def freeze_config(tiny_model_dir, tmp_path, **overrides):
    """Pixel credit, silent pixels frozen (unless overridden), the half-silent region reward."""
    region = ("tests.agents.test_credit:region_reward",)
    settings = {"credit": "pixel", "silent_mode": "freeze", "reward": region, **overrides}
    return tiny_config(tiny_model_dir, tmp_path, **settings)


def test_freeze_mode_acts_as_the_pretrained_model_on_silent_pixels(tiny_model_dir, tmp_path):
    # every context decided after the first 8 images: re-decided on its maps so far
    config = freeze_config(tiny_model_dir, tmp_path, silent_test="recent")
    trainer = Trainer(config.replace(learning_rate=3e-3))
    assert trainer.algo.pinned_pixels() is None  # no statistics yet: nothing is silent
    with torch.no_grad():
        for p in trainer.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the policy now differs from the pretrained model
    traj = trainer.sample()
    trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    trainer.pinned = trainer.algo.pinned_pixels()
    assert trainer.pinned is not None and bool(trainer.pinned[..., 4:].all())
    sample, t, c = traj.samples[:, 3], traj.timesteps[:, 3], traj.contexts
    with torch.no_grad():
        eps = trainer.action(sample, t, c)
        ref = trainer.reference(sample, t, c)
        free = trainer.policy(sample, t, c)
    mask = trainer.pinned[c][:, None].expand_as(eps)
    assert torch.equal(eps[mask], ref[mask])  # silent pixels: the pretrained model's action, exactly
    assert torch.equal(eps[~mask], free[~mask]) and not torch.equal(free[mask], ref[mask])
    # A whole run: the mask is taken at each epoch's start, no KL is computed, and it resumes exactly.
    history = train(config.replace(num_epochs=3, out=str(tmp_path / "freeze")))
    assert all(m["silent_kl"] != m["silent_kl"] for m in history)  # NaN: the freeze needs no penalty
    assert history[-1]["silent_fraction"] > 0.4


@pytest.mark.parametrize("mode, silent_test", [("freeze", "recent"), ("freeze", "first"), ("hold", "first")])
def test_freeze_and_hold_modes_resume_exactly(tiny_model_dir, tmp_path, mode, silent_test):
    config = freeze_config(
        tiny_model_dir, tmp_path, num_epochs=3, save_every=1, silent_test=silent_test, silent_mode=mode
    )
    whole = train(config.replace(out=str(tmp_path / "whole")))
    train(config.replace(out=str(tmp_path / "part"), num_epochs=2))
    train(config.replace(out="", resume=str(tmp_path / "part")))
    rows = read_metrics(tmp_path / "part" / "metrics.csv")
    assert [r["reward_mean"] for r in rows] == [m["reward_mean"] for m in whole]
    assert rows[-1]["loss"] == whole[-1]["loss"]


def pinned_trainer(tiny_model_dir, tmp_path, **overrides) -> tuple[Trainer, object]:
    """A hold-mode trainer on the half-silent reward, its policy perturbed away from the pretrained model,
    the right half decided silent after one epoch; returns it and that epoch's trajectories."""
    config = freeze_config(tiny_model_dir, tmp_path, silent_mode="hold", silent_test="recent", **overrides)
    trainer = Trainer(config)
    assert trainer.rollout_policy() == trainer.action  # nothing silent yet: the plain policy
    with torch.no_grad():
        for p in trainer.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    traj = trainer.sample()
    trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    trainer.pinned = trainer.algo.pinned_pixels()
    assert trainer.pinned is not None and bool(trainer.pinned[..., 4:].all())
    return trainer, traj


@pytest.mark.parametrize("model", ["ddim", "flow"])
def test_hold_mode_keeps_silent_pixels_on_the_pretrained_trajectory(
    tiny_model_dir, tiny_flow_dir, tmp_path, model
):
    from pxpo_gym.sampling import run_policy

    trainer, _ = pinned_trainer(tiny_flow_dir if model == "flow" else tiny_model_dir, tmp_path)
    choices = trainer.envs.unwrapped.context_choices
    options = {"context": choices[torch.arange(8) % len(choices)]}
    ref = run_policy(trainer.envs, None, seed=123, options=options)  # the pretrained model
    free = run_policy(trainer.envs, trainer.action, seed=123, options=options)
    pinned = run_policy(trainer.envs, trainer.rollout_policy(), seed=123, options=options)
    silent = trainer.pinned[ref.contexts][:, None].expand_as(ref.images)
    # Pinned pixels end exactly where the pretrained model's do from the same noise (rounding aside) ...
    assert (pinned.images[silent] - ref.images[silent]).abs().max() < 1e-5
    # ... where the free policy's do not, and the scored half is the policy's, not the pretrained model's.
    assert (free.images[silent] - ref.images[silent]).abs().max() > 1e-2
    assert (pinned.images[~silent] - ref.images[~silent]).abs().max() > 1e-2


def test_hold_mode_gives_pinned_pixels_no_gradient(tiny_model_dir, tmp_path):
    trainer, traj = pinned_trainer(tiny_model_dir, tmp_path)
    traj = trainer.sample()  # sampled with the right half pinned
    idx, k = torch.arange(8), torch.full((8,), 2)
    adv = torch.randn(8, 8, 8, generator=torch.Generator().manual_seed(0))
    moved = adv.clone()
    moved[..., 4:] += 3.0  # advantages that differ on the pinned pixels only
    grads = []
    for advantages in (adv, moved):
        trainer.policy.zero_grad(set_to_none=True)
        loss, _ = trainer.step_loss(traj, idx, k, advantages, torch.ones(8), None)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.policy.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-7)
    assert grads[0].abs().max() > 0  # the scored half still trains


def test_default_run_holds_the_unscored_half_at_evaluation(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir,
        tmp_path,
        reward=("tests.agents.test_credit:region_reward",),
        num_epochs=3,
        eval_every=1,
        eval_images=8,
        learning_rate=3e-3,
    )
    assert config.algorithm.silent_mode == "hold-unscored"
    trainer = Trainer(config)
    assert bool(trainer.algo.unscored[..., 4:].all()) and not bool(trainer.algo.unscored[..., :4].any())
    history = train(config)
    # Silence is decided once a context has 4 maps (during epoch 2 here); the next epoch samples with the
    # unscored half pinned: from then on it is the pretrained model's, exactly.
    assert history[0]["fidelity_silent"] > 1e-3 and history[1]["silent_fraction"] > 0.4
    assert history[-1]["fidelity_silent"] < 1e-5 < history[-1]["fidelity_scored"]


@pytest.mark.parametrize("reward", ["color", "brightness"])
def test_hold_unscored_equals_kl_mode_bit_for_bit_on_a_reward_that_scores_every_pixel(
    tiny_model_dir, tmp_path, reward
):
    # The tiny model draws a few pixels saturated in every image: silent, but noise moves their reward,
    # so 'hold-unscored' penalises them as 'kl' does and pins nothing: the two modes are one run.
    runs = [
        train(
            tiny_config(
                tiny_model_dir,
                tmp_path,
                reward=(reward,),
                silent_mode=mode,
                num_epochs=3,
                out=str(tmp_path / mode),
            )
        )
        for mode in ("kl", "hold-unscored")
    ]
    assert runs[1][-1]["silent_fraction"] > 0
    for name in ("reward_mean", "loss", "approx_kl", "grad_norm", "silent_kl"):
        assert [m[name] for m in runs[0]] == [m[name] for m in runs[1]], name


def mean_red_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """The image's mean redness at every pixel: no pixel is silent while the images vary."""
    return images[:, 0].mean(dim=(1, 2))[:, None, None].expand(-1, *images.shape[2:]).contiguous()


def test_the_silent_penalty_changes_nothing_where_no_pixel_is_silent(tiny_model_dir, tmp_path):
    # Why changing the default coefficient left the colour, target-map and JPEG runs as they were;
    # and where a pixel is silent (the tiny model saturates some red pixels), it does change the run.
    def losses(reward: str, coef: float) -> list[tuple[float, float]]:
        config = tiny_config(
            tiny_model_dir,
            tmp_path,
            reward=(reward,),
            silent_kl_coef=coef,
            num_epochs=3,
            out=str(tmp_path / "r"),
        )
        return [(m["loss"], m["silent_fraction"]) for m in train(config.replace(overwrite=True))]

    silence_free = [losses("tests.agents.test_credit:mean_red_reward", coef) for coef in (5.0, 10.0)]
    assert silence_free[0] == silence_free[1] and all(f == 0 for _, f in silence_free[0][1:])
    saturated = [losses("color", coef) for coef in (5.0, 10.0)]
    assert saturated[0][-1][1] > 0 and saturated[0] != saturated[1]


def unscored_half_and_a_scored_silent_pixel(config: PXPOConfig) -> tuple[PXPO, torch.Tensor, torch.Tensor]:
    """(PXPO after one batch, (2, 4, 4) unscored pixels, the batch's contexts): 2 contexts' maps with the
    right half exactly 0 (unscored: also constant on noise images) and one silent pixel (0, 0) the reward
    scores, constant on these maps though the reward looks at it."""
    algo = PXPO(config, num_contexts=2, map_shape=(4, 4))
    unscored = torch.zeros(2, 4, 4, dtype=torch.bool)
    unscored[..., 2:] = True
    algo.set_unscored(unscored)
    maps = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1
    maps[..., 2:] = 0.0
    maps[:, 0, 0] = 0.5
    contexts = torch.tensor([0, 0, 1, 1])
    algo.advantages(maps.mean(dim=(1, 2)), maps, contexts)
    return algo, unscored, contexts


@pytest.mark.parametrize("mode", ["hold-unscored", "hold", "kl", "freeze"])
def test_which_silent_pixels_each_mode_pins_and_penalises(mode):
    algo, unscored, contexts = unscored_half_and_a_scored_silent_pixel(
        PXPOConfig(stat_min_count=2, silent_mode=mode, credit="pixel")
    )
    silent = algo.silent_mask(contexts)
    scored_silent = torch.zeros(4, 4, 4)
    scored_silent[:, 0, 0] = 1.0
    assert torch.equal(silent, scored_silent + unscored[contexts].float())
    pinned, penalised = algo.pinned_pixels(), algo.silent_weights(contexts)
    if mode == "hold-unscored":  # the unscored half pinned, only the scored silent pixel under the penalty
        assert torch.equal(pinned, unscored) and torch.equal(penalised, scored_silent)
    elif mode == "hold":  # every silent pixel pinned and under the penalty
        assert torch.equal(pinned, silent[[0, 2]].bool()) and torch.equal(penalised, silent)
    elif mode == "kl":
        assert pinned is None and torch.equal(penalised, silent)
    else:  # freeze: pinned, never under the penalty
        assert torch.equal(pinned, silent[[0, 2]].bool()) and penalised is None
    no_coef = PXPO(
        PXPOConfig(stat_min_count=2, silent_mode=mode, silent_kl_coef=0.0, credit="pixel"), 2, (4, 4)
    )
    assert no_coef.silent_weights(contexts) is None


def gated_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Redness where the image's mean green is under 0.3 (no noise image passes), else 0."""
    gate = (images[:, 1].mean(dim=(1, 2)) < 0.3).float()
    return images[:, 0] * gate[:, None, None]


def raised_region_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Blueness on the left half; the right half a constant of the context (0.5, 0.6, 0.7): never looked at,
    and above the rest of the map's minimum."""
    out = images[:, 2].clone()
    out[..., 4:] = 0.5 + 0.1 * contexts.to(out)[:, None, None]
    return out


def rare_bright_reward(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    return (images.amax(dim=1) > 0.97).float()


def test_reward_unscored_finds_the_pixels_a_reward_never_looks_at(tiny_model_dir):
    from agents.credit import reward_unscored

    def core_with(reward):
        return tiny_core(tiny_model_dir, reward)

    region = reward_unscored(core_with("tests.agents.test_credit:region_reward"))
    assert region.shape == (3, 8, 8) and bool(region[..., 4:].all()) and not bool(region[..., :4].any())
    raised = reward_unscored(core_with("tests.agents.test_credit:raised_region_reward"))
    assert torch.equal(raised, region)  # each pixel compared with itself over the images, per context
    # A reward that is 1 only where a channel exceeds 0.97: about half the pixels stay 0 on 8 noise images,
    # which ones depends on the images drawn: the default seed (0) draws the same ones every time.
    rare = core_with("tests.agents.test_credit:rare_bright_reward")
    first = reward_unscored(rare)
    assert 0.2 < float(first.float().mean()) < 0.8
    assert torch.equal(first, reward_unscored(rare, seed=0))
    assert not torch.equal(first, reward_unscored(rare, seed=1))
    assert not bool(reward_unscored(core_with("color")).any())  # noise moves every pixel's redness
    gated = reward_unscored(core_with("tests.agents.test_credit:gated_reward"))
    assert bool(gated.all())  # 0 on every noise image: why 'hold-unscored' also asks for silence
    algo = PXPO(PXPOConfig(stat_min_count=2, credit="pixel"), num_contexts=3, map_shape=(8, 8))
    algo.set_unscored(gated)
    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))  # every pixel varies
    algo.advantages(maps.mean(dim=(1, 2)), maps, torch.tensor([0, 0, 1, 1]))
    assert algo.silence_decided[:2].all() and not bool(algo.unscored_contexts().any())
    with pytest.raises(ValueError, match="unscored must have shape"):
        algo.set_unscored(gated[:2])


def test_a_checkpoint_from_before_the_rename_restores_the_unscored_pixels():
    # PXPO's state named reward_unscored's pixels 'insensitive' before: such a checkpoint still resumes.
    config = PXPOConfig(stat_min_count=2, credit="pixel")
    algo, unscored, contexts = unscored_half_and_a_scored_silent_pixel(config)
    state = algo.state_dict()
    assert torch.equal(state["unscored"], unscored) and "insensitive" not in state
    state["insensitive"] = state.pop("unscored")
    restored = PXPO(config, num_contexts=2, map_shape=(4, 4))
    restored.load_state_dict(state)
    assert torch.equal(restored.unscored, unscored)
    assert torch.equal(restored.pinned_pixels(), algo.pinned_pixels())
    assert torch.equal(restored.silent_weights(contexts), algo.silent_weights(contexts))


@pytest.mark.parametrize("mode", ["kl", "hold", "hold-unscored", "freeze"])
def test_pinned_pixels_and_silent_weights_by_mode(mode):
    algo = PXPO(
        PXPOConfig(stat_min_count=2, silent_mode=mode, credit="pixel"), num_contexts=1, map_shape=(2, 4)
    )
    unscored = torch.zeros(1, 2, 4, dtype=torch.bool)
    unscored[..., 3] = True  # column 3: the reward never looks at it
    algo.set_unscored(unscored)
    maps = torch.rand(4, 2, 4, generator=torch.Generator().manual_seed(0))
    maps[..., 3] = 0.0  # silent and unscored
    maps[..., 2] = 0.5  # silent but scored
    contexts = torch.zeros(4, dtype=torch.long)
    algo.advantages(maps.mean(dim=(1, 2)), maps, contexts)
    silent = algo.silent_mask(contexts)
    assert silent[0].tolist() == [[0.0, 0.0, 1.0, 1.0]] * 2
    pinned, penalised = algo.pinned_pixels(), algo.silent_weights(contexts)
    pinned_columns = {"kl": None, "hold": [2, 3], "hold-unscored": [3], "freeze": [2, 3]}[mode]
    penalised_columns = {"kl": [2, 3], "hold": [2, 3], "hold-unscored": [2], "freeze": None}[mode]
    for got, columns in ((pinned, pinned_columns), (penalised, penalised_columns)):
        if columns is None:
            assert got is None
        else:
            assert got[0].nonzero()[:, 1].unique().tolist() == columns


def test_silence_waits_for_two_maps_even_with_stat_min_count_1():
    algo = PXPO(PXPOConfig(stat_min_count=1, credit="pixel"), num_contexts=1, map_shape=(1, 2))
    maps = torch.tensor([[[0.0, 0.3]], [[0.0, 0.7]]])  # pixel 0 silent, pixel 1 varies
    algo.advantages(maps[:1].mean(dim=(1, 2)), maps[:1], torch.zeros(1, dtype=torch.long))
    assert not bool(algo.silence_decided[0])  # one map says nothing about spread
    algo.advantages(maps[1:].mean(dim=(1, 2)), maps[1:], torch.zeros(1, dtype=torch.long))
    assert bool(algo.silence_decided[0]) and algo.silent_contexts()[0].tolist() == [[True, False]]


# -- credit='auto': the reward's locality picks the credit -----------------------


def test_reward_locality_by_hand(tiny_model_dir):
    from agents.credit import reward_locality

    def locality(reward):
        return reward_locality(tiny_core(tiny_model_dir, reward))

    assert locality("color") == 1.0  # a pixel's redness is its own
    # The 3x3 box mean moves the k in-image cells around the changed pixel by the same amount: a share of
    # 1/k per probe, k = 9 inside, 6 on an edge, 4 in a corner (rows and columns swapped would miss it).
    box = locality("tests.agents.test_credit:box_brightness")
    assert 1 / 9 <= box <= 1 / 4
    assert (
        abs(locality("tests.agents.test_credit:mean_red_reward") - 1 / 64) < 1e-6
    )  # one score for the 8x8 image
    assert (
        locality("tests.agents.test_credit:right_neighbour_brightness") == 0.0
    )  # only its left neighbour moves
    assert (
        locality("tests.agents.test_credit:gated_reward") == 1.0
    )  # never responds: the paper's rule is kept


def test_reward_locality_seed_and_probes(tiny_model_dir):
    from agents.credit import reward_locality

    core = tiny_core(tiny_model_dir, "tests.agents.test_credit:box_brightness")
    # The default is seed 0 (what every run's RUN/credit.json records); another seed draws other cells.
    assert reward_locality(core) == reward_locality(core, seed=0) != reward_locality(core, seed=1)
    assert 1 / 9 <= reward_locality(core, probes=1) <= 1 / 4  # one probe per context is allowed
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match=f"^probes must be an int >= 1, got probes={bad}$"):
            reward_locality(core, probes=bad)


def test_committed_segmentation_locality_reproduces():
    """The shipped segmentation net's locality at measurement seed 0 is the committed one the default's choice
    rests on (benchmarks/results/locality/locality.json): a reward that judges a pixel by its neighbours, so the share
    depends on how far each probe moves its cell (x -> 1 - x), not only on where the cell is."""
    import json
    from pathlib import Path

    from benchmarks.studies.locality import LocalityConfig, measure

    committed = json.loads(
        (Path(__file__).parents[2] / "benchmarks/results/locality/locality.json").read_text()
    )
    measured = measure(LocalityConfig(tasks=("segmentation",), seeds=(0,)))
    assert (
        measured["tasks"]["segmentation"]["locality"][0] == committed["tasks"]["segmentation"]["locality"][0]
    )


def test_offset_canvas_by_hand():
    from agents.credit import _offset_canvas

    values = torch.arange(12.0).view(1, 2, 2, 3)  # one image, 2 steps, a 2 x 3 map
    rows, cols = torch.tensor([1]), torch.tensor([0])
    # Indexed by the reward pixel q for the noise pixel p = (1, 0): q - p spans rows -1 ... 0, cols 0 ... 2,
    # i.e. canvas rows 0 ... 1 (offset + h - 1) and columns 2 ... 4 (offset + w - 1).
    canvas, seen = _offset_canvas(values, rows, cols, flip=False)
    assert canvas.shape == (1, 2, 3, 5) and seen.shape == (1, 1, 3, 5)
    expected = torch.zeros(1, 2, 3, 5)
    expected[0, :, 0:2, 2:5] = values[0]
    assert torch.equal(canvas, expected)
    mask = torch.zeros(1, 1, 3, 5)
    mask[0, 0, 0:2, 2:5] = 1.0
    assert torch.equal(seen, mask)
    # Indexed by the noise pixel p for the reward pixel q = (1, 0): o = q - p spans rows 0 ... 1, cols -2 ... 0,
    # the map flipped (p = (1, 0) is o = (0, 0) at canvas (1, 2); p = (0, 2) is o = (1, -2) at (2, 0)).
    canvas, seen = _offset_canvas(values, rows, cols, flip=True)
    expected = torch.zeros(1, 2, 3, 5)
    expected[0, :, 1:3, 0:3] = values[0].flip(-2, -1)
    assert torch.equal(canvas, expected)
    assert canvas[0, 0, 1, 2] == values[0, 0, 1, 0] and canvas[0, 0, 2, 0] == values[0, 0, 0, 2]
    mask = torch.zeros(1, 1, 3, 5)
    mask[0, 0, 1:3, 0:3] = 1.0
    assert torch.equal(seen, mask)


def test_reward_locality_on_a_latent_grid(tiny_sd_dir):
    from agents.credit import reward_locality

    def locality(reward):
        envs = gym.make_vec(
            "DiffusionDenoise-v0", num_envs=2, model=str(tiny_sd_dir), reward=reward, prompts=["a", "b"]
        )
        core = envs.unwrapped
        assert tuple(core.loaded.sample_shape[1:]) != tuple(core.loaded.image_size)  # a latent grid
        return reward_locality(core, probes=4), core.loaded.sample_shape[1:]

    share, (h, w) = locality("color")
    assert abs(share - 1.0) < 1e-6  # the cell's whole block of image pixels changes, and only its own reward
    share, (h, w) = locality("tests.agents.test_credit:mean_red_reward")
    assert abs(share - 1 / (h * w)) < 1e-6


def test_auto_credit_is_pixel_credit_where_local_and_image_credit_where_not():
    torch.manual_seed(0)
    rewards, maps, contexts = torch.rand(8), torch.rand(8, 4, 4), torch.tensor([0, 1] * 4)
    maps[:, 0, 0] = 0.25  # a silent pixel, under the penalty with per-pixel credit only

    def algo(credit, locality=None, **kw):
        out = PXPO(PXPOConfig(credit=credit, stat_min_count=2, **kw), 2, (4, 4))
        if locality is not None:
            out.set_locality(locality)
        return out

    with pytest.raises(RuntimeError, match="set_locality"):
        algo("auto").advantages(rewards, maps, contexts)
    assert algo("auto").needs_locality and not algo("pixel").needs_locality
    for locality, same_as in ((1.0, "pixel"), (0.5, "pixel"), (0.49, "image"), (0.0, "image")):
        auto, plain = algo("auto", locality), algo(same_as)
        assert auto.credit == same_as
        assert torch.equal(
            auto.advantages(rewards, maps, contexts), plain.advantages(rewards, maps, contexts)
        )
        silent = auto.silent_mask(contexts)
        assert bool(silent[:, 0, 0].all())
        penalised = auto.silent_weights(contexts)
        assert (penalised is None) == (same_as == "image")  # 'auto' drops the penalty with the image credit
    # An explicit image credit keeps the penalty it is given (the image5 arm of docs/results/segmentation.md).
    explicit = algo("image")
    explicit.advantages(rewards, maps, contexts)
    assert explicit.silent_weights(contexts) is not None
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="locality must be in"):
            algo("auto").set_locality(bad)


def test_auto_credit_trains_as_the_credit_it_chose_and_resumes_exactly(tiny_model_dir, tmp_path):
    import json

    def run(name, reward, **kw):
        config = tiny_config(tiny_model_dir, tmp_path, reward=(reward,), out=str(tmp_path / name), **kw)
        return train(config), config

    auto_local, _ = run("auto-local", "color", credit="auto")
    pixel, _ = run("pixel", "color", credit="pixel")
    assert [m["loss"] for m in auto_local] == [m["loss"] for m in pixel]
    chosen = json.loads((tmp_path / "auto-local" / "credit.json").read_text())
    assert chosen == {"credit": "auto", "locality": 1.0, "chosen": "pixel"}
    reward = "tests.agents.test_credit:box_brightness"  # a 3x3 receptive field: not pixel-local
    auto_global, config = run("auto-global", reward, credit="auto", save_every=1, num_epochs=3)
    image, _ = run("image", reward, credit="image", silent_kl_coef=0.0, num_epochs=3)
    box_pixel, _ = run("box-pixel", reward, credit="pixel", num_epochs=3)
    assert [m["loss"] for m in auto_global] == [m["loss"] for m in image]
    assert [m["loss"] for m in auto_global][1:] != [m["loss"] for m in box_pixel][1:]
    chosen = json.loads((tmp_path / "auto-global" / "credit.json").read_text())
    assert chosen["chosen"] == "image" and 1 / 9 <= chosen["locality"] <= 1 / 4
    # A resumed run takes the locality from its checkpoint and continues bit for bit.
    part = config.replace(out=str(tmp_path / "part"), num_epochs=1)
    train(part)
    tensors, _ = load_checkpoint(tmp_path / "part")
    assert float(tensors["stats/locality"]) == chosen["locality"]
    resumed = train(config.replace(out="", resume=str(tmp_path / "part")))
    assert resumed[-1]["loss"] == auto_global[-1]["loss"]


def test_reward_probes_score_in_batches_of_the_envs_size(tiny_model_dir):
    # A latent pipeline's reward sees full-size images: the probes must not score 32 x contexts at once.
    from agents.credit import reward_locality, reward_unscored

    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=3, model=str(tiny_model_dir), reward="color")
    core = envs.unwrapped
    sizes, score = [], core.reward_fn

    def recording(images, contexts):
        sizes.append(len(images))
        return score(images, contexts)

    core.reward_fn = recording
    assert reward_locality(core, probes=4) == 1.0
    assert max(sizes) == 3 and sum(sizes) == 2 * 4 * 3  # two passes over 4 probes x 3 contexts
    sizes.clear()
    assert not bool(reward_unscored(core, probes=4).any())
    assert max(sizes) == 3 and sum(sizes) == 4 * 3


def test_pinned_kl_coef_puts_the_pinned_pixels_under_the_penalty_at_its_own_weight():
    # With pinned_kl_coef the unscored half joins the penalty at pinned / silent weight.
    config = PXPOConfig(stat_min_count=2, credit="pixel", silent_kl_coef=5.0, pinned_kl_coef=10.0)
    algo, _, contexts = unscored_half_and_a_scored_silent_pixel(config)
    penalised = algo.silent_weights(contexts)
    expected = torch.zeros(4, 4, 4)
    expected[:, 0, 0] = 1.0
    expected[..., 2:] = 2.0
    assert torch.equal(penalised, expected)
    for bad, message in (
        (dict(pinned_kl_coef=-1.0), "pinned_kl_coef must be >= 0"),
        (dict(pinned_kl_coef=1.0, silent_mode="kl"), "distils the pixels 'hold-unscored' pins"),
        (dict(pinned_kl_coef=1.0, silent_kl_coef=0.0), "distils the pixels 'hold-unscored' pins"),
        (dict(pin_band=-1), r"pin_band must be an integer in \[0, 64\], got pin_band=-1"),
        (dict(pin_band=1.5), "pin_band must be an integer"),
        (dict(pin_band=1, silent_mode="kl"), "silent_mode='kl' pins nothing"),
    ):
        with pytest.raises(ValueError, match=message):
            PXPOConfig(**bad)


def test_distilling_the_pinned_pixels_keeps_them_in_the_weights_alone(tiny_model_dir, tmp_path):
    # Paired on one seed: the same run with and without the distillation; the pin keeps the unscored half
    # exactly in both, the weights alone keep it closer with it (alone_silent), and it is logged per evaluation.
    def run(coef: float) -> list[dict[str, float]]:
        config = tiny_config(
            tiny_model_dir,
            tmp_path,
            reward=("tests.agents.test_credit:region_reward",),
            num_epochs=4,
            eval_every=1,
            eval_images=8,
            learning_rate=3e-3,
            pinned_kl_coef=coef,
            out=str(tmp_path / f"coef{coef}"),
        )
        return train(config)

    plain, distilled = run(0.0), run(50.0)
    assert plain[-1]["fidelity_silent"] < 1e-5 and distilled[-1]["fidelity_silent"] < 1e-5
    assert "alone_silent" not in plain[0]  # no pin before silence is decided
    assert distilled[-1]["alone_silent"] < 0.8 * plain[-1]["alone_silent"], (plain[-1], distilled[-1])
    # (measured at this commit: 0.084 vs 0.137, the held-out reward 0.252 vs 0.271)


def test_the_weights_alone_are_scored_without_the_pin_in_freeze_mode_too(tiny_model_dir, tmp_path):
    # 'freeze' pins inside the policy's own prediction: the weights-alone columns must leave it out.
    history = train(
        tiny_config(
            tiny_model_dir,
            tmp_path,
            reward=("tests.agents.test_credit:region_reward",),
            silent_mode="freeze",
            num_epochs=4,
            eval_every=1,
            eval_images=8,
            learning_rate=3e-3,
        )
    )
    last = history[-1]
    assert last["alone_silent"] > last["fidelity_silent"] + 1e-3, last
