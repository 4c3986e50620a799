"""Regression tests for the defects a probe of bad inputs found (issue 11): each failed before.

Behaviour first (nothing lost, nothing half-changed), then messages: a caller's
mistake gets an error naming the argument, the value and what is allowed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.config import TrainConfig
from agents.metrics import read_metrics
from agents.runs import train
from pxpo_gym.env import DiffusionDenoiseEnv
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv
from pxpo_gym.wrappers import make_vector_env
from tests.agents.test_agents import tiny_config


@pytest.fixture
def vec(tiny_model_dir):
    return DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=3)


def _generator_states(envs):
    return [s.clone() for s in envs.get_rng_state()]


# -- behaviour ----------------------------------------------------------------


def test_every_allowed_number_of_steps_works_and_the_grid_is_told():
    from diffusers import DDPMScheduler

    from pxpo_gym.ddim import DDIMSchedule

    scheduler = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    schedule = DDIMSchedule.from_scheduler(scheduler, 999, 1.0)
    assert int(schedule.timesteps[0]) == 999 and int(schedule.timesteps[-1]) == 1
    with pytest.raises(
        ValueError, match=r"num_inference_steps must be an int in \[1, 999\], got num_inference_steps=1000"
    ):
        DDIMSchedule.from_scheduler(scheduler, 1000, 1.0)
    # A leading grid with T = 501 has step 1 and starts at t = 501: said, not silent.
    with pytest.warns(UserWarning, match="starts at t=501"):
        DDIMSchedule.from_scheduler(scheduler, 501, 1.0)


@pytest.mark.parametrize("seed", [2**64 - 1, [0, 2**64]])  # env 1 of 2 would get 2**64
def test_an_overflowing_seed_touches_no_generator(vec, seed):
    vec.reset(seed=5)
    before = _generator_states(vec)
    with pytest.raises(ValueError, match=r"outside \[0, 2\*\*64 - 1\]"):
        vec.reset(seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(_generator_states(vec), before))


def test_observations_are_copies(tiny_model_dir):
    flat = make_vector_env(num_envs=2, model=str(tiny_model_dir), num_inference_steps=3, obs_flatten=True)
    obs, _ = flat.reset(seed=0)
    before = flat.unwrapped.current_sample()
    obs["sample"] += 100.0
    assert torch.equal(flat.unwrapped.current_sample(), before)
    single = DiffusionDenoiseEnv(model=str(tiny_model_dir), num_inference_steps=3, obs_flatten=True)
    obs, _ = single.reset(seed=0)
    before = single.unwrapped.core.current_sample()
    obs["sample"][:] = 100.0
    assert torch.equal(single.unwrapped.core.current_sample(), before)


def test_a_second_run_into_the_same_folder_is_refused_and_destroys_nothing(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, num_epochs=1)
    train(config)
    run = tmp_path / "run"
    metrics = (run / "metrics.csv").read_text()
    latest = (run / "checkpoints" / "latest").read_text()
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        train(config)
    assert (run / "metrics.csv").read_text() == metrics
    assert (run / "checkpoints" / "latest").read_text() == latest
    assert (run / "checkpoints" / latest.strip()).is_dir()
    # --overwrite starts over and leaves a resumable run
    (run / "notes.txt").write_text("mine")
    train(config.replace(overwrite=True, num_epochs=2))
    assert len(read_metrics(run / "metrics.csv")) == 2
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files were deleted
    train(config.replace(resume=str(run), num_epochs=3))
    assert len(read_metrics(run / "metrics.csv")) == 3


def test_resume_refuses_conflicting_flags_and_keeps_the_runs_settings(tiny_model_dir, tmp_path):
    from agents.runs import resolve_config

    config = tiny_config(tiny_model_dir, tmp_path, num_epochs=1, save_every=3, image_every=2)
    train(config)
    run = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"learning_rate=0.001 \(run: 0.0003\)"):
        resolve_config(TrainConfig.of(resume=run, learning_rate=1e-3))
    with pytest.raises(ValueError, match="algo='ddpo'"):
        resolve_config(TrainConfig.of(resume=run, algo="ddpo"))
    resolved = resolve_config(TrainConfig.of(resume=run, num_epochs=4))
    assert (resolved.run.save_every, resolved.run.image_every, resolved.run.num_epochs) == (3, 2, 4)
    assert resolved.env.model == str(tiny_model_dir)
    assert resolve_config(TrainConfig.of(resume=run, save_every=1)).run.save_every == 1


def test_resuming_a_complete_run_says_so(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import sys

    from agents import train as cli

    train(tiny_config(tiny_model_dir, tmp_path, num_epochs=2))
    monkeypatch.setattr(sys, "argv", ["agents.train", "--resume", str(tmp_path / "run"), "--num-epochs", "1"])
    cli.main()
    out = capsys.readouterr().out
    assert "already complete: 2 epochs >= --num-epochs 1" in out
    assert "from the command line: num_epochs=1" in out


def test_a_nan_aggregate_is_caught_and_changes_nothing(tiny_model_dir):
    envs = DiffusionDenoiseVectorEnv(
        num_envs=2,
        model=str(tiny_model_dir),
        num_inference_steps=1,
        reward_aggregate=lambda m: m.sum((1, 2)) * np.nan,
    )
    envs.reset(seed=0)
    before = envs.current_sample()
    with pytest.raises(ValueError, match="reward_aggregate '<lambda>' returned complex, NaN or inf"):
        envs.step(torch.zeros(2, 3, 8, 8))
    assert torch.equal(envs.current_sample(), before)


def test_complex_reward_maps_are_refused(tiny_model_dir):
    def complex_map(images, contexts):
        return torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.complex64)

    with pytest.raises(ValueError, match="must return real numbers, got dtype=torch.complex64"):
        DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), reward=complex_map)


@pytest.mark.parametrize("quality", ["high", 1000, -5, 2.5, True])
def test_jpeg_quality_is_validated(quality):
    from pxpo_gym.rewards import make_reward

    with pytest.raises(ValueError, match=r"quality must be an int in \[1, 100\]"):
        make_reward("jpeg_compressibility", quality=quality)


@pytest.mark.parametrize(
    "name, message",
    [
        ("save_every", "save_every must be an int >= 0, got save_every=-1"),
        ("image_every", "image_every must be an int >= 0, got image_every=-1"),
        ("threads", "threads must be None or an int >= 1, got threads=-1"),
    ],
)
def test_negative_counts_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.of(**{name: -1})


# -- messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    "seed, message",
    [
        (1.5, "seed must be an int or a sequence of 2 ints, got seed=1.5"),
        (True, "seed must be an int or a sequence of 2 ints, got seed=True"),
        (-1, r"outside \[0, 2\*\*64 - 1\]"),
        (2**70, r"outside \[0, 2\*\*64 - 1\]"),
        ([0, 1.5], "seed must be an int or 2 ints"),
    ],
)
def test_bad_seeds(vec, seed, message):
    with pytest.raises(ValueError, match=message):
        vec.reset(seed=seed)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"context": 1.0}, r"options\['context'\] must be a context id in \[0, 3\).*got 1.0"),
        ({"reset_mask": "all"}, r"options\['reset_mask'\] must be a bool array of shape \(2,\), got 'all'"),
    ],
)
def test_bad_reset_options(vec, options, message):
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        vec.reset(options=options)


def test_a_sparse_action_is_refused(vec):
    vec.reset(seed=0)
    with pytest.raises(TypeError, match="dense"):
        vec.step(torch.zeros(2, 3, 8, 8).to_sparse())


def test_an_aggregate_of_the_wrong_shape(tiny_model_dir):
    envs = DiffusionDenoiseVectorEnv(
        num_envs=2, model=str(tiny_model_dir), num_inference_steps=1, reward_aggregate=lambda m: m.mean()
    )
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"must return a tensor of shape \(2,\), got \(\)"):
        envs.step(torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reward=":"), "reward=':' must be a built-in name or 'package.module:function'"),
        (
            dict(reward_kwargs=[1, 2]),
            r"reward_kwargs must be a dict of reward options, got reward_kwargs=\[1, 2\]",
        ),
        (dict(device="cuda"), "CUDA is not available"),
        (dict(device="tpu9"), "device must be a torch device"),
        (dict(model="a/b"), "model='a/b' is not a local folder.*HF_HUB_OFFLINE"),
    ],
)
def test_bad_construction_arguments(tiny_model_dir, kwargs, message):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    kwargs = {"model": str(tiny_model_dir), **kwargs}
    with pytest.raises(ValueError, match=message):
        DiffusionDenoiseVectorEnv(num_envs=2, **kwargs)


def test_a_reward_on_another_device(tiny_model_dir):
    def elsewhere(images, contexts):
        return torch.zeros(images.shape[0], device="meta")

    with pytest.raises(
        ValueError, match="returned its map on device meta; it must be on the images' device cpu"
    ):
        DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), reward=elsewhere)


def test_numpy_numbers_are_numbers(tiny_model_dir):
    envs = make_vector_env(
        num_envs=np.int64(2),
        model=str(tiny_model_dir),
        num_inference_steps=np.int32(3),
        eta=np.float32(0.5),
        action_mode="residual",
        residual_scale=np.float32(0.5),
        obs_downscale=np.int64(2),
    )
    core = envs.unwrapped
    assert core.num_envs == 2 and core.schedule.eta == 0.5 and envs.env.residual_scale == 0.5
    envs.reset(seed=np.uint32(3))
    json.dumps({"eta": core.schedule.eta, "num_envs": core.num_envs, "scale": envs.env.residual_scale})
