"""DDPO's and PXPO's losses, pure functions, against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.losses import clipped_surrogate, ddpo_loss, kl_penalty, pxpo_loss, ratio_stats


def test_ddpo_is_loss_hand_worked():
    # A = [1, -1], ratios [1.5, 0.5], clip 0.2:
    #   A = 1:  max(-1.5, -1.2) = -1.2;   A = -1: max(0.5, 0.8) = 0.8;   mean = -0.2
    logratio = torch.log(torch.tensor([1.5, 0.5]))
    loss, stats = ddpo_loss(logratio, torch.zeros(2), torch.tensor([1.0, -1.0]), "is", 0.2)
    assert loss.item() == pytest.approx(-0.2)
    assert stats["clipfrac"].item() == 1.0
    assert stats["approx_kl"].item() == pytest.approx(0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 2)


def test_ddpo_sf_loss_hand_worked():
    # -(2 * -3 + -1 * 4) / 2 = 5
    loss, _ = ddpo_loss(torch.tensor([-3.0, 4.0]), torch.zeros(2), torch.tensor([2.0, -1.0]), "sf", 1e-4)
    assert loss.item() == pytest.approx(5.0)


def test_pxpo_loss_hand_worked():
    # One image, 1x2 pixels, C = 3: loss = -(1 / (3 * 2)) * (2 * 0.6 + (-1) * 1.2) = 0
    # and with A = [2, 1]: -(2 * 0.6 + 1 * 1.2) / 6 = -0.4
    logp = torch.tensor([[[0.6, 1.2]]])
    loss, _ = pxpo_loss(logp, torch.zeros_like(logp), torch.tensor([[[2.0, -1.0]]]), 3, "sf", 0.01)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss, _ = pxpo_loss(logp, torch.zeros_like(logp), torch.tensor([[[2.0, 1.0]]]), 3, "sf", 0.01)
    assert loss.item() == pytest.approx(-0.4)
    # IS, per-pixel ratios e^0.6 = 1.822 and e^1.2 = 3.320 with clip 0.5 and A = [2, 1]:
    # max(-2 * 1.822, -2 * 1.5) = -3; max(-3.320, -1.5) = -1.5; loss = (-3 - 1.5) / 6 = -0.75
    loss, stats = pxpo_loss(logp, torch.zeros_like(logp), torch.tensor([[[2.0, 1.0]]]), 3, "is", 0.5)
    assert loss.item() == pytest.approx(-0.75)
    assert stats["clipfrac"].item() == 1.0


def test_step_weights_scale_each_samples_term_by_hand():
    # SF, A = [2, -1], logp = [-3, 4], weights [0.5, 0]: -(0.5 * 2 * -3 + 0) / 2 = 1.5
    loss, _ = ddpo_loss(
        torch.tensor([-3.0, 4.0]),
        torch.zeros(2),
        torch.tensor([2.0, -1.0]),
        "sf",
        1e-4,
        torch.tensor([0.5, 0.0]),
    )
    assert loss.item() == pytest.approx(1.5)
    logp = torch.tensor([[[0.6, 1.2]]])
    loss, _ = pxpo_loss(
        logp, torch.zeros_like(logp), torch.tensor([[[2.0, 1.0]]]), 3, "sf", 0.2, torch.tensor([0.5])
    )
    assert loss.item() == pytest.approx(-0.2)  # half of -0.4


def test_clipped_surrogate_is_pessimistic():
    # A > 0 and r > 1 + e: the clipped term binds; A < 0 and r < 1 - e: likewise
    out = clipped_surrogate(torch.tensor([1.0, -1.0]), torch.log(torch.tensor([2.0, 0.5])), 0.2)
    torch.testing.assert_close(out, torch.tensor([-1.2, 0.8]))


# -- the penalties to the pretrained model ------------------------------------

# Two samples, C = 2 channels, a 1 x 2 grid (4 elements each).
KL_MAP = torch.tensor([[[[1.0, 3.0]], [[1.0, 1.0]]], [[[2.0, 2.0]], [[0.0, 4.0]]]])  # (2, 2, 1, 2)
WEIGHT = torch.tensor([1.0, 0.5])
SILENT = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # sample 0: pixel 0 silent; sample 1: pixel 1


def test_uniform_kl_penalty_hand_worked():
    # Mean KL per sample: (1 + 3 + 1 + 1) / 4 = 1.5 and (2 + 2 + 0 + 4) / 4 = 2;
    # step-weighted: 1.5 x 1 and 2 x 0.5 -> batch mean 1.25; x coefficient 2 = 2.5.
    penalty, stats = kl_penalty(KL_MAP, WEIGHT, 2.0, None, 0.0)
    assert penalty.item() == pytest.approx(2.5)
    assert stats["kl"].item() == pytest.approx(1.75) and "silent_kl" not in stats


def test_silent_kl_penalty_hand_worked():
    # Silent KL per sample (channels summed at its silent pixel, divided by all 4 elements): sample 0's
    # pixel 0 holds 1 + 1 -> 0.5; sample 1's pixel 1 holds 2 + 4 -> 1.5. Step-weighted 0.5 and 0.75 ->
    # mean 0.625; x 10 = 6.25. With the uniform term at 2 (2.5 above): 8.75.
    penalty, stats = kl_penalty(KL_MAP, WEIGHT, 0.0, SILENT, 10.0)
    assert penalty.item() == pytest.approx(6.25)
    assert stats["silent_kl"].item() == pytest.approx(1.0)
    assert stats["kl"].item() == pytest.approx(1.75)  # measured without its penalty: metrics.csv's kl
    penalty, stats = kl_penalty(KL_MAP, WEIGHT, 2.0, SILENT, 10.0)
    assert penalty.item() == pytest.approx(8.75)
    # A sample whose every pixel is silent pays the uniform term's per-sample mean.
    everywhere, _ = kl_penalty(KL_MAP, torch.ones(2), 0.0, torch.ones(2, 1, 2), 1.0)
    uniform, _ = kl_penalty(KL_MAP, torch.ones(2), 1.0, None, 0.0)
    assert everywhere.item() == pytest.approx(uniform.item())
    # One sample alone: 6.25's sample-0 part, 10 x 0.5 = 5 (the per-sample divisor is its own element count).
    alone, _ = kl_penalty(KL_MAP[:1], WEIGHT[:1], 0.0, SILENT[:1], 10.0)
    assert alone.item() == pytest.approx(5.0)


def test_kl_penalty_gradient_flows_only_through_the_penalised_terms():
    kl_map = KL_MAP.clone().requires_grad_(True)
    penalty, _ = kl_penalty(kl_map, WEIGHT, 0.0, SILENT, 10.0)
    penalty.backward()
    # d/d kl at a silent element: 10 x weight / (4 elements x 2 samples); 0 at scored pixels.
    expected = torch.zeros_like(KL_MAP)
    expected[0, :, 0, 0] = 10 * 1.0 / 8
    expected[1, :, 0, 1] = 10 * 0.5 / 8
    torch.testing.assert_close(kl_map.grad, expected)


def test_clipfrac_counts_only_ratios_outside_the_range():
    # ratios 1.1 (inside 1 +- 0.2), 1.5 and 0.7 (outside): 2 of 3 clipped.
    stats = ratio_stats(torch.log(torch.tensor([1.1, 1.5, 0.7])), 0.2)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)


def test_losses_use_the_ratio_of_new_to_old_likelihood():
    # Shifting both log-likelihoods by the same constant leaves every ratio, and so the IS losses and their
    # diagnostics, unchanged; a sum in place of the difference would not.
    logp, shift = torch.log(torch.tensor([1.5, 0.5])), torch.tensor([-3.0, 2.0])
    adv = torch.tensor([1.0, -1.0])
    base, base_stats = ddpo_loss(logp, torch.zeros(2), adv, "is", 0.2)
    moved, moved_stats = ddpo_loss(logp + shift, shift, adv, "is", 0.2)
    assert moved.item() == pytest.approx(base.item()) == pytest.approx(-0.2)
    assert moved_stats["approx_kl"].item() == pytest.approx(base_stats["approx_kl"].item())
    pixels = logp.view(2, 1, 1)
    base, _ = pxpo_loss(pixels, torch.zeros(2, 1, 1), adv.view(2, 1, 1), 1, "is", 0.2)
    moved, _ = pxpo_loss(pixels + shift.view(2, 1, 1), shift.view(2, 1, 1), adv.view(2, 1, 1), 1, "is", 0.2)
    assert moved.item() == pytest.approx(base.item())


def test_policy_gradient_config_boundaries_and_messages():
    from agents.losses import PolicyGradientConfig

    PolicyGradientConfig(clip_range=1e-9, adv_clip_max=0.5, stat_buffer_size=1, stat_min_count=1)
    cases = [
        ({"estimator": "ppo"}, "estimator must be 'sf' or 'is', got estimator='ppo'"),
        ({"clip_range": 0.0}, "clip_range must be > 0, got clip_range=0.0"),
        ({"adv_clip_max": 0.0}, "adv_clip_max must be > 0, got adv_clip_max=0.0"),
        (
            {"stat_buffer_size": 4, "stat_min_count": 5},
            "need 1 <= stat_min_count <= stat_buffer_size, got stat_min_count=5, stat_buffer_size=4",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as caught:
            PolicyGradientConfig(**kwargs)
        assert str(caught.value) == message
