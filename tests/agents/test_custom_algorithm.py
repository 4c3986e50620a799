"""docs/custom-algorithms.md's template, as written, learns: held-out colour reward rises on two seeds, and
each of its options reaches the trainer."""

from __future__ import annotations

import sys

import pytest

from agents.config import make_envs
from agents.heldout import Evaluator
from agents.trainer import Trainer
from tests.test_readme import _blocks


@pytest.fixture
def my_algo(tmp_path, monkeypatch):
    (block,) = [b for b in _blocks("An algorithm in one file") if "class MyAlgo" in b]
    (tmp_path / "my_algo.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_algo:MyAlgo"
    sys.modules.pop("my_algo", None)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_pages_template_improves_the_held_out_colour_reward(my_algo, tmp_path, seed):
    from agents.config import TrainConfig

    config = TrainConfig.of(
        algo=my_algo,
        reward=("color",),
        seed=seed,
        num_epochs=5,
        sample_batch_size=16,
        train_batch_size=8,
        num_inference_steps=8,
        out=str(tmp_path / f"run{seed}"),
        progress=False,
        tensorboard=False,
        threads=1,
    )
    trainer = Trainer(config)
    assert type(trainer.algo).__name__ == "MyAlgo" and trainer.algo.config.baseline == "prompt"
    evaluator = Evaluator(make_envs(config, 16, "cpu"), seed, trainer.envs.unwrapped.context_choices)
    before = evaluator(trainer.action)["eval_reward"]
    for _ in range(config.run.num_epochs):
        trainer.train_epoch()
    after = evaluator(trainer.action)["eval_reward"]
    assert after > before + 0.02, (before, after)
