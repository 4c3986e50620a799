"""What a user deploys samples as training did: ``TrainedPipeline``, ``agents.evaluate`` and
``gym.make(model=RUN/model)`` draw the run's own images from the same noise; exports load from anywhere."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.config import TrainConfig
from agents.heldout import EVAL_SEED_OFFSET
from agents.pipeline import TrainedPipeline
from agents.trainer import Trainer
from pxpo_gym.sampling import run_policy
from tests.agents.test_agents import tiny_config
from tests.agents.test_export import pinned_run_config

LABELS = [0, 1, 2, 0, 1, 2]


def trained(config: TrainConfig) -> Trainer:
    trainer = Trainer(config)
    for _ in range(config.run.num_epochs):
        trainer.train_epoch()
    trainer.export()
    return trainer


def held_out(trainer: Trainer, seed: int) -> torch.Tensor:
    """The images the run's own policy (pinned where it pins) draws from the held-out noise."""
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=len(LABELS),
        model=str(trainer.config.env.model),
        num_inference_steps=trainer.config.env.num_inference_steps,
        eta=trainer.config.env.eta,
        **({"noise_level": trainer.config.env.noise_level} if trainer.envs.unwrapped.loaded.is_flow else {}),
    )
    return run_policy(
        envs, trainer.rollout_policy(), seed=seed, options={"context": torch.tensor(LABELS)}
    ).images


@pytest.mark.parametrize("model, overrides", [("tiny", dict(eta=0.5)), ("flow", dict(noise_level=0.9))])
def test_the_pipeline_and_the_env_draw_the_runs_own_images(
    tiny_model_dir, tiny_flow_dir, tmp_path, model, overrides
):
    folder = tiny_model_dir if model == "tiny" else tiny_flow_dir
    trainer = trained(
        tiny_config(folder, tmp_path, num_epochs=1, **overrides)
    )  # a sampler other than the default
    export = tmp_path / "run" / "model"
    seed = EVAL_SEED_OFFSET + 7
    expected = held_out(trainer, seed)
    pipeline = TrainedPipeline.from_pretrained(export)
    images = pipeline(class_labels=LABELS, seed=seed).images
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    # gym.make on the export, with no sampler given, takes the run's own
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=len(LABELS), model=str(export), num_inference_steps=4)
    again = run_policy(envs, seed=seed, options={"context": torch.tensor(LABELS)}).images
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    # another sampler from the same noise is another set of images (the settings are not ignored)
    other = dict(eta=1.0) if model == "tiny" else dict(noise_level=0.5)
    assert (pipeline(class_labels=LABELS, seed=seed, **other).images - expected).abs().max() > 1e-3
    pil = pipeline(class_labels=LABELS[:2], seed=seed, output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (8, 8)


@pytest.mark.parametrize("band", [0, 2])
def test_the_pipeline_pins_pinned_pixels_as_evaluate_does(tiny_model_dir, tmp_path, band):
    from agents.evaluate import EvaluateConfig, evaluate

    config = pinned_run_config(tiny_model_dir, tmp_path, pin_band=band)
    trainer = trained(config)
    export = tmp_path / "run" / "model"
    assert (export / "pinned_pixels.safetensors").is_file()
    pipeline = TrainedPipeline.from_pretrained(export)
    seed = EVAL_SEED_OFFSET
    pinned = pipeline(class_labels=LABELS, seed=seed).images
    torch.testing.assert_close(pinned, held_out(trainer, seed), atol=1e-5, rtol=0)
    alone = pipeline(class_labels=LABELS, seed=seed, pinned_pixels="off").images
    # gym.make on the export samples as the run did, pin included; pinned_pixels='off': the weights alone
    common = dict(num_envs=len(LABELS), model=str(export), num_inference_steps=4)
    for pinned_pixels, expected in (("auto", pinned), ("off", alone)):
        envs = gym.make_vec("DiffusionDenoise-v0", pinned_pixels=pinned_pixels, **common)
        drawn = run_policy(envs, seed=seed, options={"context": torch.tensor(LABELS)}).images
        torch.testing.assert_close(drawn, expected, atol=1e-5, rtol=0)
    # the old keyword, held_pixels, still works (env and pipeline), with a DeprecationWarning naming the new one
    renamed = r"held_pixels=\.\.\.\) is deprecated: use pinned_pixels="
    for value, expected in (("auto", pinned), ("off", alone)):
        with pytest.warns(DeprecationWarning, match=renamed):
            envs = gym.make_vec("DiffusionDenoise-v0", held_pixels=value, **common)
        drawn = run_policy(envs, seed=seed, options={"context": torch.tensor(LABELS)}).images
        torch.testing.assert_close(drawn, expected, atol=1e-5, rtol=0)
        with pytest.warns(DeprecationWarning, match=renamed):
            old = pipeline(class_labels=LABELS, seed=seed, held_pixels=value).images
        assert torch.equal(old, expected)
    with pytest.raises(TypeError, match="got both held_pixels= and its new name pinned_pixels="):
        gym.make_vec("DiffusionDenoise-v0", held_pixels="off", pinned_pixels="off", **common)
    base = gym.make_vec(
        "DiffusionDenoise-v0", num_envs=len(LABELS), model=str(tiny_model_dir), num_inference_steps=4
    )
    reference = run_policy(base, seed=seed, options={"context": torch.tensor(LABELS)}).images
    # the region reward's silent half, columns 4-7: with a band of 2, columns 4 and 5 ramp
    right = (slice(None), slice(None), slice(None), slice(4 + band, None))
    torch.testing.assert_close(pinned[right], reference[right], atol=1e-5, rtol=0)  # pinned ...
    ramp = pinned[..., 4 : 4 + band] - reference[..., 4 : 4 + band]
    assert band == 0 or ramp.abs().amax() > 1e-3  # (the band is part the policy's)

    assert (alone[right] - reference[right]).abs().max() > 1e-3  # ... which the weights alone do not
    result = evaluate(
        EvaluateConfig(
            model=str(export), images=6, num_inference_steps=4, trust_code=True, out=str(tmp_path / "e")
        )
    )
    assert result["pinned_pixels"] == "hold" and result["eta"] == 1.0


def test_bad_pipeline_arguments_are_named(tiny_model_dir, tmp_path):
    trained(tiny_config(tiny_model_dir, tmp_path, num_epochs=1))
    pipeline = TrainedPipeline.from_pretrained(tmp_path / "run" / "model")
    with pytest.raises(ValueError, match="class_labels"):
        pipeline()
    with pytest.raises(ValueError, match="pinned_pixels"):
        pipeline(class_labels=[0], pinned_pixels="on")


def test_an_export_loads_from_another_working_directory(tiny_model_dir, tmp_path, monkeypatch):
    from agents.evaluate import EvaluateConfig, evaluate

    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(tiny_model_dir, tmp_path)
    trained(tiny_config(relative, tmp_path, num_epochs=1, out="run"))
    meta = json.loads((tmp_path / "run" / "model" / "pxpo_gym.json").read_text())
    assert meta["fine_tuned_from"] == str(tiny_model_dir.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = evaluate(EvaluateConfig(model="../run/model", images=2, num_inference_steps=4, out="e"))
    assert result["reference"] == str(tiny_model_dir.resolve())


def test_flow_evaluations_record_no_eta_and_runs_on_other_models_get_their_own_folder(
    tiny_flow_dir, tmp_path
):
    from agents.evaluate import EvaluateConfig, evaluate

    result = evaluate(
        EvaluateConfig(model=str(tiny_flow_dir), images=2, num_inference_steps=4, out=str(tmp_path))
    )
    assert result["eta"] is None and result["sampler"] == "sde" and result["noise_level"] == 0.7
    default = TrainConfig.of()
    flow = default.replace(model="default-flow")
    assert (
        default.run_dir.name == "pxpo-is-color-seed0"
        and flow.run_dir.name == "pxpo-is-color-default-flow-seed0"
    )
    export = default.replace(model="runs/pxpo-is-color-seed0/model")
    assert export.run_dir.name == "pxpo-is-color-pxpo-is-color-seed0-seed0"


def test_a_sampler_setting_given_is_never_mixed_with_the_exports(tiny_flow_dir, tmp_path):
    trained(tiny_config(tiny_flow_dir, tmp_path, num_epochs=1, noise_level=0.9, transition="cps"))
    export = str(tmp_path / "run" / "model")
    own = gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=export).unwrapped.schedule
    assert (own.transition, own.noise_level) == ("cps", 0.9)  # nothing given: the run's own, whole
    sde = gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=export, transition="sde").unwrapped.schedule
    assert (sde.transition, sde.noise_level) == ("sde", 0.7)  # one given: the env's defaults for the rest
    # a new run from the export, at its own (default) sampler: the config and the env agree
    again = Trainer(tiny_config(export, tmp_path, num_epochs=1, out=str(tmp_path / "again")))
    assert again.envs.unwrapped.schedule.noise_level == 0.7
