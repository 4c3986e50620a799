"""The exact-gradient oracle: its gradient against finite differences, its runs, its refusals."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.algorithms.oracle import differentiable_rollout, reward_gradient
from agents.metrics import read_metrics
from agents.policy import make_policy
from agents.runs import train
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config


def tiny_envs(tiny_model_dir, reward="color", num_envs=4, steps=3):
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=num_envs,
        model=str(tiny_model_dir),
        reward=reward,
        num_inference_steps=steps,
    )


def mean_reward(policy, envs, seed: int) -> float:
    with torch.no_grad():
        rewards = differentiable_rollout(envs, policy, seed=seed).rewards
    return float(rewards.double().mean())


def test_oracle_gradient_matches_finite_differences(tiny_model_dir):
    envs = tiny_envs(tiny_model_dir, reward="brightness")
    policy = make_policy(envs.unwrapped.model, 0)
    grad, _ = reward_gradient(policy, envs, policy, seed=3)
    params = [p for p in policy.parameters() if p.requires_grad]
    direction = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(0))
    direction /= direction.norm()
    step = 1e-2

    def shifted(scale: float) -> float:
        offset = 0
        with torch.no_grad():
            for p in params:
                p.add_(scale * direction[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        value = mean_reward(policy, envs, seed=3)
        with torch.no_grad():
            offset = 0
            for p in params:
                p.sub_(scale * direction[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        return value

    finite_difference = (shifted(step) - shifted(-step)) / (2 * step)
    analytic = float(grad @ direction)
    assert abs(analytic) > 1e-3  # the check is not trivially 0 = 0
    assert finite_difference == pytest.approx(analytic, rel=2e-2)


def test_truncated_backprop(tiny_model_dir):
    envs = tiny_envs(tiny_model_dir)
    policy = make_policy(envs.unwrapped.model, 0)
    full, _ = reward_gradient(policy, envs, policy, seed=0)
    all_steps, _ = reward_gradient(policy, envs, policy, seed=0, backprop_steps=3)
    last_only, _ = reward_gradient(policy, envs, policy, seed=0, backprop_steps=1)
    torch.testing.assert_close(all_steps, full)
    assert not torch.allclose(last_only, full)
    assert last_only.abs().sum() > 0


def test_oracle_training_runs_and_resumes_exactly(tiny_model_dir, tmp_path):
    base = tiny_config(tiny_model_dir, tmp_path, algo="oracle", train_batch_size=4, save_every=1)
    history = train(base.replace(num_epochs=3, out=str(tmp_path / "full")))
    assert [m["images"] for m in history] == [8, 16, 24]
    assert history[0]["loss"] == pytest.approx(-history[0]["reward_mean"])
    train(base.replace(num_epochs=1, out=str(tmp_path / "part")))
    train(base.replace(num_epochs=3, out=str(tmp_path / "part"), resume=str(tmp_path / "part")))
    a, b = read_metrics(tmp_path / "full" / "metrics.csv"), read_metrics(tmp_path / "part" / "metrics.csv")
    assert [r["reward_mean"] for r in a] == [r["reward_mean"] for r in b]


def test_oracle_env_batch_is_the_train_batch(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="oracle", train_batch_size=4))
    assert trainer.envs.unwrapped.num_envs == 4 and trainer.algo.samples_with_gradients


def test_oracle_refuses_a_reward_without_gradient(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="has no gradient with respect to the image"):
        Trainer(tiny_config(tiny_model_dir, tmp_path, algo="oracle", reward="jpeg_compressibility"))
