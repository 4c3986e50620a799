"""The peers' plug-ins (benchmarks/suite/peers) against their papers' equations, by hand on 2 x 2 examples."""

from __future__ import annotations

import math

import pytest
import torch

from agents.algorithms import resolve_algorithm
from benchmarks.suite.peers.dense_flow_grpo import DenseFlowGRPO, DenseFlowGRPOConfig
from benchmarks.suite.peers.flow_grpo import FlowGRPO, FlowGRPOConfig, FlowGRPOFast, FlowGRPOFastConfig
from benchmarks.suite.peers.groups import group_normalise
from tests.agents.test_agents import tiny_config


def test_group_normalise_by_hand():
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0])
    contexts = torch.tensor([0, 0, 1, 1, 2])
    out = group_normalise(rewards, contexts, eps=1e-4)
    # context 0: mean 2, population std 1; context 1: std 0 -> 0; a group of one -> 0
    torch.testing.assert_close(out, torch.tensor([-1 / 1.0001, 1 / 1.0001, 0.0, 0.0, 0.0]))
    maps = torch.tensor([[[0.0, 1.0]], [[2.0, 1.0]]])  # (2, 1, 2), one context: per pixel
    torch.testing.assert_close(
        group_normalise(maps, torch.tensor([0, 0]), eps=0.0), torch.tensor([[[-1.0, 0.0]], [[1.0, 0.0]]])
    )


def test_flow_grpo_advantages_and_loss_by_hand():
    algo = FlowGRPO(FlowGRPOConfig(clip_range=0.1, adv_clip_max=0.5), num_contexts=2, map_shape=(2, 2))
    adv = algo.advantages(torch.tensor([1.0, 3.0]), torch.zeros(2, 2, 2), torch.tensor([0, 0]))
    torch.testing.assert_close(adv, torch.tensor([-0.5, 0.5]))  # +-0.9999 clipped to +-0.5
    old = torch.zeros(2, 2, 2)
    logp = torch.tensor([[[0.4, 0.4], [0.4, 0.4]], [[0.8, 0.0], [0.0, 0.0]]], requires_grad=True)
    # one channel: image 0 log-ratio mean 0.4 (ratio e^0.4 = 1.49), image 1 mean 0.2 (ratio 1.22)
    loss, stats = algo.loss(logp, old, adv, num_channels=1)
    r0 = math.exp(0.4)
    # A < 0, r > 1 + e: max(-A r, -A clip(r)) = 0.5 r (unclipped, larger); A > 0: max(-0.5 r, -0.5 x 1.1) = -0.55
    assert float(loss.detach()) == pytest.approx((0.5 * r0 - 0.55) / 2, rel=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad[1], torch.zeros(2, 2))  # image 1 clipped: no gradient
    torch.testing.assert_close(logp.grad[0], torch.full((2, 2), 0.5 * r0 / 4 / 2))
    assert stats["clipfrac"] == 1.0 and float(stats["approx_kl"]) == pytest.approx(0.5 * (0.16 + 0.04) / 2)
    assert torch.equal(algo.train_steps(torch.tensor([0.2, 0.0, 1.0]), 0), torch.ones(3))


def test_flow_grpo_fast_trains_one_window_in_the_first_half():
    algo = FlowGRPOFast(FlowGRPOFastConfig(window=2), num_contexts=1, map_shape=(2, 2))
    weights = torch.ones(10)
    starts = set()
    for epoch in range(30):
        w = algo.train_steps(weights, epoch)
        assert torch.equal(w, algo.train_steps(weights, epoch))  # the same on resume
        on = torch.nonzero(w).flatten().tolist()
        assert len(on) == 2 and on[1] == on[0] + 1 and on[1] < 5
        starts.add(on[0])
    assert starts == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        FlowGRPOFastConfig(window=0)


def test_denseflow_grpo_advantages_and_loss_by_hand():
    algo = DenseFlowGRPO(DenseFlowGRPOConfig(clip_range=0.1, group_eps=0.0), num_contexts=1, map_shape=(1, 2))
    maps = torch.tensor([[[0.0, 1.0]], [[2.0, 1.0]]])  # pixel 0 varies over the group, pixel 1 does not
    adv = algo.advantages(maps.mean(dim=(1, 2)), maps, torch.tensor([0, 0]))
    torch.testing.assert_close(adv, torch.tensor([[[-1.0, 0.0]], [[1.0, 0.0]]]))
    old = torch.zeros(2, 1, 2)
    # image 0: ratio e^0.3 (outside 1 + e); its pixel 0 has A < 0: inside the region in A's direction, kept.
    # image 1: ratio e^0.3 too; its pixel 0 has A > 0: outside, cut.
    logp = torch.tensor([[[0.2, 0.4]], [[0.4, 0.2]]], requires_grad=True)
    loss, stats = algo.loss(logp, old, adv, num_channels=1)
    assert float(loss.detach()) == pytest.approx((math.exp(0.2) / 2 + 0.0) / 2, rel=1e-6)
    loss.backward()
    expected = torch.tensor([[[math.exp(0.2) / 2 / 2, 0.0]], [[0.0, 0.0]]])  # d/dlogp of A r_p / (C h w) / B
    torch.testing.assert_close(logp.grad, expected)
    assert stats["clipfrac"] == 1.0


@pytest.mark.parametrize(
    "name",
    [
        "benchmarks.suite.peers.flow_grpo:FlowGRPO",
        "benchmarks.suite.peers.flow_grpo:FlowGRPOFast",
        "benchmarks.suite.peers.dense_flow_grpo:DenseFlowGRPO",
    ],
)
def test_each_peer_trains_by_import_path(tiny_model_dir, tmp_path, name):
    from agents.runs import train

    assert resolve_algorithm(name).name
    history = train(tiny_config(tiny_model_dir, tmp_path, algo=name, num_epochs=2))
    assert len(history) == 2 and history[-1]["loss"] == history[-1]["loss"]
