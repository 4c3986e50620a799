"""Sampler plug-ins: the registry, how the env picks one, a plug-in registered from Python, and the old
names of the transition's pieces (they still work, with a DeprecationWarning)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import pxpo_gym
from pxpo_gym.ddim import DDIMSampler, DDIMSchedule
from pxpo_gym.flow import FlowSampler
from pxpo_gym.loading import load_model
from pxpo_gym.samplers import SAMPLERS, get_sampler, register_sampler, sampler_for
from pxpo_gym.transition import TransitionCoefficients, step_kl, step_log_prob, transition_mean
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv
from pxpo_gym.wrappers import generic_wrappers


class HalfEtaDDIM(DDIMSampler):
    """A plug-in: DDIM at half the eta it is given."""

    name = "test-half-eta"
    prediction_types = ()  # chosen by name only
    prediction = "eps-at-half-eta"  # what the env reports its action is

    @classmethod
    def build(cls, loaded, num_inference_steps, device, eta, noise_level, transition, log_density):
        return DDIMSchedule.from_scheduler(loaded.scheduler, num_inference_steps, (eta or 1.0) / 2, device)


@pytest.fixture
def half_eta():
    register_sampler(HalfEtaDDIM)
    yield HalfEtaDDIM
    SAMPLERS.pop(HalfEtaDDIM.name)


def test_the_built_ins_and_which_model_gets_which(tiny_model_dir, tiny_flow_dir):
    assert SAMPLERS == {"ddim": DDIMSampler, "flow": FlowSampler}
    assert sampler_for(load_model(str(tiny_model_dir))) is DDIMSampler
    assert sampler_for(load_model(str(tiny_flow_dir))) is FlowSampler
    with pytest.raises(ValueError, match=r"sampler must be one of \['ddim', 'flow'\], got sampler='euler'"):
        get_sampler("euler")


def test_a_plug_in_named_by_the_loaded_model_builds_the_envs_table(tiny_model_dir, half_eta):
    loaded = dataclasses.replace(load_model(str(tiny_model_dir)), sampler=HalfEtaDDIM.name)
    core = DiffusionDenoiseVectorEnv(num_envs=2, model=loaded, num_inference_steps=3)
    assert core.sampler is HalfEtaDDIM and core.schedule.eta == 0.5
    assert core.prediction == "eps-at-half-eta"  # the plug-in's, not DDIM's 'eps'
    with pytest.raises(ValueError, match="got sampler='nope'"):
        DiffusionDenoiseVectorEnv(num_envs=2, model=dataclasses.replace(loaded, sampler="nope"))


def test_registering_refuses_other_classes_and_taken_names(half_eta):
    with pytest.raises(TypeError, match="must subclass pxpo_gym.transition.Sampler"):
        register_sampler(object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'ddim' is already registered"):
        register_sampler(type("Other", (DDIMSampler,), {"name": "ddim"}))


def test_each_sampler_keeps_its_own_settings_and_refuses_the_others(tiny_model_dir, tiny_flow_dir):
    ddim = DiffusionDenoiseVectorEnv(num_envs=1, model=str(tiny_model_dir), num_inference_steps=2, eta=0.5)
    assert DDIMSampler.settings(ddim.schedule) == {"eta": 0.5, "sampler": "ddim", "noise_level": None}
    flow = DiffusionDenoiseVectorEnv(
        num_envs=1, model=str(tiny_flow_dir), num_inference_steps=2, transition="cps"
    )
    assert FlowSampler.settings(flow.schedule) == {"eta": None, "sampler": "cps", "noise_level": 0.7}
    assert flow.single_observation_space["timestep"].dtype == np.float32
    assert ddim.single_observation_space["timestep"].dtype == np.int64
    with pytest.raises(ValueError, match="are for flow-matching models"):
        DiffusionDenoiseVectorEnv(num_envs=1, model=str(tiny_model_dir), noise_level=0.5)
    with pytest.raises(ValueError, match="eta=0.5 is DDIM's stochasticity"):
        DiffusionDenoiseVectorEnv(num_envs=1, model=str(tiny_flow_dir), eta=0.5)


def test_the_info_holds_the_coefficient_under_its_new_and_its_old_name(tiny_model_dir):
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), num_inference_steps=2)
    obs, _ = envs.reset(seed=0)
    _, _, _, _, info = envs.step(torch.zeros_like(obs["sample"]))
    assert info["coef_eps"] is info["coef_model_output"]


def test_old_names_still_work_with_a_deprecation_warning(tiny_model_dir):
    gen = torch.Generator().manual_seed(0)
    x, u, ref = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    coeffs = TransitionCoefficients(
        torch.tensor([1.5, 0.5]), torch.tensor([-0.5, 0.25]), torch.tensor([0.3, 0.2])
    )
    with pytest.warns(
        DeprecationWarning, match="TransitionCoefficients.coef_eps is deprecated: use coef_model_output"
    ):
        assert coeffs.coef_eps is coeffs.coef_model_output
    with pytest.warns(DeprecationWarning, match="pxpo_gym.ddim.step_log_prob is deprecated"):
        from pxpo_gym.ddim import step_log_prob as old_step_log_prob
    assert old_step_log_prob is step_log_prob
    with pytest.warns(
        DeprecationWarning, match="pxpo_gym.ddim_mean is deprecated: use pxpo_gym.transition.transition_mean"
    ):
        assert pxpo_gym.ddim_mean is transition_mean
    with pytest.warns(DeprecationWarning, match=r"step_log_prob\(eps=...\) is deprecated: use model_output="):
        old = step_log_prob(x, x, eps=u, coeffs=coeffs)
    assert torch.equal(old, step_log_prob(x, x, u, coeffs))
    with pytest.warns(DeprecationWarning, match="eps_ref"):
        assert torch.equal(step_kl(eps=u, eps_ref=ref, coeffs=coeffs), step_kl(u, ref, coeffs))
    from pxpo_gym.pinning import blend

    pinned = torch.tensor([[[True, False, True, False]] * 4] * 2)
    with pytest.warns(DeprecationWarning, match=r"blend\(eps=...\) is deprecated: use action="):
        assert torch.equal(blend(eps=u, reference_eps=ref, pinned=pinned), blend(u, ref, pinned))
    with pytest.warns(DeprecationWarning, match=r"blend\(held=...\) is deprecated: use pinned="):
        assert torch.equal(blend(u, ref, held=pinned), blend(u, ref, pinned))
    from pxpo_gym import pinning

    for old, new in (
        ("HeldPolicy", "PinnedPolicy"),
        ("read_held_pixels", "read_pinned_pixels"),
        ("HELD_PIXELS", "PINNED_PIXELS"),
    ):
        with pytest.warns(
            DeprecationWarning, match=f"pxpo_gym.pinning.{old} is deprecated: use pxpo_gym.pinning.{new}"
        ):
            assert getattr(pinning, old) is getattr(pinning, new)
    with pytest.warns(
        DeprecationWarning, match=r"PinnedPolicy.__init__\(held=...\) is deprecated: use pinned="
    ):
        policy = pinning.PinnedPolicy(None, None, held=pinned)
    with pytest.warns(DeprecationWarning, match="PinnedPolicy.held is deprecated: use PinnedPolicy.pinned"):
        assert policy.held is pinned is policy.pinned
    with pytest.warns(DeprecationWarning, match=r"pin_weights\(held=...\) is deprecated: use pinned="):
        assert torch.equal(pinning.pin_weights(held=pinned, band=1), pinning.pin_weights(pinned, 1))
    with pytest.warns(DeprecationWarning, match="pxpo_gym.wrappers.residual_eps is deprecated"):
        from pxpo_gym.wrappers import residual_action, residual_eps
    assert residual_eps is residual_action
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        pxpo_gym.ddim.nothing  # noqa: B018
    with pytest.warns(
        DeprecationWarning, match="action_mode='eps' is deprecated: use action_mode='model_output'"
    ):
        env = gym.make(
            "DiffusionDenoise-v0", model=str(tiny_model_dir), num_inference_steps=2, action_mode="eps"
        )
    # the old 'eps' mode is today's 'model_output': the model-output env itself, no residual wrapper
    assert generic_wrappers(env) == [] and float(env.action_space.high.max()) == 10.0


def pinned_export(model_dir, folder):
    """A copy of ``model_dir`` with a pin (as agents.export writes one): the right half of every context."""
    from safetensors.torch import save_file

    from pxpo_gym.pinning import PINNED_PIXELS

    shutil.copytree(model_dir, folder)
    (folder / "pxpo_gym.json").write_text(json.dumps({"fine_tuned_from": str(model_dir)}))
    mask = torch.zeros(3, 8, 8, dtype=torch.uint8)
    mask[..., 4:] = 1
    save_file({"pinned": mask, "band": torch.tensor(0)}, str(folder / PINNED_PIXELS), {"mode": "hold"})
    return folder, mask.bool()


def test_the_old_held_pixels_keyword_switches_an_exports_pin_off(tiny_model_dir, tmp_path):
    export, mask = pinned_export(tiny_model_dir, tmp_path / "export")
    common = dict(model=str(export), num_inference_steps=2)
    mode, pinned, base = gym.make("DiffusionDenoise-v0", **common).unwrapped.core.pin
    assert mode == "hold" and torch.equal(pinned, mask) and base == str(tiny_model_dir)
    with pytest.warns(DeprecationWarning, match=r"held_pixels=...\) is deprecated: use pinned_pixels="):
        env = gym.make("DiffusionDenoise-v0", **common, held_pixels="off")
    assert env.unwrapped.core.pin is None
    with pytest.warns(DeprecationWarning, match=r"held_pixels=...\) is deprecated: use pinned_pixels="):
        env = gym.make("DiffusionDenoise-v0", **common, held_pixels="auto")
    assert env.unwrapped.core.pin[0] == "hold"


def test_a_deprecation_through_gym_make_vec_is_shown_to_a_script(tiny_model_dir):
    """Python shows a DeprecationWarning by default only when it is attributed to ``__main__``: the warning
    must point past pxpo_gym's and gymnasium's frames to the user's line."""
    script = (
        "import gymnasium as gym, pxpo_gym\n"
        f"gym.make_vec('DiffusionDenoise-v0', num_envs=1, model={str(tiny_model_dir)!r}, "
        "num_inference_steps=2, held_pixels='off')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],  # this checkout's pxpo_gym
    )
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning: DiffusionDenoiseVectorEnv.__init__(held_pixels=...) is deprecated" in (
        result.stderr
    )
    assert "<string>:2: DeprecationWarning" in result.stderr  # the script's own line


def test_an_export_names_its_plug_in_sampler_and_loading_picks_it_again(tiny_model_dir, tmp_path, half_eta):
    from agents.export import export_policy

    loaded = dataclasses.replace(load_model(str(tiny_model_dir)), sampler=HalfEtaDDIM.name)
    folder = export_policy(loaded.noise_model, loaded, tmp_path / "export")
    assert json.loads((folder / "pxpo_gym.json").read_text())["sampler"] == "test-half-eta"
    again = load_model(str(folder))
    assert again.sampler == "test-half-eta"
    core = DiffusionDenoiseVectorEnv(num_envs=1, model=str(folder), num_inference_steps=2)
    assert core.sampler is HalfEtaDDIM and core.prediction == "eps-at-half-eta"
    # a model without a named sampler exports none (and loads with the default for its prediction type)
    plain = export_policy(loaded.noise_model, load_model(str(tiny_model_dir)), tmp_path / "plain")
    assert "sampler" not in json.loads((plain / "pxpo_gym.json").read_text())
    assert load_model(str(plain)).sampler is None
    SAMPLERS.pop(HalfEtaDDIM.name)
    try:
        with pytest.raises(
            ValueError,
            match=r"names sampler 'test-half-eta', which is not registered \(registered: \['ddim', 'flow'\]\)",
        ):
            load_model(str(folder))
    finally:
        register_sampler(HalfEtaDDIM)
