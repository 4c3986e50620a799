"""Held-out evaluation: fixed noise apart from training's, no effect on training, fidelity by hand."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.heldout import Evaluator
from agents.metrics import read_metrics
from agents.runs import train
from tests.agents.test_agents import tiny_config


def test_the_pretrained_model_has_distance_zero_and_the_default_model_a_shape_rate():
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=8, num_inference_steps=5)
    evaluator = Evaluator(envs, seed=0, context_ids=torch.arange(4))
    assert evaluator.contexts.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    again = evaluator(envs.unwrapped.model)
    assert again["fidelity_distance"] == 0.0
    assert again == evaluator.reference_metrics
    assert 0.0 <= again["fidelity_shape"] <= 1.0
    # A policy that predicts no noise at all draws other images.
    other = evaluator(lambda sample, t, c: torch.zeros_like(sample))
    assert other["fidelity_distance"] > 0.05
    # The distance by hand: image 0 moved by 0.1 everywhere (RMS 0.1); image 1 by 0.3 in its red
    # channel's left half only (RMS 0.3 sqrt(1/3 x 1/2)); the other 6 untouched; mean over the 8.
    shifted = evaluator.reference.images.clone()
    shifted[0] += 0.1
    shifted[1, 0, :, :8] += 0.3
    scored = evaluator.score(shifted, evaluator.reference.rewards)
    assert scored["fidelity_distance"] == pytest.approx((0.1 + 0.3 * math.sqrt(1 / 6)) / 8, rel=1e-5)
    assert scored["eval_reward"] == pytest.approx(float(evaluator.reference.rewards.mean()))


def test_evaluation_noise_is_not_training_noise(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, eval_every=1, eval_images=8)
    from agents.config import make_envs
    from agents.trainer import Trainer

    trainer = Trainer(config)
    train_images = trainer.sample().images
    evaluator = Evaluator(make_envs(config, 8), config.run.seed, torch.arange(3))
    eval_images = evaluator.reference.images
    # no evaluation image is any training image
    distances = (eval_images[:, None] - train_images[None]).abs().amax(dim=(2, 3, 4))
    assert bool((distances > 1e-3).all())


def test_evaluating_changes_no_training_state(tiny_model_dir, tmp_path):
    base = tiny_config(tiny_model_dir, tmp_path, num_epochs=3)
    train(base.replace(out=str(tmp_path / "plain")))
    train(base.replace(out=str(tmp_path / "eval"), eval_every=2, eval_images=4))
    plain, evaluated = (
        read_metrics(tmp_path / "plain" / "metrics.csv"),
        read_metrics(tmp_path / "eval" / "metrics.csv"),
    )
    for a, b in zip(plain, evaluated):
        for key in ("reward_mean", "loss", "approx_kl", "grad_norm"):
            assert a[key] == b[key]
    # evaluated at epoch 2 and at the last epoch; NaN elsewhere; non-default model: no shape rate
    assert [math.isnan(r["eval_reward"]) for r in evaluated] == [True, False, False]
    assert math.isnan(evaluated[1]["fidelity_shape"]) and evaluated[1]["fidelity_distance"] > 0
    assert (tmp_path / "eval" / "eval_reference.json").is_file()


def test_bad_evaluation_settings_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="eval_images"):
        tiny_config(tiny_model_dir, tmp_path, eval_images=0)
    with pytest.raises(ValueError, match="eval_every"):
        tiny_config(tiny_model_dir, tmp_path, eval_every=-1)


def test_the_seam_metric_by_hand():
    from agents.heldout import seam_energy, seam_ratio

    silent = torch.zeros(2, 3, dtype=torch.bool)
    silent[:, 2] = True  # the right column is silent: the edge runs between columns 1 and 2
    images = torch.zeros(1, 3, 2, 3)
    images[..., 2] = 1.0  # a hard step of 1 across the edge in every channel and row
    assert seam_energy(images, silent, rings=1) == [1.0]
    images[..., 1] = 0.5  # a step of 0.5: a quarter of the energy
    assert seam_energy(images, silent, rings=1) == [0.25]
    assert math.isnan(seam_energy(images, torch.zeros(2, 3, dtype=torch.bool), rings=1)[0])  # no edge
    down = torch.zeros(2, 3, dtype=torch.bool)
    down[1] = True  # the bottom row silent: vertical pairs across the edge
    images = torch.zeros(1, 3, 2, 3)
    images[:, :, 1] = 2.0
    assert seam_energy(images, down, rings=1) == [4.0]
    # Rings inwards: columns 2..5 silent; ring k pairs columns 1 + k and 2 + k.
    silent = torch.zeros(1, 6, dtype=torch.bool)
    silent[:, 2:] = True
    ramp = torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0]).expand(1, 3, 1, 6)  # a step of 1 spread over 4
    energies = seam_energy(ramp, silent, rings=5)
    assert energies[:4] == [0.0625] * 4 and math.isnan(energies[4])  # no pixel at distance 5
    hard = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]).expand(1, 3, 1, 6)
    assert seam_energy(hard, silent, rings=3) == [1.0, 0.0, 0.0]
    reference = [
        0.0625,
        0.0625,
        0.0625,
    ]  # a pretrained image with the ramp: the hard edge is 16x it, the ramp 1x
    assert seam_ratio(seam_energy(hard, silent, rings=3), reference) == 16.0
    assert seam_ratio(seam_energy(ramp, silent, rings=3), reference) == 1.0
    assert math.isnan(seam_ratio([math.nan], [0.0]))


def test_pin_weights_ramp_over_the_band_by_hand():
    from pxpo_gym.pinning import pin_weights

    held = torch.zeros(1, 3, 7, dtype=torch.bool)
    held[:, :, 2:] = True  # columns 2-6 held, the border is no edge
    assert torch.equal(pin_weights(held, 0), held.float())
    row = pin_weights(held, 2)[0, 1]
    torch.testing.assert_close(row, torch.tensor([0, 0, 1 / 3, 2 / 3, 1, 1, 1]), rtol=0, atol=1e-7)
    corner = torch.ones(1, 4, 4, dtype=torch.bool)
    corner[0, 0, 0] = False  # one free pixel: chessboard rings around it
    weights = pin_weights(corner, 1)[0]
    assert weights[0, 0] == 0 and weights[1, 1] == 0.5 and weights[0, 1] == 0.5 and weights[2, 2] == 1
    assert torch.equal(pin_weights(torch.ones(1, 2, 2, dtype=torch.bool), 3), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="band must be in"):
        pin_weights(held, -1)


def test_blend_is_exact_at_the_ends_and_linear_between():
    from pxpo_gym.pinning import blend

    eps, ref = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    held = torch.tensor([[[0.0, 1.0], [0.25, 1.0]]]).expand(2, 2, 2)
    out = blend(eps, ref, held)
    assert torch.equal(out[:, :, 0, 0], eps[:, :, 0, 0]) and torch.equal(out[:, :, :, 1], ref[:, :, :, 1])
    torch.testing.assert_close(out[:, :, 1, 0], 0.75 * eps[:, :, 1, 0] + 0.25 * ref[:, :, 1, 0])
    assert torch.equal(blend(eps, ref, held == 1), torch.where((held == 1)[:, None], ref, eps))
