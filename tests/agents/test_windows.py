"""Fewer passes (issue 35): a trained window of steps, deterministic steps outside it, and the sampling pass's
own gradient for the first minibatch."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

import agents.runs
from agents.config import ADDED_FIELDS, RENAMED, TrainConfig, flat_view
from agents.runs import resolve_config, train
from agents.steps import train_window
from agents.trainer import Trainer
from agents.trajectories import collect
from tests.agents.test_agents import tiny_config

# -- where the window sits ----------------------------------------------------------------------------------


def test_the_window_placements_by_hand():
    weights = torch.ones(10)
    assert [train_window(weights, 4, "sliding", 0, e, 0) for e in range(4)] == [
        range(0, 4),
        range(4, 8),
        range(6, 10),  # the last tile ends at the last step
        range(0, 4),
    ]
    assert train_window(weights, 4, "sliding", 5, 0, 0) == range(4, 8)  # epoch 0: the tile holding step 5
    assert train_window(weights, 3, "fixed", 9, 7, 0) == range(7, 10)  # clamped to fit
    dropped = torch.tensor([1.0] * 6 + [0.0] * 4)  # 'drop' weighting: the last steps have no weight
    assert train_window(dropped, 4, "sliding", 0, 1, 0) == range(2, 6)
    assert train_window(dropped, 8, "fixed", 0, 0, 0) == range(0, 6)
    drawn = {train_window(weights, 2, "random", 0, e, 3) for e in range(40)}
    assert all(w.start <= 3 for w in drawn) and len(drawn) > 1  # within the first half: starts 0 ... 5 - 2
    assert train_window(weights, 2, "random", 0, 7, 3) == train_window(weights, 2, "random", 0, 7, 3)
    with pytest.raises(ValueError, match="window_placement"):
        train_window(weights, 2, "middle", 0, 0, 0)
    with pytest.raises(ValueError, match="no step has a weight"):
        train_window(torch.zeros(4), 2, "fixed", 0, 0, 0)
    ends = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 1.0])  # weighted steps far apart: no window may miss both
    assert [train_window(ends, 2, "sliding", 0, e, 0) for e in range(3)] == [
        range(0, 2),
        range(6, 8),
        range(0, 2),
    ]
    assert all(train_window(ends, 2, "random", 0, e, 1) == range(0, 2) for e in range(10))
    with pytest.raises(ValueError, match="window_start=3 places the 2-step window on steps 3-4"):
        train_window(ends, 2, "fixed", 3, 0, 0)


def test_bad_window_settings_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="step_window must be None .* or an int >= 0, got step_window=-1"):
        tiny_config(tiny_model_dir, tmp_path, step_window=-1)
    with pytest.raises(ValueError, match="reuse_sampling_pass .* train_batch_size a multiple"):
        tiny_config(tiny_model_dir, tmp_path, reuse_sampling_pass=True, train_batch_size=4)
    with pytest.raises(ValueError, match="window_outside must be None .* got window_outside='determinstic'"):
        tiny_config(tiny_model_dir, tmp_path, step_window=2, window_outside="determinstic")
    with pytest.raises(ValueError, match="window_placement must be None"):
        tiny_config(tiny_model_dir, tmp_path, window_placement="middle")
    with pytest.raises(ValueError, match="backpropagates through its sampler"):
        tiny_config(tiny_model_dir, tmp_path, algo="oracle", step_window=2)


# -- the env's deterministic steps ---------------------------------------------------------------------------


@pytest.mark.parametrize("flow", [False, True])
def test_steps_outside_the_stochastic_ones_take_the_noiseless_step(tiny_model_dir, tiny_flow_dir, flow):
    model = str(tiny_flow_dir if flow else tiny_model_dir)
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=3, model=model, num_inference_steps=4)
    core = envs.unwrapped
    mask = torch.tensor([False, True, True, False])
    envs.reset(seed=5, options={"stochastic_steps": mask})
    noise = core._noise.clone()
    x = core.current_sample()
    eps = torch.randn(4, 3, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    for k in range(4):
        _, _, _, _, info = envs.step(eps[k])
        table = core.schedule.coefficients if mask[k] else core.schedule.ode_coefficients
        a, b, s = (float(c[k]) for c in table)
        x = a * x + b * eps[k] + s * noise[:, k + 1]  # by hand: the step's own coefficients
        assert torch.allclose(core.current_sample(), x, atol=1e-5)
        assert bool((info["std_dev_t"] == 0).all()) != bool(mask[k])  # the noiseless steps publish sigma 0
    if not flow:  # DDIM at eta 0, against its own formula: x0 prediction and direction, no noise
        abar, abar_prev = core.schedule.alpha_prod_t[0], core.schedule.alpha_prod_t_prev[0]
        a, b, s = (float(c[0]) for c in core.schedule.ode_coefficients)
        assert s == 0 and a == pytest.approx(float((abar_prev / abar).sqrt()), rel=1e-6)
        assert b == pytest.approx(
            float((1 - abar_prev).sqrt() - (abar_prev * (1 - abar) / abar).sqrt()), abs=1e-6
        )
    envs.reset(seed=5)  # left out: every step stochastic again
    assert bool(core._stochastic.all())
    with pytest.raises(ValueError, match=r"stochastic_steps'\] must be a bool array of shape \(4,\)"):
        envs.reset(options={"stochastic_steps": [True, False]})


def test_a_window_stores_only_its_steps(tiny_model_dir):
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), num_inference_steps=5)
    policy = envs.unwrapped.policy()
    whole = collect(envs, policy, seed=3)
    part = collect(envs, policy, seed=3, keep=range(1, 3))
    assert part.samples.shape[1] == 3 and part.logp_pixels.shape[1] == 2 and part.first_step == 1
    assert torch.equal(part.samples, whole.samples[:, 1:4])
    assert torch.equal(part.logp_pixels, whole.logp_pixels[:, 1:3])
    assert torch.equal(part.images, whole.images)
    with pytest.raises(ValueError, match="keep must be a non-empty range"):
        collect(envs, policy, seed=3, keep=range(4, 6))


# -- passes --------------------------------------------------------------------------------------------------


def test_a_windowed_epoch_runs_no_forward_outside_its_window(tiny_model_dir, tmp_path):
    # 8 images x 5 steps sampled (40), a window of 2 trained (8 x 2 forwards with gradients: 48): 88,
    # against 40 + 8 x 5 x 3 = 160 without the window.
    common = dict(algo="ddpo", num_inference_steps=5, step_weighting="all", timestep_fraction=1.0)
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, step_window=2, **common))
    calls = []
    step_loss = trainer.step_loss
    trainer.step_loss = lambda traj, idx, k, *rest: calls.append(k.tolist()) or step_loss(traj, idx, k, *rest)
    metrics, traj = trainer.train_epoch()
    assert metrics["passes"] == 8 * 5 + 8 * 2 * 3
    assert traj.kept_steps == range(0, 2) and {k for row in calls for k in row} == {0, 1}
    metrics, traj = trainer.train_epoch()  # sliding: the next window
    assert traj.kept_steps == range(2, 4) and metrics["passes"] == 2 * 88
    full = Trainer(tiny_config(tiny_model_dir, tmp_path, **common))
    assert full.train_epoch()[0]["passes"] == 8 * 5 + 8 * 5 * 3


def test_reusing_the_sampling_pass_saves_its_forwards(tiny_model_dir, tmp_path):
    # sample batch 4 x 2, train batch 4 (two minibatches), window 2 of 5: the first minibatch's 4 images
    # x 2 steps are trained from the sampling pass (their forward counted once, with its backward), the
    # second minibatch's recomputed: 8 x 5 + 4 x 2 x 2 + 4 x 2 x 3 = 80 (without reuse: 40 + 48 = 88)
    common = dict(
        algo="ddpo", num_inference_steps=5, step_weighting="all", step_window=2, sample_batch_size=4,
        sample_batches_per_epoch=2, train_batch_size=4,
    )  # fmt: skip
    reused = Trainer(tiny_config(tiny_model_dir, tmp_path, reuse_sampling_pass=True, **common))
    assert reused.train_epoch()[0]["passes"] == 8 * 5 + 4 * 2 * 2 + 4 * 2 * 3
    plain = Trainer(tiny_config(tiny_model_dir, tmp_path, **common))
    assert plain.train_epoch()[0]["passes"] == 8 * 5 + 8 * 2 * 3


# -- the sampling pass's gradient ----------------------------------------------------------------------------


def first_gradient(trainer: Trainer) -> torch.Tensor:
    """The first minibatch's gradient (as the optimizer sees it, before clipping) of one epoch."""
    grads = []
    step = trainer.optimizer_step

    def capture():
        if not grads:
            grads.append(
                torch.cat(
                    [p.grad.reshape(-1).clone() for p in trainer.policy.parameters() if p.grad is not None]
                )
            )
        return step()

    trainer.optimizer_step = capture
    trainer.train_epoch()
    return grads[0]


@pytest.mark.parametrize(
    "options",
    [
        dict(algo="ddpo"),
        dict(algo="pxpo", step_window=2, window_outside="deterministic"),
        dict(algo="pxpo", kl_coef=0.5, step_weighting="soft"),
    ],
)
def test_the_sampling_pass_gradient_equals_the_recomputed_one(tiny_model_dir, tmp_path, options):
    common = dict(
        num_inference_steps=4, sample_batch_size=4, sample_batches_per_epoch=2, train_batch_size=4,
        reuse_sampling_pass=True, **options,
    )  # fmt: skip
    reused = Trainer(tiny_config(tiny_model_dir, tmp_path, **common))
    recomputed = Trainer(tiny_config(tiny_model_dir, tmp_path, **common))
    recomputed.sample = lambda sample=recomputed.sample: (sample(), recomputed.sampled_actions.clear())[0]
    a, b = first_gradient(reused), first_gradient(recomputed)
    assert reused.passes.total < recomputed.passes.total  # the first minibatch was not run again
    assert a.abs().max() > 0
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# -- resume --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(step_window=2, window_placement="random", window_outside="deterministic"),
        dict(algo="ddpo", step_window=3, kl_coef=0.1),  # sliding, stochastic outside
        dict(
            step_window=2,
            reuse_sampling_pass=True,
            sample_batch_size=4,
            sample_batches_per_epoch=2,
            train_batch_size=4,
        ),
    ],
)
def test_windowed_and_reusing_runs_resume_exactly(tiny_model_dir, tmp_path, options):
    common = dict(num_inference_steps=5, num_epochs=3, save_every=1, export=False, **options)
    straight = train(tiny_config(tiny_model_dir, tmp_path, out=str(tmp_path / "a"), **common))
    train(tiny_config(tiny_model_dir, tmp_path, out=str(tmp_path / "b"), **{**common, "num_epochs": 1}))
    resumed = train(tiny_config(tiny_model_dir, tmp_path, resume=str(tmp_path / "b"), out="", **common))
    for key in ("reward_mean", "loss", "passes"):
        assert [row[key] for row in straight[1:]] == [row[key] for row in resumed], key


def test_the_algorithms_default_window(tiny_model_dir, tmp_path, monkeypatch):
    pxpo = tiny_config(tiny_model_dir, tmp_path).with_window_defaults()
    assert (pxpo.sampling.step_window, pxpo.sampling.window_placement, pxpo.sampling.window_outside) == (
        2,
        "random",
        "deterministic",
    )
    ddpo = tiny_config(tiny_model_dir, tmp_path, algo="ddpo").with_window_defaults()
    assert (ddpo.sampling.step_window, ddpo.sampling.window_placement, ddpo.sampling.window_outside) == (
        0,
        "sliding",
        "stochastic",
    )
    mine = tiny_config(
        tiny_model_dir, tmp_path, step_window=3
    ).with_window_defaults()  # sized by hand: slides
    assert (mine.sampling.step_window, mine.sampling.window_placement, mine.sampling.window_outside) == (
        3,
        "sliding",
        "stochastic",
    )
    half = tiny_config(tiny_model_dir, tmp_path, window_placement="fixed").with_window_defaults()
    assert (half.sampling.step_window, half.sampling.window_placement, half.sampling.window_outside) == (
        2,
        "fixed",
        "deterministic",
    )
    none = tiny_config(tiny_model_dir, tmp_path, step_window=0).with_window_defaults()
    assert (none.sampling.window_placement, none.sampling.window_outside) == ("sliding", "stochastic")
    # placing a window that is not there is refused, not dropped (DDPO trains every step by default)
    for placed in (
        dict(step_window=0, window_outside="deterministic"),
        dict(algo="ddpo", window_placement="fixed"),
        dict(algo="ddpo", window_start=3),
    ):
        with pytest.raises(ValueError, match="place a window.*set step_window too"):
            tiny_config(tiny_model_dir, tmp_path, **placed).with_window_defaults()
    oracle = tiny_config(tiny_model_dir, tmp_path, algo="oracle").with_window_defaults()
    assert oracle.sampling.step_window == 0
    # the run's own config says what it did; a checkpoint written before the window existed resumes without one
    train(tiny_config(tiny_model_dir, tmp_path, num_epochs=1, out=str(tmp_path / "run"), export=False))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["sampling"]["step_window"], saved["sampling"]["window_outside"]) == (2, "deterministic")
    resumed = resolve_config(TrainConfig.of(resume=str(tmp_path / "run"), num_epochs=2))
    assert resumed.sampling.step_window == 2
    load = agents.runs.load_checkpoint

    def before_the_window(folder):  # a checkpoint written before the window fields (and the sections) existed
        tensors, meta = load(folder)
        flat = flat_view(meta["config"])
        for key in ADDED_FIELDS:
            flat.pop(key)
        for old, new in RENAMED.items():
            flat[old] = flat.pop(new)
        meta["config"] = flat
        return tensors, meta

    monkeypatch.setattr(agents.runs, "load_checkpoint", before_the_window)
    old = resolve_config(TrainConfig.of(resume=str(tmp_path / "run"), num_epochs=2)).with_window_defaults()
    assert (old.sampling.step_window, old.sampling.window_outside, old.sampling.reuse_sampling_pass) == (
        0,
        "stochastic",
        False,
    )


def test_the_trainer_samples_outside_its_window_without_noise(tiny_model_dir, tmp_path):
    # PXPO's default: the epoch's 2 trained steps add noise, the others do not (and with a window sized by hand
    # left stochastic, every step does)
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, num_inference_steps=5))
    _, traj = trainer.train_epoch()
    noisy = trainer.envs.unwrapped._stochastic
    expected = torch.zeros(5, dtype=torch.bool)
    expected[traj.first_step : traj.first_step + 2] = True
    assert traj.kept_steps == trainer.window and len(trainer.window) == 2
    assert torch.equal(noisy, expected.expand_as(noisy))
    plain = Trainer(tiny_config(tiny_model_dir, tmp_path, num_inference_steps=5, step_window=2))
    plain.train_epoch()
    assert bool(plain.envs.unwrapped._stochastic.all())
