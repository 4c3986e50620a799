"""A run trained with classifier-free guidance is evaluated, exported and sampled guided, as it trained:
``agents.evaluate`` gives the run's own held-out numbers, ``TrainedPipeline`` and ``gym.make`` on the export
its held-out images; an env that guides otherwise than the config is refused."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.evaluate import EvaluateConfig, evaluate
from agents.heldout import EVAL_SEED_OFFSET
from agents.pipeline import TrainedPipeline
from agents.runs import train
from agents.trainer import Trainer
from pxpo_gym.loading import load_model
from pxpo_gym.sampling import run_policy
from tests.agents.test_agents import tiny_config
from tests.pxpo_gym.test_guidance import by_hand

SCALE = 3.0
LABELS = torch.tensor([0, 1, 2, 3, 0, 1])


def guided_config(tmp_path, **overrides):
    """One DDPO epoch on the default model (it has a null context), guided, with a held-out evaluation."""
    settings = dict(algo="ddpo", num_epochs=1, guidance_scale=SCALE, eval_every=1, eval_images=8)
    return tiny_config("default", tmp_path, **{**settings, **overrides})


def test_a_guided_runs_export_is_evaluated_and_sampled_guided(tmp_path):
    history = train(guided_config(tmp_path))
    export = tmp_path / "run" / "model"
    common = dict(model=str(export), images=8, num_inference_steps=4)
    result = evaluate(EvaluateConfig(**common, out=str(tmp_path / "eval")))
    assert result["guidance_scale"] == SCALE
    assert result["reward_mean"] == pytest.approx(history[-1]["eval_reward"], abs=1e-6)
    assert result["fidelity_distance"] == pytest.approx(history[-1]["fidelity_distance"], abs=1e-6)
    unguided = evaluate(EvaluateConfig(**common, guidance_scale=1.0, out=str(tmp_path / "unguided")))
    assert unguided["guidance_scale"] == 1.0
    assert abs(unguided["reward_mean"] - result["reward_mean"]) > 1e-4  # the option is not ignored

    # the export's images, guided by hand (two passes), from the held-out noise of slot i
    seed = EVAL_SEED_OFFSET + 3
    loaded = load_model(str(export))
    plain = gym.make_vec("DiffusionDenoise-v0", num_envs=len(LABELS), model="default", num_inference_steps=4)
    expected = run_policy(
        plain, by_hand(loaded.noise_model, loaded.null_context, SCALE), seed=seed, options={"context": LABELS}
    ).images
    pipeline = TrainedPipeline.from_pretrained(export)
    torch.testing.assert_close(pipeline(class_labels=LABELS, seed=seed).images, expected, atol=1e-5, rtol=0)
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=len(LABELS), model=str(export))  # the run's settings
    assert envs.unwrapped.guidance_scale == SCALE
    drawn = run_policy(envs, seed=seed, options={"context": LABELS}).images
    torch.testing.assert_close(drawn, expected, atol=1e-5, rtol=0)
    alone = pipeline(class_labels=LABELS, seed=seed, guidance_scale=1.0).images
    assert (alone - expected).abs().max() > 1e-3


def test_an_env_that_guides_otherwise_than_the_config_is_refused(tmp_path):
    config = guided_config(tmp_path, eval_every=0)
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=8, model="default", num_inference_steps=4)
    with pytest.raises(
        ValueError, match=r"config guidance_scale=3.0 but the env's own sampler guides at 1.0"
    ):
        Trainer(config, envs)
