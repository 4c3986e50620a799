"""Classifier-free guidance (``pxpo_gym.guidance``): the formula, and the env's own sampler guiding as asked
(what an export of a guided run is sampled with)."""

from __future__ import annotations

import json
import math
import shutil

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.guidance import check_guidance, guided, guided_output
from pxpo_gym.loading import load_model
from pxpo_gym.sampling import run_policy

CONTEXTS = torch.tensor([0, 1, 2, 3])


def by_hand(model, null: int, scale: float):
    """Guidance as two separate forward passes, uncond + s (cond - uncond)."""

    def policy(sample, timestep, context):
        cond = model(sample, timestep, context)
        uncond = model(sample, timestep, torch.full_like(context, null))
        return uncond + scale * (cond - uncond)

    return policy


def test_the_formula_in_one_batched_pass():
    loaded = load_model("default")
    model = loaded.noise_model
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([501, 51]), torch.tensor([0, 3])
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        expected = by_hand(model, loaded.null_context, 3.0)(x, t, c)
        calls.clear()
        got = guided_output(model, x, t, c, 3.0, loaded.null_context)
        assert calls == [4]  # both halves in one pass of twice the batch
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            guided(model, 3.0, loaded.null_context)(x, t, c), expected, rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(guided_output(model, x, t, c, 1.0, None), model(x, t, c))
    assert guided(model, 1.0, None) is model  # scale 1: the model itself, no wrapper


def test_the_old_import_path_warns_and_serves_the_same_function():
    import agents.policy

    with pytest.warns(DeprecationWarning, match="pxpo_gym.guidance.guided_output"):
        assert agents.policy.guided_output is guided_output


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_the_envs_own_sampler_guides_as_asked(scale):
    common = dict(num_envs=4, model="default", num_inference_steps=4)
    envs = gym.make_vec("DiffusionDenoise-v0", guidance_scale=scale, **common)
    core = envs.unwrapped
    assert core.guidance_scale == scale
    drawn = run_policy(envs, seed=5, options={"context": CONTEXTS}).images
    plain = gym.make_vec("DiffusionDenoise-v0", **common)  # no keyword on a model without a run: none
    assert plain.unwrapped.guidance_scale == 1.0 and plain.unwrapped.policy() is plain.unwrapped.model
    expected = run_policy(
        plain, by_hand(core.model, core.loaded.null_context, scale), seed=5, options={"context": CONTEXTS}
    ).images
    torch.testing.assert_close(drawn, expected, atol=1e-5, rtol=0)
    unguided = run_policy(plain, seed=5, options={"context": CONTEXTS}).images
    assert (scale == 1.0) == bool((drawn - unguided).abs().max() < 1e-6)


@pytest.mark.parametrize(
    "value, match",
    [
        (0.5, r"guidance_scale must be a finite number >= 1 .*got 0.5"),
        (math.nan, "got nan"),
        (math.inf, "got inf"),
        ("2", "must be a number >= 1 .*got '2'"),
        (True, "got True"),
    ],
)
def test_a_bad_guidance_scale_is_refused_naming_it(value, match):
    with pytest.raises(ValueError, match=match):
        gym.make_vec("DiffusionDenoise-v0", num_envs=1, guidance_scale=value)
    with pytest.raises(ValueError, match=match):
        check_guidance(value, 4)


def test_guidance_needs_a_null_context_and_a_runs_bad_value_names_its_file(tiny_model_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"guidance_scale=2.0 needs a model with a null context \(.*has none\)"
    ):
        gym.make_vec("DiffusionDenoise-v0", num_envs=1, model=str(tiny_model_dir), guidance_scale=2.0)
    assert check_guidance(1, None) == 1.0  # no guidance needs no null context
    folder = tmp_path / "export"
    shutil.copytree(tiny_model_dir, folder)
    meta = {"context_names": ["a", "b", "c"], "run": {"config": {"guidance_scale": "strong"}}}
    (folder / "pxpo_gym.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"guidance_scale \(the run's own, in '.*pxpo_gym.json'\) must be a number"
    ):
        gym.make_vec("DiffusionDenoise-v0", num_envs=1, model=str(folder))
    # given, the keyword wins over the file's
    assert (
        gym.make_vec(
            "DiffusionDenoise-v0", num_envs=1, model=str(folder), guidance_scale=1
        ).unwrapped.guidance_scale
        == 1
    )
