"""Step weighting: hand-made schedules, and PXPO == DDPO-SF under the same weights."""

from __future__ import annotations

import pytest
import torch

from agents.steps import sample_steps, step_weights
from agents.trainer import Trainer
from tests.agents.test_agents import policy_grad, tiny_config

# A hand-made schedule: median sigma = 0.3, so with threshold 0.25 the reference is 0.075.
STD = torch.tensor([0.8, 0.4, 0.3, 0.2, 0.02])


def test_drop_leaves_out_steps_below_the_threshold():
    assert step_weights(STD, "drop", 0.25).tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    # threshold 0.7 -> reference 0.21: the 0.2 step goes too
    assert step_weights(STD, "drop", 0.7).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_drop_threshold_boundaries():
    # A step exactly at the reference stays (>=); threshold 1 (the median itself) is allowed: the
    # median step and those above stay.
    std = torch.tensor([0.4, 0.3, 0.2])  # median 0.3
    assert step_weights(std, "drop", 1.0).tolist() == [1.0, 1.0, 0.0]
    assert step_weights(torch.tensor([0.4, 0.3, 0.3]), "drop", 1.0).tolist() == [1.0, 1.0, 1.0]


def test_sample_steps_takes_the_fraction_of_active_steps_in_a_seeded_order():
    active = torch.tensor([True, True, False, True, True, True, True, False, True])  # 7 active of 9
    picked = sample_steps(active, 4, 0.5, torch.Generator().manual_seed(0))
    assert picked.shape == (4, 3)  # int(7 * 0.5) = 3 per image
    assert not bool(torch.isin(picked, torch.tensor([2, 7])).any()), "inactive steps are never picked"
    assert all(len(set(row.tolist())) == 3 for row in picked), "no step twice in one image"
    assert sample_steps(active, 4, 0.1, torch.Generator().manual_seed(0)).shape == (4, 1)  # at least one
    # The generator alone decides: the same seed gives the same steps whatever the global RNG did.
    torch.manual_seed(123)
    again = sample_steps(active, 4, 0.5, torch.Generator().manual_seed(0))
    torch.manual_seed(456)
    assert torch.equal(again, sample_steps(active, 4, 0.5, torch.Generator().manual_seed(0)))
    assert torch.equal(picked, again)


def test_soft_weights_by_hand():
    # w = s^2 / (s^2 + 0.075^2): 0.8 -> 0.64 / 0.645625 = 0.991288; 0.02 -> 0.0004 / 0.006025 = 0.066390;
    # 0.3 -> 0.09 / 0.095625 = 0.941176
    got = step_weights(STD, "soft", 0.25)
    assert got[0].item() == pytest.approx(0.991288, abs=1e-6)
    assert got[2].item() == pytest.approx(0.941176, abs=1e-6)
    assert got[4].item() == pytest.approx(0.066390, abs=1e-6)
    assert bool((got[:-1] > got[1:]).all())  # monotone in sigma


def test_all_and_explicit_weights():
    assert step_weights(STD, "all").tolist() == [1.0] * 5
    assert step_weights(STD, "soft", explicit=(0, 1, 1, 0.5, 0)).tolist() == [0.0, 1.0, 1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="median"), "step_weighting must be one of"),
        (dict(threshold=0.0), "step_threshold must be in"),
        (dict(threshold=1.5), "step_threshold must be in"),
        (dict(explicit=(1, 1)), "one weight per step"),
        (dict(explicit=(0, 0, 0, 0, 0)), "not all 0"),
        (dict(explicit=(1, 1, -1, 1, 1)), ">= 0"),
    ],
)
def test_bad_weightings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        step_weights(STD, **kwargs)


def test_the_default_model_drops_its_near_deterministic_step():
    import gymnasium as gym

    import pxpo_gym  # noqa: F401

    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=1)
    weights = step_weights(envs.unwrapped.schedule.coefficients.std_dev_t)
    # t = 51 -> 1 (sigma 0.0093) and t = 1 -> x_0 (sigma 0.0047) carry almost nothing;
    # every step before t = 151 keeps at least 0.7 of its weight.
    assert weights[18] < 0.02 and weights[19] < 0.01
    assert bool((weights[:17] > 0.7).all())


@pytest.mark.parametrize("weighting", ["soft", "drop"])
def test_constant_map_pxpo_equals_ddpo_under_the_same_step_weights(tiny_model_dir, tmp_path, weighting):
    configs = [
        tiny_config(
            tiny_model_dir,
            tmp_path,
            algo=algo,
            estimator="sf",
            step_weighting=weighting,
            step_threshold=0.9,
            **(dict(image_advantage_weight=0.0, credit="pixel") if algo == "pxpo" else {}),
        )
        for algo in ("ddpo", "pxpo")
    ]
    ddpo, pxpo = Trainer(configs[0]), Trainer(configs[1])
    assert torch.equal(ddpo.step_weights, pxpo.step_weights)
    assert len(set(ddpo.step_weights.tolist())) > 1  # the weights are not all equal
    traj = ddpo.sample()
    rewards = torch.linspace(0, 1, 8)
    maps = rewards[:, None, None].expand(8, 8, 8)
    adv_ddpo = ddpo.algo.advantages(rewards, maps, traj.contexts)
    adv_pxpo = pxpo.algo.advantages(rewards, maps, traj.contexts)
    got = policy_grad(pxpo, traj, adv_pxpo, weights=pxpo.step_weights)
    want = policy_grad(ddpo, traj, adv_ddpo, weights=ddpo.step_weights)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # and the weights matter: unweighted, the gradient is another one
    assert not torch.allclose(policy_grad(ddpo, traj, adv_ddpo), want, rtol=1e-3)


def test_dropped_steps_are_never_trained(tiny_model_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, step_weights=(1.0, 0.0, 1.0, 0.0)))
    seen = []
    original = trainer.action

    def spy(sample, timestep, context):
        seen.extend(timestep.reshape(-1).tolist())
        return original(sample, timestep, context)

    traj = trainer.sample()
    adv = trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    monkeypatch.setattr(trainer, "action", spy)
    trainer.update(traj, adv)
    timesteps = trainer.envs.unwrapped.schedule.timesteps.tolist()
    assert set(seen) == {timesteps[0], timesteps[2]}
