"""GRPO-style group advantages: balanced contexts, normalisation within this epoch's group only."""

from __future__ import annotations

import pytest
import torch

from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config


def _group_config(tiny_model_dir, tmp_path, **overrides):
    # the tiny model has 3 contexts: 3 groups of 4 images per epoch
    base = dict(group_size=4, sample_batch_size=12, train_batch_size=12)
    return tiny_config(tiny_model_dir, tmp_path, **{**base, **overrides})


def test_every_context_gets_a_group(tiny_model_dir, tmp_path):
    trainer = Trainer(_group_config(tiny_model_dir, tmp_path))
    contexts = trainer.sample().contexts
    assert torch.bincount(contexts, minlength=3).tolist() == [4, 4, 4]


def test_group_advantages_by_hand(tiny_model_dir, tmp_path):
    algo = Trainer(_group_config(tiny_model_dir, tmp_path, algo="ddpo")).algo
    contexts = torch.tensor([0, 1, 2] * 4)
    rewards = torch.arange(12, dtype=torch.float32)  # context 0: 0, 3, 6, 9 (mean 4.5, std 3.354)
    adv = algo.advantages(rewards, torch.zeros(12, 8, 8), contexts)
    std = torch.tensor([0.0, 3.0, 6.0, 9.0]).std(unbiased=False)
    torch.testing.assert_close(adv[contexts == 0], (torch.tensor([0.0, 3.0, 6.0, 9.0]) - 4.5) / (std + 1e-6))
    # the next epoch's group replaces this one entirely: rewards 100 + x normalise like x
    again = algo.advantages(100 + rewards * 2, torch.zeros(12, 8, 8), contexts)
    torch.testing.assert_close(again, adv, atol=1e-5, rtol=0)


def test_pxpo_groups_are_per_pixel(tiny_model_dir, tmp_path):
    algo = Trainer(
        _group_config(tiny_model_dir, tmp_path, algo="pxpo", image_advantage_weight=0.0, credit="pixel")
    ).algo
    contexts = torch.tensor([0, 1, 2] * 4)
    maps = torch.zeros(12, 8, 8)
    maps[contexts == 1, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    adv = algo.advantages(maps.mean(dim=(1, 2)), maps, contexts)
    pooled = torch.tensor([1.0, 2.0, 3.0, 4.0]).std(unbiased=False) / 8  # one varying pixel of 64
    torch.testing.assert_close(
        adv[contexts == 1, 0, 0], ((torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / (pooled + 1e-6)).clamp(-5, 5)
    )
    assert adv[contexts == 0].abs().max() == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(group_size=1), "a group of one has no spread"),
        (dict(group_size=3), "needs 3 x 3 contexts = 9 images"),
    ],
)
def test_bad_groups_are_refused(tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        Trainer(_group_config(tiny_model_dir, tmp_path, **overrides))
