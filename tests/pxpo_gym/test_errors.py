"""Bad input gets a clear error naming the argument, and leaves the env as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pxpo_gym.env import DiffusionDenoiseEnv
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv


@pytest.fixture
def vec(tiny_model_dir):
    return DiffusionDenoiseVectorEnv(num_envs=2, model=str(tiny_model_dir), num_inference_steps=3)


def _state(envs):
    return (envs._sample.clone(), envs._step_index.clone(), envs._context.clone(), envs._noise.clone())


def _assert_same_state(envs, before):
    for a, b in zip(_state(envs), before):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "action, error, message",
    [
        (torch.zeros(2, 3, 8, 7), ValueError, r"shape \(2, 3, 8, 8\)"),
        (torch.zeros(3, 3, 8, 8), ValueError, "shape"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int64), TypeError, "floating dtype"),
        (np.zeros((2, 3, 8, 8), np.float32), TypeError, "torch.Tensor"),
        (torch.full((2, 3, 8, 8), float("nan")), ValueError, "NaN or inf"),
        (torch.full((2, 3, 8, 8), float("inf")), ValueError, "NaN or inf"),
        (torch.zeros(2, 3, 8, 8, device="meta"), ValueError, "device"),
    ],
)
def test_bad_actions_raise_and_change_nothing(vec, action, error, message):
    vec.reset(seed=0)
    vec.step(torch.zeros(2, 3, 8, 8))
    before = _state(vec)
    with pytest.raises(error, match=message):
        vec.step(action)
    _assert_same_state(vec, before)


def test_single_env_bad_actions(tiny_model_dir):
    env = DiffusionDenoiseEnv(model=str(tiny_model_dir), num_inference_steps=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((3, 8, 8), np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 8, 8\)"):
        env.step(np.zeros((3, 8, 9), np.float32))
    with pytest.raises(TypeError, match="floating"):
        env.step(np.zeros((3, 8, 8), np.int32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full((3, 8, 8), np.nan, np.float32))


def test_step_after_the_end_without_reset(tiny_model_dir):
    env = DiffusionDenoiseEnv(model=str(tiny_model_dir), num_inference_steps=2)
    env.reset(seed=0)
    env.step(np.zeros((3, 8, 8), np.float32))
    _, _, terminated, _, _ = env.step(np.zeros((3, 8, 8), np.float32))
    assert terminated
    with pytest.raises(RuntimeError, match="episode ended"):
        env.step(np.zeros((3, 8, 8), np.float32))


def test_vector_step_before_reset(vec):
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(torch.zeros(2, 3, 8, 8))


def test_reward_failing_mid_episode_leaves_state(tiny_model_dir):
    def picky(images, contexts):
        # Fine on the construction check's grey image, NaN on anything else.
        if torch.allclose(images, torch.full_like(images, 0.5)):
            return images.mean(dim=1)
        return torch.full(images.shape[:1], float("nan"))

    envs = DiffusionDenoiseVectorEnv(
        num_envs=2, model=str(tiny_model_dir), num_inference_steps=2, reward=picky
    )
    envs.reset(seed=0)
    envs.step(torch.zeros(2, 3, 8, 8))
    before = _state(envs)
    with pytest.raises(ValueError, match="picky.*non-finite"):
        envs.step(torch.zeros(2, 3, 8, 8))
    _assert_same_state(envs, before)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(eta=0.0), ValueError, "eta must be in"),
        (dict(eta=-0.5), ValueError, "eta=-0.5"),
        (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
        (dict(reward="aesthetic"), ValueError, "not a built-in reward"),
        (dict(reward=lambda images, contexts: images), ValueError, "returned shape"),
        (dict(num_envs=0), ValueError, "num_envs"),
        (dict(dtype="float64"), ValueError, "dtype"),
        (dict(context=7), ValueError, "context must be"),
        (dict(context="circle"), ValueError, "context must be"),
        (dict(reward_aggregate="median"), ValueError, "reward_aggregate"),
        (dict(action_mode="delta"), ValueError, "action_mode must be one of"),
        (dict(action_mode="residual", residual_scale=0.0), ValueError, "residual_scale=0.0"),
        (dict(action_mode="residual", residual_scale=float("nan")), ValueError, "residual_scale=nan"),
        (dict(action_mode="residual", action_grid=3), ValueError, "action_grid=3"),
        (dict(action_mode="residual", action_grid=(2, 0)), ValueError, "action_grid"),
        (dict(action_grid=2), ValueError, "needs action_mode='residual'"),
        (dict(obs_keys=()), ValueError, "obs_keys"),
        (dict(obs_keys=("sample", "prompt")), ValueError, "obs_keys"),
        (dict(obs_keys=("sample", "sample")), ValueError, "obs_keys"),
        (dict(obs_downscale=3), ValueError, "obs_downscale=3"),
        (dict(obs_downscale=0), ValueError, "obs_downscale=0"),
        (dict(obs_flatten=1), ValueError, "obs_flatten must be a bool"),
    ],
)
def test_bad_construction_arguments(tiny_model_dir, kwargs, error, message):
    from pxpo_gym.wrappers import make_vector_env  # gym.make_vec's entry point: core + wrappers

    kwargs = {"num_envs": 2, "model": str(tiny_model_dir), **kwargs}
    with pytest.raises(error, match=message):
        make_vector_env(**kwargs)


def test_bad_reset_options(vec):
    with pytest.raises(ValueError, match="first reset"):
        vec.reset(options={"reset_mask": np.array([True, False])})
    vec.reset(seed=0)
    before = _state(vec)
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="unknown keys"):
        vec.reset(options={"prompt": "a cat"})
    with pytest.raises(ValueError, match="context"):
        vec.reset(options={"context": [0, 1, 2]})
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=[1, 2, 3])
    _assert_same_state(vec, before)


def test_cli_errors_print_one_line_and_exit_2(tmp_path):
    """A user's error after parsing: one line on stderr, status 2; --debug shows the traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    missing = str(tmp_path / "nowhere")
    plain = subprocess.run(
        [sys.executable, "-m", "agents.train", "--resume", missing], capture_output=True, text=True, env=env
    )
    assert plain.returncode == 2, plain.stderr
    assert plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("agents.train: error: ") and "no checkpoint found" in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "agents.train", "--resume", missing, "--debug"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "no checkpoint found" in debug.stderr


def test_cli_run_keeps_the_traceback_of_a_bug(monkeypatch, capsys):
    from pxpo_gym.cli import run

    monkeypatch.setattr("sys.argv", ["prog", "--debug"])
    with pytest.raises(ValueError):
        run(lambda: (_ for _ in ()).throw(ValueError("bad")), "prog")  # --debug: raised as is
    monkeypatch.setattr("sys.argv", ["prog"])
    with pytest.raises(SystemExit) as exit_info:
        run(lambda: (_ for _ in ()).throw(ValueError("bad\n  input")), "prog")
    assert (
        exit_info.value.code == 2
        and capsys.readouterr().err == "prog: error: bad input (--debug shows the traceback)\n"
    )
    with pytest.raises(ZeroDivisionError):  # not a user's error: a bug keeps its traceback
        run(lambda: 1 / 0, "prog")


@pytest.mark.parametrize(
    "run, what", [({"config": [20]}, r"'run'\['config'\] must be a JSON object, got list")]
)
def test_an_exports_run_settings_that_are_no_json_object_are_refused_naming_the_file(
    tiny_model_dir, tmp_path, run, what
):
    import json
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "pxpo_gym.json").write_text(json.dumps({"run": run}))
    with pytest.raises(ValueError, match=f"pxpo_gym.json'?: {what}"):
        DiffusionDenoiseVectorEnv(num_envs=1, model=str(folder))
    (folder / "pxpo_gym.json").write_text(json.dumps({"run": "fast"}))  # 'run' itself: read_metadata's check
    with pytest.raises(ValueError, match="pxpo_gym.json'?: 'run' must be a JSON object"):
        DiffusionDenoiseVectorEnv(num_envs=1, model=str(folder))


def test_run_config_refuses_a_run_that_is_no_json_object():
    from pxpo_gym.vector_env import run_config

    assert run_config({}, None) == {} and run_config({"run": {"config": {"eta": 0.5}}}, "x") == {"eta": 0.5}
    with pytest.raises(ValueError, match=r"'x/pxpo_gym.json': 'run' must be a JSON object, got str"):
        run_config({"run": "fast"}, "x")
