"""What a user deploys is sampled as the run trained: a run trained with classifier-free guidance is
evaluated, exported and sampled guided (``agents.evaluate`` gives the run's own held-out numbers,
``TrainedPipeline`` and ``gym.make`` on the export its held-out images); ``agents.evaluate`` draws the run's
own contexts and resolution (and the env a latent export's resolution); an env that guides otherwise than the config is refused."""

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


def test_evaluate_draws_the_runs_own_contexts(tiny_model_dir, tmp_path):
    """A run trained on one context evaluated on it: ``agents.evaluate`` on its export, given no contexts,
    scores those (the run's eval_reward), not all of the model's."""
    config = tiny_config(
        tiny_model_dir, tmp_path, algo="ddpo", num_epochs=1, contexts=("1",), eval_every=1, eval_images=8
    )
    history = train(config)
    common = dict(model=str(tmp_path / "run" / "model"), images=8, num_inference_steps=4)
    own = evaluate(EvaluateConfig(**common, out=str(tmp_path / "own")))
    assert own["contexts"] == [load_model(str(tiny_model_dir)).context_names[1]]
    assert own["reward_mean"] == pytest.approx(history[-1]["eval_reward"], abs=1e-6)
    every = evaluate(EvaluateConfig(**common, contexts=("0", "1", "2"), out=str(tmp_path / "every")))
    assert len(every["contexts"]) == 3 and abs(every["reward_mean"] - own["reward_mean"]) > 1e-4


def test_evaluate_draws_a_latent_runs_own_resolution(tiny_sd_dir, tmp_path):
    """A LoRA run on the tiny SD pipeline at another resolution than the model's: evaluating its export with
    no resolution given draws at the run's (its eval_reward), not at the model's own."""
    from pxpo_gym.loading import load_model as load
    from tests.pxpo_gym.test_latent import PROMPTS, STEPS

    native = load(str(tiny_sd_dir), prompts=PROMPTS).image_size[-1]
    config = tiny_config(
        tiny_sd_dir,
        tmp_path,
        algo="ddpo",
        num_epochs=1,
        prompts=tuple(PROMPTS),
        resolution=2 * native,
        num_inference_steps=STEPS,
        sample_batch_size=2,
        train_batch_size=2,
        eval_every=1,
        eval_images=2,
    )
    history = train(config)
    common = dict(
        model=str(tmp_path / "run" / "model"), images=2, num_inference_steps=STEPS, reference="none"
    )
    own = evaluate(EvaluateConfig(**common, out=str(tmp_path / "own")))
    assert own["reward_mean"] == pytest.approx(history[-1]["eval_reward"], abs=1e-5)
    # gym.make on the export, given no resolution, draws at the run's too
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=1, model=common["model"], reward="color")
    assert envs.unwrapped.loaded.image_size[-1] == 2 * native
    grid_size = evaluate(EvaluateConfig(**common, resolution=native, out=str(tmp_path / "native")))
    assert abs(grid_size["reward_mean"] - own["reward_mean"]) > 1e-5
