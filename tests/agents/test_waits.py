"""Every wait of seconds in the command lines is announced (issue 36): a line on stdout before each phase that
can take long (loading, sampling, training, drawing), in order, and a training bar that moves within an epoch.
What is tested is the lines, their order and the bar's position after each piece of work, never timings."""

from __future__ import annotations

import sys

import pytest

from agents.progress import RunProgress, ticks_per_epoch
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config


def assert_in_order(printed: str, *phrases: str) -> None:
    """Each phrase starts a line of ``printed`` (or follows a program's 'name: '), after the previous one's."""
    lines = printed.splitlines()
    at = -1
    for phrase in phrases:
        found = [i for i, line in enumerate(lines) if i > at and phrase in line]
        assert found, f"no line with {phrase!r} after line {at} in:\n{printed}"
        at = found[0]


def test_train_says_what_it_loads_samples_trains_and_exports(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from agents.train import main

    args = {
        "--model": str(tiny_model_dir),
        "--num-epochs": "1",
        "--sample-batch-size": "8",
        "--sample-batches-per-epoch": "1",
        "--train-batch-size": "8",
        "--num-inference-steps": "4",
        "--stat-buffer-size": "8",
        "--stat-min-count": "4",
        "--eval-every": "1",
        "--eval-images": "4",
        "--image-every": "0",
        "--out": str(tmp_path / "run"),
    }
    argv = [word for pair in args.items() for word in pair]
    monkeypatch.setattr(sys, "argv", ["agents.train", *argv, "--no-tensorboard"])
    main()
    out, err = capsys.readouterr()
    assert_in_order(
        out,
        "agents.train: loading model",  # the model and the env (the longest wait before the bar)
        "sampling the pretrained model's 4 held-out images",  # the evaluation's reference
        "training: epochs 1 to 1 of 8 images",  # then the bar
        "exporting the model to",
        "epoch 1: 8 images",
    )
    assert "epochs" in err and "Traceback" not in err  # the bar is on stderr, the lines are not


def test_the_training_bar_moves_with_each_sampling_batch_and_optimiser_step(tiny_model_dir, tmp_path):
    """2 sampling batches and 2 inner epochs x 2 minibatches: the bar stands on 1/6, 2/6, ... of the epoch after
    each (before, it moved once per epoch), and the run trains exactly as without it."""
    sizes = dict(sample_batches_per_epoch=2, inner_epochs=2, num_epochs=1)
    config = tiny_config(tiny_model_dir, tmp_path, **sizes)
    assert ticks_per_epoch(config, samples_with_gradients=False) == 6
    trainer = Trainer(config)
    progress = RunProgress(enabled=True)
    progress.open(config.run.num_epochs, 0, "test", ticks_per_epoch(config, False))
    seen = []

    def tick(what: str) -> None:
        progress.tick(what)
        seen.append((what, progress.bar.n))

    trainer.progress = tick
    metrics, _ = trainer.train_epoch()
    progress.epoch_done(trainer.epoch, metrics)
    assert [what for what, _ in seen] == ["sample"] * 2 + ["update"] * 4
    assert [n for _, n in seen] == pytest.approx([k / 6 for k in range(1, 7)])
    assert progress.bar.n == 1 and "reward=" in str(progress.bar)
    progress.close()
    plain, _ = Trainer(tiny_config(tiny_model_dir, tmp_path / "plain", **sizes)).train_epoch()
    timings = {k for k in metrics if k.endswith("seconds")}
    assert {k: v for k, v in metrics.items() if k not in timings} == pytest.approx(
        {k: v for k, v in plain.items() if k not in timings}, nan_ok=True
    )


def test_the_oracle_ticks_once_per_train_batch():
    from agents.config import TrainConfig

    config = TrainConfig.of(
        sample_batch_size=8, sample_batches_per_epoch=4, train_batch_size=8, inner_epochs=2
    )
    assert ticks_per_epoch(config, samples_with_gradients=True) == 4
    assert ticks_per_epoch(config, samples_with_gradients=False) == 4 + 2 * 4


def test_a_disabled_progress_says_and_draws_nothing(capsys):
    progress = RunProgress(enabled=False)
    progress.say("loading ...")
    progress.open(2, 0, "test", 4)
    progress.tick("sample")
    progress.epoch_done(1, {"reward_mean": 0.5, "approx_kl": 0.0})
    progress.close()
    assert capsys.readouterr() == ("", "")


def test_evaluate_says_what_it_loads_samples_and_draws(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from agents.evaluate import main

    # the model folder is its own reference (no export metadata): one model loads, its images are sampled
    args = ["--model", str(tiny_model_dir), "--images", "2", "--num-inference-steps", "4"]
    monkeypatch.setattr(sys, "argv", ["agents.evaluate", *args, "--out", str(tmp_path / "eval")])
    main()
    assert_in_order(
        capsys.readouterr().out,
        "agents.evaluate: loading",
        "agents.evaluate: sampling the model's 2 held-out images",
        "agents.evaluate: drawing",
        "reward",
        "wrote",
    )


def test_demo_says_what_it_loads_denoises_and_draws(tmp_path, monkeypatch, capsys):
    from pxpo_gym.cli import parse
    from pxpo_gym.demo import DemoConfig, main

    args = ["--num-images", "2", "--num-inference-steps", "4", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", ["pxpo_gym.demo", *args, "--out", str(tmp_path / "demo.png")])
    main(parse(DemoConfig))  # as `python -m pxpo_gym.demo ...` runs it
    assert_in_order(
        capsys.readouterr().out,
        "pxpo_gym.demo: loading model 'default'",
        "denoising 2 images (4 steps each)",
        "drawing the images beside their reward maps",
        "wrote",
    )
