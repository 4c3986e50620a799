"""Agents: analytic identities, hand-worked losses, config validation, exact resume."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys

import gymnasium as gym
import pytest
import torch

from agents.advantages import ContextStats
from agents.algorithms.ddpo import DDPO, DDPOConfig
from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.config import SECTIONS, TrainConfig
from agents.metrics import read_metrics
from agents.runs import train
from agents.trainer import Trainer
from agents.trajectories import coefficients_from
from pxpo_gym.transition import step_log_prob


def tiny_config(tiny_model_dir, tmp_path, **overrides) -> TrainConfig:
    base = dict(
        model=str(tiny_model_dir),
        num_epochs=2,
        sample_batch_size=8,
        sample_batches_per_epoch=1,
        train_batch_size=8,
        num_inference_steps=4,
        stat_buffer_size=8,
        stat_min_count=4,
        out=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
        image_every=0,
    )
    if overrides.get("algo") == "oracle":  # it has no advantage buffer
        del base["stat_buffer_size"], base["stat_min_count"]
    base.update(overrides)
    return TrainConfig.of(**base)


def policy_grad(trainer: Trainer, traj, advantages, steps=None, weights=None) -> torch.Tensor:
    """Flattened gradient of the algorithm's loss summed over the given steps (all by default),
    each step's loss scaled by ``weights[k]`` if given."""
    trainer.policy.zero_grad(set_to_none=True)
    num_images, num_steps = traj.timesteps.shape
    idx = torch.arange(num_images)
    for k in steps if steps is not None else range(num_steps):
        kk = torch.full((num_images,), k)
        eps = trainer.action(traj.samples[idx, kk], traj.timesteps[idx, kk], traj.contexts)
        logp = step_log_prob(
            traj.samples[idx, kk + 1], traj.samples[idx, kk], eps, coefficients_from(traj.coeffs[idx, kk])
        )
        weight = None if weights is None else weights[kk]
        loss, _ = trainer.algo.loss(
            logp.sum(dim=1), traj.logp_pixels[idx, kk], advantages, trainer.num_channels, weight
        )
        loss.backward()
    return torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None])


# -- hand-worked losses -------------------------------------------------------


def test_context_stats_hand_worked():
    stats = ContextStats(num_contexts=2, buffer_size=3, min_count=2)
    # First batch: context 0 has 1 value (< min_count): batch stats, mean 2, std sqrt(2/3*...)
    out = stats.update(torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 3.0]))
    batch_std = torch.tensor([1.0, 2.0, 3.0]).std(unbiased=False)
    torch.testing.assert_close(out[0], (1.0 - 2.0) / (batch_std + 1e-6))
    # context 1 has 2 values (>= min_count): its own stats, mean 2.5, std 0.5
    torch.testing.assert_close(out[1:], torch.tensor([-1.0, 1.0]), atol=1e-5, rtol=0)
    # The ring buffer keeps the last 3: context 1 now holds [3, 5, 7] -> mean 5, std 1.633
    out = stats.update(torch.tensor([1, 1]), torch.tensor([5.0, 7.0]))
    std = torch.tensor([3.0, 5.0, 7.0]).std(unbiased=False)
    torch.testing.assert_close(out, torch.tensor([0.0, 2.0]) / (std + 1e-6))
    assert stats.count.tolist() == [1, 4]


# -- identities on a tiny model -----------------------------------------------


@pytest.mark.parametrize("algo", ["ddpo", "pxpo"])
def test_ratio_is_one_before_the_first_update(tiny_model_dir, tmp_path, algo):
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo=algo))
    traj = trainer.sample()
    adv = trainer.algo.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    metrics = trainer.update(traj, adv)  # one minibatch: every step is seen before the optimizer steps
    assert metrics["approx_kl"] == 0.0
    assert metrics["clipfrac"] == 0.0


@pytest.mark.parametrize("algo, estimator", [("ddpo", "sf"), ("ddpo", "is"), ("pxpo", "sf"), ("pxpo", "is")])
def test_zero_advantage_gives_zero_gradient(tiny_model_dir, tmp_path, algo, estimator):
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo=algo, estimator=estimator))
    traj = trainer.sample()
    zeros = torch.zeros(8) if algo == "ddpo" else torch.zeros(8, 8, 8)
    grad = policy_grad(trainer, traj, zeros)
    assert grad.numel() > 0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("estimator", ["sf", "is"])
def test_constant_reward_map_pxpo_equals_ddpo(tiny_model_dir, tmp_path, estimator):
    ddpo = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo", estimator=estimator))
    pxpo = Trainer(
        tiny_config(
            tiny_model_dir,
            tmp_path,
            algo="pxpo",
            estimator=estimator,
            image_advantage_weight=0.0,
            credit="pixel",
        )
    )
    traj = ddpo.sample()
    # A constant map per image: PXPO's per-pixel advantages equal DDPO's scalar ones...
    rewards = torch.linspace(0, 1, 8)
    maps = rewards[:, None, None].expand(8, 8, 8)
    adv_ddpo = ddpo.algo.advantages(rewards, maps, traj.contexts)
    adv_pxpo = pxpo.algo.advantages(rewards, maps, traj.contexts)
    torch.testing.assert_close(adv_pxpo, adv_ddpo[:, None, None].expand(8, 8, 8))
    # ...and the gradients agree with scale 1 (our reduction's documented scale).
    torch.testing.assert_close(
        policy_grad(pxpo, traj, adv_pxpo), policy_grad(ddpo, traj, adv_ddpo), rtol=1e-4, atol=1e-7
    )


def test_hybrid_pxpo_is_twice_ddpo_on_a_constant_map(tiny_model_dir, tmp_path):
    # Lambda = 1: with a constant map both advantage terms equal DDPO's, so A_pxpo = 2 A_ddpo.
    ddpo = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo", estimator="sf"))
    hybrid = dict(credit="pixel", image_advantage_weight=1.0)
    pxpo = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="pxpo", estimator="sf", **hybrid))
    assert pxpo.algo.config.pixel_std == "pooled"
    traj = ddpo.sample()
    rewards = torch.linspace(0, 1, 8)
    maps = rewards[:, None, None].expand(8, 8, 8)
    adv_ddpo = ddpo.algo.advantages(rewards, maps, traj.contexts)
    adv_pxpo = pxpo.algo.advantages(rewards, maps, traj.contexts)
    torch.testing.assert_close(adv_pxpo, (2 * adv_ddpo).clamp(-5, 5)[:, None, None].expand(8, 8, 8))
    torch.testing.assert_close(
        policy_grad(pxpo, traj, adv_pxpo), 2 * policy_grad(ddpo, traj, adv_ddpo), rtol=1e-4, atol=1e-7
    )


def test_pxpo_gradient_matches_a_hand_written_per_pixel_sum(tiny_model_dir, tmp_path):
    trainer = Trainer(
        tiny_config(
            tiny_model_dir, tmp_path, algo="pxpo", estimator="sf", sample_batch_size=2, train_batch_size=2
        )
    )
    traj = trainer.sample()
    adv = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0))
    k = 1
    got = policy_grad(trainer, traj, adv, steps=[k])
    # By hand: -(1 / (C h w)) sum_b sum_ij A_bij sum_c log N(x_{t-1}; mean, sigma), averaged over b,
    # with torch.distributions and explicit loops over images and pixels.
    trainer.policy.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for b in range(2):
        x, x_prev = traj.samples[b : b + 1, k], traj.samples[b, k + 1]
        eps = trainer.action(x, traj.timesteps[b : b + 1, k], traj.contexts[b : b + 1])[0]
        a, bb, sigma = traj.coeffs[b, k]
        normal = torch.distributions.Normal(a * x[0] + bb * eps, sigma)
        logp = normal.log_prob(x_prev)  # (C, h, w)
        for i in range(8):
            for j in range(8):
                total = total - adv[b, i, j] * logp[:, i, j].sum() / (3 * 8 * 8)
    (total / 2).backward()
    expected = torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


# -- runs, checkpoints, resume --------------------------------------------------


def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tiny_model_dir, tmp_path):
    full = tiny_config(tiny_model_dir, tmp_path, num_epochs=3, out=str(tmp_path / "full"), save_every=1)
    first = tiny_config(tiny_model_dir, tmp_path, num_epochs=1, out=str(tmp_path / "part"), save_every=1)
    train(full)
    train(first)
    resumed = first.replace(resume=str(tmp_path / "part"), num_epochs=3)
    train(resumed)
    a, b = read_metrics(tmp_path / "full" / "metrics.csv"), read_metrics(tmp_path / "part" / "metrics.csv")
    assert len(a) == len(b) == 3
    for row_a, row_b in zip(a, b):
        timing = [k for k in row_a if k.endswith("seconds")]
        assert {"seconds", "sample_seconds", "reward_seconds", "train_seconds"} <= set(timing)
        for key in timing:
            row_a.pop(key), row_b.pop(key)
        assert row_a == row_b
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "checkpoints" / "epoch-000003" / "state.safetensors"))
    wb = load_file(str(tmp_path / "part" / "checkpoints" / "epoch-000003" / "state.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_crash_mid_save_keeps_the_previous_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import agents.checkpoint as checkpoint

    config = tiny_config(tiny_model_dir, tmp_path, num_epochs=1)
    train(config)
    before = (tmp_path / "run" / "checkpoints" / "latest").read_text()

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(config.replace(resume=str(tmp_path / "run"), num_epochs=2))
    monkeypatch.undo()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == before
    tensors, meta = checkpoint.load_checkpoint(tmp_path / "run")
    assert meta["epoch"] == 1


def test_training_writes_metrics_images_and_tensorboard(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir, tmp_path, algo="ddpo", estimator="sf", image_every=1, tensorboard=True
    )
    history = train(config)
    run = tmp_path / "run"
    assert [int(m["epoch"]) for m in history] == [1, 2] and history[-1]["images"] == 16
    assert (run / "images" / "epoch-0002.png").is_file()
    assert any((run / "tb").iterdir())
    row = read_metrics(run / "metrics.csv")[0]
    assert {"reward_mean", "loss", "approx_kl", "clipfrac", "seconds"} <= set(row)
    # where the time goes: sampling (incl. the reward) + training = the epoch
    assert 0 < row["reward_seconds"] <= row["sample_seconds"] < row["seconds"]
    assert row["sample_seconds"] + row["train_seconds"] == pytest.approx(row["seconds"])


def test_lora_policy_trains_only_adapters():
    from agents.policy import make_policy
    from pxpo_gym.loading import load_model

    model = load_model("default").noise_model
    policy = make_policy(model, lora_rank=2)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():  # LoRA starts as the identity
        torch.testing.assert_close(
            policy(x, torch.tensor([5, 9]), torch.tensor([0, 1])),
            model(x, torch.tensor([5, 9]), torch.tensor([0, 1])),
        )


def test_user_reward_plugin(tiny_model_dir, tmp_path, monkeypatch):
    # A constant the default colour reward cannot produce: the run really used the plugin.
    (tmp_path / "my_rewards.py").write_text(
        "import torch\n\ndef quarter(images, contexts):\n    return torch.full_like(images[:, 0], 0.25)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    history = train(tiny_config(tiny_model_dir, tmp_path, reward="my_rewards:quarter", num_epochs=1))
    assert history[0]["reward_mean"] == pytest.approx(0.25) and history[0]["reward_std"] == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(learning_rate=-1e-4), "learning_rate"),
        (dict(sample_batch_size=6, train_batch_size=4), "must divide"),
        (dict(clip_range=-1.0), "clip_range"),
        (dict(stat_min_count=40), "stat_min_count"),
        (dict(reward_kwargs="[1, 2]"), "JSON object"),
        (dict(estimator="ppo"), "estimator"),
        (
            dict(dist_timeout=-5.0),
            "dist_timeout must be a finite number of seconds > 0, got dist_timeout=-5.0",
        ),
        (dict(dist_timeout=float("nan")), "dist_timeout=nan"),
    ],
)
def test_bad_configs_fail_at_construction(tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tiny_model_dir, tmp_path, **overrides)


@pytest.mark.parametrize(
    "overrides, message", [(dict(reward="aesthetic"), "not a built-in reward"), (dict(eta=0.0), "eta")]
)
def test_what_the_env_checks_fails_when_the_trainer_builds_it(tiny_model_dir, tmp_path, overrides, message):
    config = tiny_config(tiny_model_dir, tmp_path, **overrides)  # the env's checks are not repeated here
    with pytest.raises(ValueError, match=message):
        Trainer(config)


def test_ddpo_default_clip_range_is_scaled_for_the_element_count(tiny_model_dir, tmp_path):
    from agents.config import ddpo_clip_range

    # 1e-4 * sqrt(16384 / 768) = 1e-4 * 4.6188 for the default model; SD 1.5's latent keeps 1e-4
    assert ddpo_clip_range(3 * 16 * 16) == pytest.approx(4.6188e-4, rel=1e-4)
    assert ddpo_clip_range(4 * 64 * 64) == pytest.approx(1e-4)
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo"))  # 3 x 8 x 8 = 192 elements
    assert trainer.algo.config.clip_range == pytest.approx(1e-4 * math.sqrt(16384 / 192))
    explicit = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo", clip_range=1e-4))
    assert explicit.algo.config.clip_range == 1e-4


def test_env_config_mismatch_is_refused(tiny_model_dir, tmp_path):
    envs = gym.make_vec(
        "DiffusionDenoise-v0", num_envs=8, model=str(tiny_model_dir), num_inference_steps=4, eta=0.5
    )
    with pytest.raises(ValueError, match="eta"):
        Trainer(tiny_config(tiny_model_dir, tmp_path), envs=envs)
    with pytest.raises(ValueError, match="no checkpoint"):
        train(tiny_config(tiny_model_dir, tmp_path, resume=str(tmp_path / "nothing")))


def test_cli_help_documents_every_field():
    out = subprocess.run(
        [sys.executable, "-m", "agents.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for section in SECTIONS.values():  # every section's options, without the section's prefix
        for field in dataclasses.fields(section):
            assert re.search(f"--{field.name.replace('_', '-')}(?![\\w-])", out.stdout), field.name
    for field in dataclasses.fields(PXPOConfig):  # the default subcommand's
        assert re.search(f"--{field.name.replace('_', '-')}(?![\\w-])", out.stdout), field.name
    assert "Gradient-norm clip" in out.stdout and "ddpo" in out.stdout and "plugin" in out.stdout
    oracle = subprocess.run(
        [sys.executable, "-m", "agents.train", "oracle", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--backprop-steps" in oracle.stdout and not re.search("--credit(?![\\w-])", oracle.stdout)


def test_algorithm_configs_validate():
    assert PXPOConfig().clip_range == 0.2 and DDPOConfig().clip_range is None  # None: scaled by the trainer
    with pytest.raises(ValueError, match="clip_range"):
        PXPOConfig(clip_range=0.0)
    with pytest.raises(ValueError, match="clip_range=None"):
        DDPO(DDPOConfig(), 2, (4, 4))
    assert isinstance(DDPO(DDPOConfig(clip_range=1e-4), 2, (4, 4)).stats, ContextStats)
    assert PXPO(PXPOConfig(), 2, (4, 4)).stats.buffer.shape == (2, 32, 4, 4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_epoch_runs(tiny_model_dir, tmp_path, precision):
    # On CPU this exercises the autocast and grad-scaler path that CUDA runs use.
    history = train(tiny_config(tiny_model_dir, tmp_path, mixed_precision=precision, num_epochs=1))
    assert math.isfinite(history[0]["loss"]) and math.isfinite(history[0]["grad_norm"])


@pytest.mark.parametrize(
    "precision, dtype", [("no", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_autocast_is_active_in_the_policy_forward(tiny_model_dir, tmp_path, precision, dtype):
    """The policy's convolutions run in the configured precision; what the agents see is float32."""
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, mixed_precision=precision))
    conv = next(m for m in trainer.policy.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    x = torch.randn(2, 3, 8, 8)
    eps = trainer.action(x, torch.tensor([500, 500]), torch.tensor([0, 1]))
    assert seen and set(seen) == {dtype} and eps.dtype == torch.float32


def test_guidance_needs_a_null_context(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="null context"):
        Trainer(tiny_config(tiny_model_dir, tmp_path, guidance_scale=2.0))
