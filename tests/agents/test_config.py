"""The sectioned TrainConfig (agents.config): resume's conflict rule for every kind of algorithm, flat configs
saved before the sections (real ones, written by the code of 82e37ac), plug-in options and clip ranges, and
what an algorithm that backpropagates through its sampler refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agents.runs
from agents.config import TrainConfig, ddpo_clip_range
from agents.runs import resolve_config
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config

DATA = Path(__file__).parent / "data"
PLUGIN = "tests.plugin_algorithms:BatchBaseline"
ELEMENTS = 3 * 16 * 16  # the default model's sample


def saved_run(monkeypatch, saved: dict) -> str:
    """A run folder whose checkpoint holds ``saved`` as its config (nothing else is read by resolve_config)."""
    monkeypatch.setattr(agents.runs, "load_checkpoint", lambda folder: ({}, {"config": saved}))
    return "runs/saved"


@pytest.mark.parametrize(
    "options, same, conflicting",
    [
        # DDPO with its own clip: naming ddpo again is no conflict (its default None is not PXPO's 0.2)
        (
            dict(algo="ddpo", clip_range=5e-4),
            [dict(algo="ddpo"), {}],
            [dict(algo="ddpo", clip_range=0.2), dict(credit="image")],
        ),
        (
            dict(algo="oracle", backprop_steps=3),
            [dict(algo="oracle"), {}],
            [dict(algo="oracle", backprop_steps=1), dict(algo="ddpo")],
        ),
        (
            dict(algo=PLUGIN, algo_option=("baseline=none",)),
            [dict(algo=PLUGIN), dict(algo=PLUGIN, algo_option=("baseline=none",))],
            [dict(algo=PLUGIN, algo_option=("baseline=batch",))],
        ),
    ],
)
def test_resume_sets_apart_the_options_a_command_line_sets(monkeypatch, options, same, conflicting):
    run_config = TrainConfig.of(**options)
    run = saved_run(monkeypatch, run_config.to_dict())
    for given in same:
        resolved = resolve_config(TrainConfig.of(resume=run, num_epochs=3, **given))
        assert resolved.algorithm == run_config.algorithm and resolved.run.num_epochs == 3, given
    for given in conflicting:
        with pytest.raises(ValueError, match="differ from it"):
            resolve_config(TrainConfig.of(resume=run, **given))


@pytest.mark.parametrize("name", ["ddpo", "oracle", "plugin"])
def test_a_flat_config_saved_before_the_sections_resumes_as_it_trained(monkeypatch, name):
    saved = json.loads((DATA / f"flat_config_{name}.json").read_text())
    saved.update(learning_rate=1e-3, num_inference_steps=8, credit_check_scales=[0.0])  # (every option held)
    if name == "plugin":
        saved["algo_option"] = ["baseline=none"]
    run = saved_run(monkeypatch, saved)
    algo = saved["algo"]
    resolved = resolve_config(TrainConfig.of(algo=algo, resume=run))
    assert resolved.optimiser.learning_rate == 1e-3 and resolved.env.num_inference_steps == 8
    algo_config = resolved.algo_config(ELEMENTS)
    if name == "ddpo":  # saved as None: the scaled default it trained with
        assert algo_config.clip_range == pytest.approx(ddpo_clip_range(ELEMENTS))
    elif name == "oracle":
        assert algo_config.backprop_steps == 0
    else:  # the plug-in's own fields only, None its own default (a 'fixed' clip: 1e-4)
        assert algo_config.baseline == "none" and algo_config.clip_range == 1e-4
    # a sectioned config is read strictly: an option nobody has is a damaged checkpoint
    sectioned = resolved.to_dict()
    sectioned["algorithm"]["no_such_option"] = 1
    run = saved_run(monkeypatch, sectioned)
    with pytest.raises(ValueError, match="not valid.*no_such_option"):
        resolve_config(TrainConfig.of(algo=algo, resume=run))


def test_plugin_clip_ranges_and_options_round_trip():
    fixed = TrainConfig.of(algo=PLUGIN, clip_range=None)  # None: the plug-in's own default
    assert fixed.algo_config(ELEMENTS).clip_range == 1e-4
    assert TrainConfig.of(algo=PLUGIN, clip_range=0.01).algo_config(ELEMENTS).clip_range == 0.01
    elements = TrainConfig.of(
        algo="benchmarks.suite.peers.flow_grpo:FlowGRPO"
    )  # default_clip_range 'elements'
    assert elements.algo_config(ELEMENTS).clip_range == pytest.approx(ddpo_clip_range(ELEMENTS))
    given = TrainConfig.of(algo=PLUGIN, algo_option=("baseline=none",))
    assert given.replace(num_epochs=3).algorithm.option == ("baseline=none",)  # as written, every time
    assert TrainConfig.of(**given.flat()) == given


def test_replacing_the_algorithm_starts_it_from_its_own_window(tiny_model_dir, tmp_path):
    pxpo = tiny_config(tiny_model_dir, tmp_path).with_window_defaults()
    assert pxpo.sampling.step_window == 2
    ddpo = pxpo.replace(algo="ddpo").with_window_defaults()
    assert (ddpo.sampling.step_window, ddpo.sampling.window_outside) == (0, "stochastic")


def test_an_algorithm_that_backpropagates_through_its_sampler_refuses_policy_gradient_options(
    tiny_model_dir, tmp_path
):
    with pytest.raises(ValueError, match="backpropagates through its sampler"):
        tiny_config(tiny_model_dir, tmp_path, algo="oracle", step_window=2)
    plugin = "tests.plugin_algorithms:OracleCopy"  # its class is known only to the trainer
    for options in (dict(step_window=2), dict(reuse_sampling_pass=True)):
        config = TrainConfig.of(
            algo=plugin,
            model=str(tiny_model_dir),
            sample_batch_size=8,
            sample_batches_per_epoch=1,
            train_batch_size=8,
            num_inference_steps=4,
            out=str(tmp_path / "copy"),
            **options,
        )
        with pytest.raises(ValueError, match="backpropagates through its sampler"):
            Trainer(config)
