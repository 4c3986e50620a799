"""DDPO's and PXPO's losses, pure functions, against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.losses import clipped_surrogate, ddpo_loss, pxpo_loss


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
