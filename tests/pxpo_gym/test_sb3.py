"""Residual action mode, observation options and the Stable-Baselines3 adapter."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.sampling import run_policy
from pxpo_gym.sb3 import SB3VecEnv, make_sb3_env

STEPS = 5
GENERIC = dict(
    action_mode="residual",
    action_grid=2,
    obs_keys=("sample", "step_index", "context"),
    obs_downscale=2,
    obs_flatten=True,
    obs_one_hot_context=True,
)


def _vec(model_dir, num_envs=4, **kwargs):
    return gym.make_vec(
        "DiffusionDenoise-v0", num_envs=num_envs, model=str(model_dir), num_inference_steps=STEPS, **kwargs
    )


# -- residual mode --------------------------------------------------------------


def test_zero_residual_reproduces_the_pretrained_sampler_exactly(tiny_model_dir):
    pretrained = run_policy(_vec(tiny_model_dir), seed=3)
    envs = _vec(tiny_model_dir, action_mode="residual")
    assert envs.single_action_space == gym.spaces.Box(-1, 1, (3, 8, 8), np.float32)
    reference = _vec(tiny_model_dir)
    obs, _ = envs.reset(seed=3)
    ref_obs, _ = reference.reset(seed=3)
    model = reference.unwrapped.model
    for _ in range(STEPS):
        obs, rewards, terminated, _, info = envs.step(torch.zeros(4, 3, 8, 8))
        ref_obs, *_ = reference.step(model(ref_obs["sample"], ref_obs["timestep"], ref_obs["context"]))
        assert torch.equal(obs["sample"], ref_obs["sample"])  # every x_t, bit for bit
    assert terminated.all()
    assert torch.equal(info["image"], pretrained.images)
    assert torch.equal(rewards, pretrained.rewards)


def test_residual_applies_the_documented_formula(tiny_model_dir):
    """eps = model(x_t, t, c) + scale * up(clip(a)), checked against eps-mode steps with that eps."""
    scale = 0.3
    envs = _vec(tiny_model_dir, action_mode="residual", residual_scale=scale, action_grid=(2, 4))
    reference = _vec(tiny_model_dir)
    gen = torch.Generator().manual_seed(0)
    obs, _ = envs.reset(seed=1)
    ref_obs, _ = reference.reset(seed=1)
    model = reference.unwrapped.model
    for _ in range(STEPS):
        action = 2 * torch.randn(4, 3, 2, 4, generator=gen)  # many entries outside [-1, 1]: clipped
        up = action.clamp(-1, 1).repeat_interleave(4, dim=2).repeat_interleave(2, dim=3)  # 8x8 blocks of 4x2
        eps = model(ref_obs["sample"], ref_obs["timestep"], ref_obs["context"]) + scale * up
        obs, *_ = envs.step(action)
        ref_obs, *_ = reference.step(eps)
        assert torch.equal(obs["sample"], ref_obs["sample"])


def test_observation_options(tiny_model_dir):
    envs = _vec(tiny_model_dir, num_envs=3, **GENERIC)
    plain = _vec(tiny_model_dir, num_envs=3)
    space = envs.single_observation_space
    assert space["sample"].shape == (3 * 4 * 4,)
    assert space["step_index"] == gym.spaces.Box(0, STEPS, (1,), np.int64)
    assert space["context"] == gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    assert "timestep" not in space.spaces
    obs, _ = envs.reset(seed=0)
    ref, _ = plain.reset(seed=0)
    for k in range(STEPS + 1):
        pooled = ref["sample"].reshape(3, 3, 4, 2, 4, 2).mean(dim=(3, 5))  # 2x2 block means, by hand
        torch.testing.assert_close(obs["sample"], pooled.reshape(3, -1))
        assert obs["step_index"][:, 0].tolist() == [k] * 3
        assert torch.equal(obs["context"].argmax(1), ref["context"][:, 0])
        assert torch.equal(obs["context"].sum(1), torch.ones(3))
        if k < STEPS:
            obs, *_ = envs.step(torch.zeros(3, 3, 2, 2))
            ref, *_ = plain.step(plain.unwrapped.model(ref["sample"], ref["timestep"], ref["context"]))


def test_checkers_pass_on_the_generic_single_env(tiny_model_dir):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("DiffusionDenoise-v0", model=str(tiny_model_dir), num_inference_steps=STEPS, **GENERIC)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env.unwrapped, warn=True)
        gym_check_env(env.unwrapped)
    assert not [str(w.message) for w in caught if "stable_baselines3" in w.filename or "pxpo" in w.filename]


def test_our_agents_refuse_a_residual_env(tiny_model_dir):
    from agents.config import TrainConfig, check_envs

    config = TrainConfig.of(
        model=str(tiny_model_dir),
        sample_batch_size=4,
        train_batch_size=4,
        num_inference_steps=STEPS,
        progress=False,
    )
    with pytest.raises(ValueError, match="action_mode='model_output'"):
        check_envs(config, _vec(tiny_model_dir, action_mode="residual"))
    with pytest.raises(ValueError, match="default observation"):
        check_envs(config, _vec(tiny_model_dir, obs_downscale=2))


# -- the SB3 adapter ------------------------------------------------------------


def test_adapter_resets_in_the_same_step_and_matches_the_vector_env(tiny_model_dir):
    """Two episodes through the adapter = two episodes of the vector env with NEXT_STEP autoreset."""
    venv = SB3VecEnv(_vec(tiny_model_dir, num_envs=3, action_mode="residual"))
    assert venv.action_space == gym.spaces.Box(-1, 1, (3, 8, 8), np.float32)
    reference = _vec(tiny_model_dir, num_envs=3, action_mode="residual")
    gen = torch.Generator().manual_seed(0)
    actions = [torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1 for _ in range(2 * STEPS)]

    venv.seed(5)
    obs = venv.reset()
    ref_obs, _ = reference.reset(seed=5)
    np.testing.assert_array_equal(obs["sample"], ref_obs["sample"].numpy())
    for episode in range(2):
        for k in range(STEPS):
            obs, rewards, dones, infos = venv.step(actions[episode * STEPS + k].numpy())
            ref_obs, ref_rewards, terminated, _, ref_info = reference.step(actions[episode * STEPS + k])
            np.testing.assert_array_equal(rewards, ref_rewards.numpy())
            assert rewards.dtype == np.float32 and dones.dtype == np.bool_
            assert dones.tolist() == terminated.tolist()
        assert dones.all()
        for i, info in enumerate(infos):
            final = info["terminal_observation"]
            np.testing.assert_array_equal(final["sample"], ref_obs["sample"][i].numpy())
            assert final["timestep"].tolist() == [-1]
            np.testing.assert_array_equal(info["reward_map"], ref_info["reward_map"][i].numpy())
            assert info["TimeLimit.truncated"] is False
            # the coefficients under their names, not also under the old alias (a copy per step)
            assert info["coef_model_output"] == ref_info["coef_model_output"][i].item()
            assert "coef_eps" not in info and "coef_eps" in ref_info
        assert obs["timestep"][:, 0].tolist() == [reference.unwrapped.schedule.timesteps[0].item()] * 3
        ref_obs, *_ = reference.step(torch.zeros(3, 3, 8, 8))  # NEXT_STEP autoreset step
        np.testing.assert_array_equal(obs["sample"], ref_obs["sample"].numpy())  # same new episode
        np.testing.assert_array_equal(obs["context"], ref_obs["context"].numpy())


def test_adapter_scales_eps_actions_from_unit_box(tiny_model_dir):
    venv = SB3VecEnv(_vec(tiny_model_dir, num_envs=2))
    reference = _vec(tiny_model_dir, num_envs=2)
    assert venv.action_space == gym.spaces.Box(-1, 1, (3, 8, 8), np.float32)
    venv.seed(0)
    venv.reset()
    reference.reset(seed=0)
    action = np.full((2, 3, 8, 8), 0.05, np.float32)
    obs, *_ = venv.step(action)
    ref_obs, *_ = reference.step(torch.from_numpy(action) * 10)  # eps = 10 a for the [-10, 10] box
    np.testing.assert_allclose(obs["sample"], ref_obs["sample"].numpy(), rtol=0, atol=1e-6)


def test_adapter_contexts_from_set_options(tiny_model_dir):
    venv = SB3VecEnv(_vec(tiny_model_dir, num_envs=3))
    venv.set_options({"context": 2})
    assert venv.reset()["context"][:, 0].tolist() == [2, 2, 2]
    venv.set_options([{"context": 0}, {"context": 1}, {"context": 2}])
    assert venv.reset()["context"][:, 0].tolist() == [0, 1, 2]
    venv.set_options([{"context": 0}, {}, {}])
    with pytest.raises(ValueError, match="set_options"):
        venv.reset()


@pytest.mark.parametrize(
    "action, error, message",
    [
        (np.zeros((2, 3, 2, 2), np.float32), ValueError, r"actions must have shape \(2, 3, 8, 8\)"),
        (np.zeros((3, 3, 8, 8), np.float32), ValueError, "actions must have shape"),
        (np.full((2, 3, 8, 8), np.nan, np.float32), ValueError, "NaN or inf"),
        (np.zeros((2, 3, 8, 8), np.int64), TypeError, "floating dtype"),
    ],
)
def test_adapter_bad_actions_get_the_env_errors(tiny_model_dir, action, error, message):
    venv = SB3VecEnv(_vec(tiny_model_dir, num_envs=2, action_mode="residual"))
    venv.reset()
    before = venv.core.current_sample()
    with pytest.raises(error, match=message):
        venv.step(action)
    assert torch.equal(venv.core.current_sample(), before)
    venv.step(np.zeros((2, 3, 8, 8), np.float32))  # still usable


def test_adapter_rejects_other_envs():
    with pytest.raises(TypeError, match="DiffusionDenoiseVectorEnv"):
        SB3VecEnv(gym.make_vec("CartPole-v1", num_envs=2))


def test_ppo_runs_on_the_adapter(tiny_model_dir):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(make_sb3_env(4, model=str(tiny_model_dir), num_inference_steps=STEPS, **GENERIC))
    model = PPO("MultiInputPolicy", venv, n_steps=2 * STEPS, batch_size=20, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=200)
    assert model.num_timesteps >= 200
    assert len(model.ep_info_buffer) >= 200 // STEPS - 4  # whole episodes were recorded by VecMonitor
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (4, 3, 2, 2) and np.all(np.abs(actions) <= 1)


def test_adapter_renders_current_images(tiny_model_dir):
    venv = make_sb3_env(2, render_mode="rgb_array", model=str(tiny_model_dir), num_inference_steps=STEPS)
    venv.reset()
    images = venv.get_images()
    assert len(images) == 2 and images[0].shape == (8, 8, 3) and images[0].dtype == np.uint8
