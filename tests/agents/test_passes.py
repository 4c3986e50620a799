"""The pass counter by hand on a 3-step episode: sampling, training, the reference, evaluation left out."""

from __future__ import annotations

import torch

from agents.passes import PassCounter
from agents.runs import train
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config


def test_the_counter_by_hand_on_a_module():
    net = torch.nn.Linear(2, 2)
    counter = PassCounter([net, net])  # given twice, counted once
    with torch.no_grad():
        net(torch.zeros(5, 2))
    assert counter.total == 5
    net(torch.zeros(4, 2)).sum().backward()  # forward with gradients: its backward counts 2
    assert counter.total == 5 + 3 * 4
    with counter.paused():
        net(torch.zeros(7, 2))
    assert counter.total == 17
    copy = __import__("copy").deepcopy(net)  # a snapshot of a counted module copies, and is not counted
    copy(torch.zeros(3, 2))
    assert counter.total == 17
    counter.remove()
    net(torch.zeros(1, 2))
    assert counter.total == 17


def test_a_three_step_epoch_by_hand(tiny_model_dir, tmp_path):
    # 8 images x 3 steps sampled (24 forwards), then 1 inner epoch training every step of every image
    # (24 forwards with gradients: 72), DDPO, no KL: 96 passes. With a KL penalty each trained step
    # also runs the reference once: +24.
    common = dict(algo="ddpo", num_inference_steps=3, step_weighting="all", timestep_fraction=1.0)
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, **common))
    metrics, _ = trainer.train_epoch()
    assert metrics["passes"] == 8 * 3 + 8 * 3 * 3 == trainer.passes.total
    kl = Trainer(tiny_config(tiny_model_dir, tmp_path, kl_coef=0.1, **common))
    assert kl.train_epoch()[0]["passes"] == 8 * 3 + 8 * 3 * 3 + 8 * 3


def test_evaluation_is_not_counted_and_resume_continues_the_count(tiny_model_dir, tmp_path):
    common = dict(algo="ddpo", num_inference_steps=3, step_weighting="all", timestep_fraction=1.0)
    straight = train(
        tiny_config(tiny_model_dir, tmp_path, eval_every=1, eval_images=4, out=str(tmp_path / "a"), **common)
    )
    assert [row["passes"] for row in straight] == [96, 192]  # the evaluations' 4 x 3 forwards are not in it
    train(tiny_config(tiny_model_dir, tmp_path, num_epochs=1, out=str(tmp_path / "b"), **common))
    resumed = train(tiny_config(tiny_model_dir, tmp_path, resume=str(tmp_path / "b"), out="", **common))
    assert [row["passes"] for row in resumed] == [192]


def test_the_shared_reference_is_counted_without_a_hook(tiny_model_dir, tmp_path):
    # the env's model is shared (several trainers, the painting page's workspaces): no hook may pile up on it
    first = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo"))
    second = Trainer(tiny_config(tiny_model_dir, tmp_path, algo="ddpo"), envs=first.envs)
    assert not first.reference._forward_hooks and second.reference is first.reference
    sample = torch.zeros(5, 3, 8, 8)
    before = (first.passes.total, second.passes.total)
    second.reference_action(sample, torch.full((5,), 10), torch.zeros(5, dtype=torch.long))
    assert (first.passes.total, second.passes.total) == (before[0], before[1] + 5)
