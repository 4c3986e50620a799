"""Flow-matching models in the env and the agents: the action is the velocity, the step Flow-GRPO's SDE
(or CPS), the checkers pass, and DDPO, PXPO and the oracle train an epoch; an export loads back bit for bit."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.trainer import Trainer
from pxpo_gym.env import DiffusionDenoiseEnv
from pxpo_gym.flow import FlowSchedule
from pxpo_gym.transition import TransitionCoefficients, step_log_prob, transition_mean
from tests.agents.test_agents import tiny_config

STEPS = 4


def make(tiny_flow_dir, num_envs=2, **kwargs):
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=num_envs,
        model=str(tiny_flow_dir),
        num_inference_steps=STEPS,
        **kwargs,
    )


def test_flow_env_acts_with_the_velocity_through_flow_grpos_sde(tiny_flow_dir):
    envs = make(tiny_flow_dir)
    core = envs.unwrapped
    assert core.prediction == "velocity" and core.loaded.is_flow
    assert isinstance(core.schedule, FlowSchedule) and core.schedule.transition == "sde"
    assert core.schedule.noise_level == 0.7  # Flow-GRPO's default
    obs, _ = envs.reset(seed=0)
    assert obs["timestep"].dtype == torch.float32
    # The model is called with sigma x 1000: the first step at sigma = 1.
    assert obs["timestep"][:, 0].tolist() == [1000.0, 1000.0]
    for _ in range(STEPS):
        sample = obs["sample"]
        velocity = core.model(sample, obs["timestep"], obs["context"])
        obs, reward, terminated, _, info = envs.step(velocity)
        coeffs = TransitionCoefficients(info["coef_sample"], info["coef_model_output"], info["std_dev_t"])
        # The step's noise is the env's own: recover it and check it is a standard draw's size.
        z = (obs["sample"] - transition_mean(sample, velocity, coeffs)) / coeffs[2].view(-1, 1, 1, 1)
        assert 0.3 < float(z.std()) < 3.0
        assert bool(torch.isfinite(step_log_prob(obs["sample"], sample, velocity, coeffs)).all())
    assert bool(terminated.all()) and info["reward_map"].shape[0] == 2


def test_cps_and_the_noise_level_are_settable_and_checked(tiny_flow_dir, tiny_model_dir):
    envs = make(tiny_flow_dir, transition="cps", noise_level=0.5)
    assert envs.unwrapped.schedule.transition == "cps" and envs.unwrapped.schedule.noise_level == 0.5
    with pytest.raises(ValueError, match="eta=0.5 is DDIM's stochasticity"):
        make(tiny_flow_dir, eta=0.5)
    with pytest.raises(ValueError, match="deterministic ODE step"):
        make(tiny_flow_dir, noise_level=0.0)
    with pytest.raises(
        ValueError, match="noise_level, transition and log_density are for flow-matching models"
    ):
        make(tiny_model_dir, noise_level=0.7)


def test_sb3_checker_passes_on_the_flow_env(tiny_flow_dir):
    # Gymnasium's checker runs on both kinds of model in tests/pxpo_gym/test_env.py.
    from stable_baselines3.common.env_checker import check_env

    single = DiffusionDenoiseEnv(model=str(tiny_flow_dir), num_inference_steps=STEPS)
    obs, _ = single.reset(seed=1)
    assert obs["timestep"].dtype.name == "float32" and obs in single.observation_space
    check_env(single, warn=False)


@pytest.mark.parametrize("algo", ["ddpo", "pxpo", "oracle"])
def test_agents_train_an_epoch_on_a_flow_model(tiny_flow_dir, tmp_path, algo):
    # the KL between two velocity steps, step weighting on the SDE's sigmas, EMA weights
    extra = {} if algo == "oracle" else {"kl_coef": 0.1, "step_weighting": "drop", "ema_decay": 0.9}
    trainer = Trainer(tiny_config(tiny_flow_dir, tmp_path, algo=algo, num_epochs=1, **extra))
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    metrics, _ = trainer.train_epoch()
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k in ("loss", "reward_mean"))
    after = trainer.policy.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "an epoch must move the weights"


def test_a_flow_runs_export_loads_back_bit_for_bit(tiny_flow_dir, tmp_path):
    from diffusers import DDPMPipeline, FlowMatchEulerDiscreteScheduler

    from pxpo_gym.sampling import run_policy

    trainer = Trainer(tiny_config(tiny_flow_dir, tmp_path, algo="pxpo"))
    trainer.train_epoch()
    folder = trainer.export()
    pipeline = DDPMPipeline.from_pretrained(folder)
    assert isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    policy_weights = trainer.policy.net.state_dict()
    for name, value in pipeline.unet.state_dict().items():
        assert torch.equal(value, policy_weights[name]), name
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=8, model=str(folder), num_inference_steps=STEPS)
    assert envs.unwrapped.loaded.is_flow
    assert torch.equal(
        run_policy(envs, seed=11).images, run_policy(trainer.envs, trainer.action, seed=11).images
    )


def test_evaluate_scores_a_flow_export_with_its_runs_sampler(tiny_flow_dir, tmp_path):
    from agents.evaluate import EvaluateConfig, evaluate

    trainer = Trainer(tiny_config(tiny_flow_dir, tmp_path, algo="pxpo", noise_level=0.5, transition="cps"))
    trainer.train_epoch()
    folder = trainer.export()
    common = dict(model=str(folder), images=4, num_inference_steps=STEPS, threads=1)
    result = evaluate(EvaluateConfig(**common, out=str(tmp_path / "own")))
    assert (result["sampler"], result["noise_level"]) == ("cps", 0.5)  # the run's own, from its export
    assert result["reference"] == str(tiny_flow_dir) and 0 <= result["reward_mean"] <= 1
    other = evaluate(EvaluateConfig(**common, noise_level=0.9, transition="sde", out=str(tmp_path / "other")))
    assert (other["sampler"], other["noise_level"]) == ("sde", 0.9)
    assert other["reward_mean"] != result["reward_mean"]


def test_evaluate_refuses_a_reference_with_another_sampler(tiny_flow_dir, tiny_model_dir, tmp_path):
    from agents.evaluate import EvaluateConfig, evaluate

    trainer = Trainer(tiny_config(tiny_flow_dir, tmp_path, algo="ddpo", num_epochs=1))
    folder = trainer.export()
    common = dict(model=str(folder), images=2, num_inference_steps=STEPS, threads=1, out=str(tmp_path / "e"))
    with pytest.raises(ValueError, match="has another noise schedule than model="):
        evaluate(EvaluateConfig(**common, reference=str(tiny_model_dir)))
