"""The generic-learner views as Gymnasium wrappers: explicit composition == gym.make keywords,
single-env wrappers == vector ones, and their own argument checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import pxpo_gym  # noqa: F401
from pxpo_gym.env import DiffusionDenoiseEnv
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv
from pxpo_gym.wrappers import (
    ObservationView,
    ResidualAction,
    SingleObservationView,
    SingleResidualAction,
    generic_wrappers,
)

STEPS = 3
VIEW = dict(keys=("sample", "step_index", "context"), downscale=2, flatten=True, one_hot_context=True)
KEYWORDS = dict(
    action_mode="residual",
    residual_scale=0.5,
    action_grid=(2, 4),
    obs_keys=("sample", "step_index", "context"),
    obs_downscale=2,
    obs_flatten=True,
    obs_one_hot_context=True,
)


def _actions(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, 2, 4, generator=gen) * 2 - 1 for _ in range(STEPS)]


def _rollout(envs, actions):
    obs, _ = envs.reset(seed=7)
    seen = [obs]
    for a in actions:
        obs, reward, terminated, _, info = envs.step(a)
        seen.append(obs)
    return seen, reward, info["image"]


def test_explicit_wrappers_equal_the_make_vec_keywords(tiny_model_dir):
    core = DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=STEPS)
    explicit = ObservationView(ResidualAction(core, residual_scale=0.5, action_grid=(2, 4)), **VIEW)
    keywords = gym.make_vec(
        "DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), num_inference_steps=STEPS, **KEYWORDS
    )
    assert explicit.single_observation_space == keywords.single_observation_space
    assert (
        explicit.single_action_space
        == keywords.single_action_space
        == gym.spaces.Box(-1, 1, (3, 2, 4), np.float32)
    )
    assert generic_wrappers(keywords) == ["ObservationView", "ResidualAction"]
    a, b = _rollout(explicit, _actions(2)), _rollout(keywords, _actions(2))
    for obs_a, obs_b in zip(a[0], b[0]):
        assert obs_a.keys() == obs_b.keys() == {"sample", "step_index", "context"}
        for key in obs_a:
            assert torch.equal(obs_a[key], obs_b[key]), key
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert a[0][0]["sample"].shape == (2, 3 * 4 * 4) and a[0][-1]["step_index"].tolist() == [[STEPS], [STEPS]]


def test_single_env_wrappers_equal_the_vector_ones(tiny_model_dir):
    plain = DiffusionDenoiseEnv(model=str(tiny_model_dir), num_inference_steps=STEPS)
    wrapped = SingleObservationView(
        SingleResidualAction(plain, residual_scale=0.5, action_grid=(2, 4)), **VIEW
    )
    keywords = gym.make(
        "DiffusionDenoise-v0", model=str(tiny_model_dir), num_inference_steps=STEPS, **KEYWORDS
    )
    assert wrapped.observation_space == keywords.observation_space
    assert wrapped.action_space == keywords.action_space
    obs_a, _ = wrapped.reset(seed=7)
    obs_b, _ = keywords.reset(seed=7)
    for a in _actions(1):
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
        obs_a, reward_a, *_ = wrapped.step(a[0].numpy())
        obs_b, reward_b, *_ = keywords.step(a[0].numpy())
    assert reward_a == reward_b


def test_a_zero_correction_is_the_pretrained_sampler(tiny_model_dir):
    from pxpo_gym.sampling import run_policy

    core = DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=STEPS)
    pretrained = run_policy(core, seed=3).images
    residual = ResidualAction(
        DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=STEPS)
    )
    residual.reset(seed=3)
    for _ in range(STEPS):
        *_, info = residual.step(torch.zeros(2, 3, 8, 8))
    assert torch.equal(info["image"], pretrained)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda core: ResidualAction(core, residual_scale=-1.0), "residual_scale=-1.0"),
        (lambda core: ResidualAction(core, action_grid=3), "action_grid=3"),
        (lambda core: ObservationView(core, keys=("prompt",)), "obs_keys"),
        (lambda core: ObservationView(core, downscale=3), "obs_downscale=3"),
    ],
)
def test_wrapper_arguments_are_checked(tiny_model_dir, make, message):
    core = DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=STEPS)
    with pytest.raises(ValueError, match=message):
        make(core)


def test_residual_actions_are_checked_and_change_nothing(tiny_model_dir):
    envs = ResidualAction(
        DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=STEPS),
        action_grid=1,
    )
    envs.reset(seed=0)
    before = envs.unwrapped.current_sample()
    with pytest.raises(ValueError, match=r"shape \(2, 3, 1, 1\)"):
        envs.step(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        envs.step(torch.full((2, 3, 1, 1), float("nan")))
    assert torch.equal(envs.unwrapped.current_sample(), before)
