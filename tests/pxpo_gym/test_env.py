"""The env: checkers, determinism, partial reset, slot equivalence, and clear errors."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.env import DiffusionDenoiseEnv
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv

STEPS = 5


@pytest.fixture
def vec(tiny_model_dir):
    return gym.make_vec(
        "DiffusionDenoise-v0", num_envs=4, model=str(tiny_model_dir), num_inference_steps=STEPS
    )


def _rollout(envs, seed, actions_seed=0):
    """Runs one episode with random actions; returns observations, rewards and the terminal info."""
    gen = torch.Generator().manual_seed(actions_seed)
    obs, _ = envs.reset(seed=seed)
    samples = [obs["sample"]]
    for _ in range(STEPS):
        action = torch.randn(obs["sample"].shape, generator=gen)
        obs, reward, terminated, truncated, info = envs.step(action)
        samples.append(obs["sample"])
    return torch.stack(samples), reward, terminated, info


@pytest.mark.parametrize("model_dir", ["tiny_model_dir", "tiny_flow_dir"])
def test_gymnasium_check_env_passes(model_dir, request):
    from gymnasium.utils.env_checker import check_env

    model = request.getfixturevalue(model_dir)  # a DDIM model and a flow-matching one
    env = gym.make("DiffusionDenoise-v0", model=str(model), num_inference_steps=STEPS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not [w for w in caught if "pxpo" in str(w.filename)], [str(w.message) for w in caught]


def test_sb3_check_env_passes(tiny_model_dir):
    from stable_baselines3.common.env_checker import check_env

    env = DiffusionDenoiseEnv(model=str(tiny_model_dir), num_inference_steps=STEPS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    # The noise-prediction env is not an SB3-shaped env on purpose (its observation is a
    # latent, its action an unnormalised eps); these four advisories are expected and
    # nothing else may appear. The generic-learner options remove them (tests/test_sb3.py).
    expected = (
        "whereas it has to be",
        "upper and lower bounds are not in [0, 255]",
        "minimal resolution",
        "symmetric and normalized Box",
    )
    unexpected = [str(w.message) for w in caught if not any(e in str(w.message) for e in expected)]
    assert not unexpected, unexpected
    assert len(caught) == 4


def test_default_model_single_env_episode():
    env = gym.make("DiffusionDenoise-v0")
    obs, info = env.reset(seed=0, options={"context": "circle"})
    assert obs["sample"].shape == (3, 16, 16) and obs["sample"].dtype == np.float32
    assert obs["timestep"].dtype == np.int64 and obs["context"].tolist() == [0]
    model = env.unwrapped.model
    for step in range(20):
        obs, reward, terminated, truncated, info = env.step(
            model(obs["sample"], obs["timestep"], obs["context"])
        )
        assert terminated == (step == 19) and truncated is False
    assert isinstance(reward, float)
    assert info["reward_map"].shape == (16, 16) and info["image"].shape == (3, 16, 16)
    assert reward == pytest.approx(float(info["reward_map"].mean()), rel=1e-5)
    assert obs["timestep"].tolist() == [-1]


def test_seeded_determinism(vec):
    first = _rollout(vec, seed=7)
    second = _rollout(vec, seed=7)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[3]["reward_map"], second[3]["reward_map"])
    other = _rollout(vec, seed=8)
    assert not torch.equal(first[0], other[0])


def test_terminal_step_and_info(vec):
    samples, reward, terminated, info = _rollout(vec, seed=0)
    assert terminated.all() and reward.shape == (4,) and reward.dtype == torch.float32
    assert info["reward_map"].shape == (4, 8, 8) and info["_reward_map"].all()
    torch.testing.assert_close(reward, info["reward_map"].mean(dim=(1, 2)))
    assert info["image"].shape == (4, 3, 8, 8) and 0 <= info["image"].min() and info["image"].max() <= 1


def test_transition_coefficients_in_info_give_the_likelihood(vec):
    from pxpo_gym.transition import TransitionCoefficients, step_log_prob

    obs, _ = vec.reset(seed=3)
    action = torch.zeros_like(obs["sample"])
    next_obs, _, _, _, info = vec.step(action)
    coeffs = TransitionCoefficients(info["coef_sample"], info["coef_model_output"], info["std_dev_t"])
    logp = step_log_prob(next_obs["sample"], obs["sample"], action, coeffs)
    # x_{t-1} - mean = sigma z with z ~ N(0, 1): the per-element log-density averages
    # -log sigma - 0.5 log(2 pi) - 0.5 E[z^2]; check it lies near that.
    expected = -info["std_dev_t"].log() - 0.5 * np.log(2 * np.pi) - 0.5
    torch.testing.assert_close(logp.mean(dim=(1, 2, 3)), expected, atol=0.25, rtol=0)


def test_the_single_env_info_leaves_out_the_old_coefficient_name(tiny_model_dir):
    env = gym.make("DiffusionDenoise-v0", model=str(tiny_model_dir), num_inference_steps=2)
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros_like(obs["sample"]))
    assert {"coef_sample", "coef_model_output", "std_dev_t"} <= info.keys() and "coef_eps" not in info


def test_autoreset_next_step(vec):
    _rollout(vec, seed=0)
    obs, reward, terminated, truncated, info = vec.step(torch.zeros(4, 3, 8, 8))
    assert not terminated.any() and (reward == 0).all()
    assert (info["step_index"] == 0).all() and torch.isnan(info["coef_sample"]).all()
    assert (obs["timestep"][:, 0] == vec.unwrapped.schedule.timesteps[0]).all()


def test_partial_reset_touches_only_masked_envs(vec):
    obs, _ = vec.reset(seed=1)
    obs, *_ = vec.step(torch.zeros(4, 3, 8, 8))
    mask = np.array([True, False, True, False])
    new_obs, info = vec.reset(options={"reset_mask": mask})
    keep = torch.from_numpy(~mask)
    assert torch.equal(new_obs["sample"][keep], obs["sample"][keep])
    assert info["step_index"].tolist() == [0, 1, 0, 1]
    assert not torch.equal(new_obs["sample"][~keep], obs["sample"][~keep])
    # Out-of-step envs still step correctly: the un-reset envs finish one step earlier.
    for _ in range(STEPS - 1):
        _, _, terminated, _, _ = vec.step(torch.zeros(4, 3, 8, 8))
    assert terminated.tolist() == [False, True, False, True]


def test_each_vector_slot_matches_the_single_env(tiny_model_dir):
    kwargs = dict(model=str(tiny_model_dir), num_inference_steps=STEPS)
    vec = DiffusionDenoiseVectorEnv(num_envs=3, **kwargs)
    obs, _ = vec.reset(seed=10)
    single_obs = []
    for i in range(3):
        env = DiffusionDenoiseEnv(**kwargs)
        o, _ = env.reset(seed=10 + i)
        single_obs.append((env, o))
        np.testing.assert_array_equal(obs["sample"][i].numpy(), o["sample"])
        assert obs["context"][i].item() == o["context"][0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        action = torch.randn(3, 3, 8, 8, generator=gen)
        obs, reward, *_ = vec.step(action)
        for i, (env, _) in enumerate(single_obs):
            o, r, *_ = env.step(action[i].numpy())
            np.testing.assert_allclose(obs["sample"][i].numpy(), o["sample"], rtol=1e-6, atol=1e-6)
    assert r == pytest.approx(reward[2].item(), rel=1e-5)


def test_pretrained_policy_matches_a_hand_written_diffusers_loop(tiny_model_dir):
    # 20 steps, as in real use (diffusers' float32 step can give NaN at t=999 with a
    # 'trailing' grid and few steps; our schedule computes its coefficients in float64).
    steps = 20
    envs = gym.make_vec(
        "DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), num_inference_steps=steps
    )
    model = envs.unwrapped.model
    obs, _ = envs.reset(seed=4)
    with torch.no_grad():
        while True:
            obs, reward, terminated, truncated, info = envs.step(
                model(obs["sample"], obs["timestep"], obs["context"])
            )
            if terminated.all():
                break
    # Reference: diffusers' own DDIMScheduler.step with the noise the env drew.
    scheduler = DDIMScheduler.from_pretrained(tiny_model_dir, subfolder="scheduler", set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    images = []
    for i in range(2):
        gen = torch.Generator().manual_seed(4 + i)
        context = torch.randint(3, (1,), generator=gen)
        noise = torch.randn((steps + 1, 3, 8, 8), generator=gen)
        x = noise[:1]
        with torch.no_grad():
            for k, t in enumerate(scheduler.timesteps):
                eps = model.net(x, t, class_labels=context).sample
                x = scheduler.step(eps, t, x, eta=1.0, variance_noise=noise[k + 1 : k + 2]).prev_sample
        images.append(((x + 1) / 2).clamp(0, 1))
    torch.testing.assert_close(info["image"], torch.cat(images), rtol=1e-4, atol=1e-4)


def test_make_without_import_uses_module_prefix(tiny_model_dir):
    code = (
        "import gymnasium as gym\n"
        f"env = gym.make('pxpo_gym:DiffusionDenoise-v0', model={str(tiny_model_dir)!r}, num_inference_steps=2)\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs['sample'].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "(3, 8, 8)" in out.stdout


def test_fixed_and_sampled_contexts(tiny_model_dir):
    envs = DiffusionDenoiseVectorEnv(
        num_envs=8, model=str(tiny_model_dir), num_inference_steps=2, context=[0, 2]
    )
    obs, _ = envs.reset(seed=0)
    assert set(obs["context"].flatten().tolist()) <= {0, 2}
    obs, _ = envs.reset(options={"context": 1})
    assert (obs["context"] == 1).all()
    obs, _ = envs.reset(options={"context": torch.arange(8) % 3})
    assert obs["context"].flatten().tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_reward_aggregate_sum_and_callable(tiny_model_dir):
    kwargs = dict(num_envs=2, model=str(tiny_model_dir), num_inference_steps=2)
    for aggregate, expected in [("sum", lambda m: m.sum(dim=(1, 2))), (lambda m: m.amax(dim=(1, 2)), None)]:
        envs = DiffusionDenoiseVectorEnv(reward_aggregate=aggregate, **kwargs)
        envs.reset(seed=0)
        envs.step(torch.zeros(2, 3, 8, 8))
        _, reward, _, _, info = envs.step(torch.zeros(2, 3, 8, 8))
        reference = (expected or aggregate)(info["reward_map"])
        torch.testing.assert_close(reward, reference)


def test_reset_with_given_noise_replays_a_seeded_episode(vec):
    from pxpo_gym.sampling import run_policy

    core = vec.unwrapped
    seeded = run_policy(vec, seed=5, options={"context": 1})
    noise = core._noise.clone()  # what seed 5 drew: (B, T + 1, C, h, w)
    state = core.get_rng_state()
    replay = run_policy(vec, options={"context": 1, "noise": noise})
    assert torch.equal(replay.images, seeded.images)
    assert all(torch.equal(a, b) for a, b in zip(state, core.get_rng_state()))  # generators not drawn
    shared = noise.clone()
    shared[1:, :3] = shared[0, :3]  # slots 1.. share slot 0's x_T and first two steps' noise
    obs, _ = vec.reset(options={"context": 1, "noise": shared})
    assert torch.equal(obs["sample"][1], obs["sample"][0])
    for bad, message in [
        (noise[:2], "must be a float tensor of shape"),
        (noise.long(), "must be a float tensor"),
        (noise.numpy(), "must be a float tensor"),
        (torch.full_like(noise, float("nan")), "NaN or inf"),
    ]:
        with pytest.raises(ValueError, match=message):
            vec.reset(options={"noise": bad})
