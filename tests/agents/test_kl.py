"""KL to the frozen reference model: the formula against torch.distributions, zero at the start."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from agents.metrics import read_metrics
from agents.runs import train
from agents.trainer import Trainer
from agents.trajectories import coefficients_from
from pxpo_gym.transition import TransitionCoefficients, step_kl, transition_mean
from tests.agents.test_agents import tiny_config


def test_step_kl_equals_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    sample, eps, eps_ref = (torch.randn(3, 2, 4, 4, generator=gen) for _ in range(3))
    coeffs = TransitionCoefficients(
        torch.tensor([1.1, 1.0, 2.0]), torch.tensor([-0.3, -0.1, -1.5]), torch.tensor([0.5, 0.01, 0.9])
    )
    std = coeffs.std_dev_t[:, None, None, None]
    want = torch.distributions.kl_divergence(
        torch.distributions.Normal(transition_mean(sample, eps, coeffs), std),
        torch.distributions.Normal(transition_mean(sample, eps_ref, coeffs), std),
    )
    torch.testing.assert_close(step_kl(eps, eps_ref, coeffs), want, rtol=1e-5, atol=1e-6)
    assert step_kl(eps, eps, coeffs).abs().max() == 0


@pytest.mark.parametrize("algo", ["ddpo", "pxpo"])
def test_kl_is_zero_while_the_policy_is_the_reference(tiny_model_dir, tmp_path, algo):
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo=algo, kl_coef=0.5))
    traj = trainer.sample()
    adv = trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    metrics = trainer.update(traj, adv)  # one minibatch: every step is seen before the optimizer steps
    assert metrics["kl"] == 0.0


def test_kl_is_logged_and_grows_after_updates(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, kl_coef=0.1, num_epochs=3, learning_rate=1e-2)
    train(config)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0
    train(config.replace(kl_coef=0.0, out=str(tmp_path / "plain")))
    plain = read_metrics(tmp_path / "plain" / "metrics.csv")
    assert all(r["kl"] != r["kl"] for r in plain)  # NaN: not computed without a penalty
    with open(tmp_path / "plain" / "metrics.csv", newline="") as handle:
        cells = [row["kl"] for row in csv.DictReader(handle)]
    assert cells and set(cells) == {""}  # an empty cell, explained in METRIC_FIELDS, not a bare 'nan'


def test_kl_is_measured_wherever_a_reference_pass_runs(tiny_model_dir, tmp_path):
    """With kl_coef 0, PXPO's penalty on silent pixels still runs the reference at every trained step: its KL
    is measured and logged (it read NaN, while the penalty had computed it)."""
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="pxpo", kl_coef=0.0))
    traj = trainer.sample()
    adv = trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    grid = tuple(traj.grid_reward_maps.shape[1:])
    trainer.algo.silent_weights = lambda contexts: torch.ones(len(contexts), *grid)  # every pixel silent
    metrics = trainer.update(traj, adv)
    assert metrics["kl"] == 0.0 and metrics["silent_kl"] == 0.0  # measured; the policy is still the reference
    moved = trainer.update(traj, adv)  # the policy has moved away from the reference since
    assert moved["kl"] > 0 and moved["kl"] == pytest.approx(
        moved["silent_kl"], rel=1e-5
    )  # (a 0 would be unread)
    trainer.algo.silent_weights = lambda contexts: None
    assert math.isnan(trainer.update(traj, adv)["kl"])  # no reference pass: not measured


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(kl_coef=-1.0), "kl_coef must be >= 0"),
        (dict(algo="oracle", kl_coef=0.1), r"\['kl_coef'\] are not options of algo='oracle'"),
    ],
)
def test_bad_kl_settings(tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tiny_model_dir, tmp_path, **overrides)


def test_step_kl_gradient_by_hand():
    """d KL / d eps = b_t^2 (eps - eps_ref) / sigma_t^2: the penalty pulls eps toward the reference."""
    coeffs = TransitionCoefficients(torch.tensor([1.0]), torch.tensor([-0.5]), torch.tensor([0.25]))
    eps = torch.tensor([[[[0.3, -0.2]]]], requires_grad=True)
    eps_ref = torch.tensor([[[[0.1, 0.2]]]])
    step_kl(eps, eps_ref, coeffs).sum().backward()
    # b^2 / sigma^2 = 0.25 / 0.0625 = 4: gradients 4 x (0.2, -0.4)
    torch.testing.assert_close(eps.grad, torch.tensor([[[[0.8, -1.6]]]]))


def mean_kl_to_reference(trainer: Trainer) -> float:
    """The policy's mean per-element KL to the reference over every step of one fresh epoch."""
    traj = trainer.sample()
    total = 0.0
    with torch.no_grad():
        for k in range(traj.timesteps.shape[1]):
            sample, t, c = traj.samples[:, k], traj.timesteps[:, k], traj.contexts
            eps = trainer.action(sample, t, c)
            total += float(
                trainer.reference_kl(sample, t, c, eps, coefficients_from(traj.coeffs[:, k])).mean()
            )
    return total / traj.timesteps.shape[1]


@pytest.mark.parametrize("algo", ["ddpo", "pxpo"])
def test_the_penalty_keeps_the_policy_closer_to_the_reference(tiny_model_dir, tmp_path, algo):
    """Paired on the same seed: training with the penalty ends nearer the reference than without
    (fails with the penalty's sign flipped or the penalty left out of the loss)."""
    kls = {}
    for coef in (0.0, 10.0):
        config = tiny_config(
            tiny_model_dir, tmp_path / str(coef), algo=algo, kl_coef=coef, learning_rate=1e-2
        )
        trainer = Trainer(config)
        for _ in range(3):
            trainer.train_epoch()
        kls[coef] = mean_kl_to_reference(trainer)
    assert kls[10.0] < 0.5 * kls[0.0], kls
