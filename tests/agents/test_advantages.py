"""PXPO's advantage options, by hand: pooled and floored std, hybrid image + pixel advantages."""

from __future__ import annotations

import pytest
import torch

from agents.advantages import ContextStats
from agents.algorithms.pxpo import PXPO, PXPOConfig

# Two images of one context, 1 x 2 pixels. Pixel 0 varies (0 and 2: mean 1, std 1);
# pixel 1 barely does (0.50 and 0.52: mean 0.51, std 0.01).
MAPS = torch.tensor([[[0.0, 0.50]], [[2.0, 0.52]]])
CONTEXTS = torch.tensor([0, 0])
# pooled std = sqrt((1^2 + 0.01^2) / 2) = 0.707142
POOLED = 0.7071421


def test_pixel_std_blows_up_a_pixel_that_barely_varies():
    adv = ContextStats(1, 4, 1, (1, 2), "pixel").update(CONTEXTS, MAPS)
    torch.testing.assert_close(adv[:, 0, 1], torch.tensor([-1.0, 1.0]), atol=1e-3, rtol=0)  # std 0.01 + 1e-6


def test_pooled_std_by_hand():
    adv = ContextStats(1, 4, 1, (1, 2), "pooled").update(CONTEXTS, MAPS)
    want = torch.tensor([[[-1.0, -0.01]], [[1.0, 0.01]]]) / POOLED
    torch.testing.assert_close(adv, want, atol=1e-5, rtol=0)


def test_floored_std_by_hand():
    adv = ContextStats(1, 4, 1, (1, 2), "floored").update(CONTEXTS, MAPS)
    # pixel 0 keeps its own std 1 (> pooled); pixel 1 is floored at the pooled std
    want = torch.tensor([[[-1.0, -0.01 / POOLED]], [[1.0, 0.01 / POOLED]]])
    torch.testing.assert_close(adv, want, atol=1e-5, rtol=0)


def test_hybrid_adds_the_image_advantage_by_hand():
    config = PXPOConfig(
        stat_buffer_size=4, stat_min_count=1, pixel_std="pooled", image_advantage_weight=0.5, credit="pixel"
    )
    algo = PXPO(config, 1, (1, 2))
    rewards = torch.tensor([0.25, 1.26])  # image means of MAPS: mean 0.755, std 0.505
    adv = algo.advantages(rewards, MAPS, CONTEXTS)
    pixel = torch.tensor([[[-1.0, -0.01]], [[1.0, 0.01]]]) / POOLED
    image = torch.tensor([-1.0, 1.0])  # (0.25 - 0.755) / 0.505 and its mirror
    torch.testing.assert_close(adv, pixel + 0.5 * image[:, None, None], atol=1e-5, rtol=0)
    # the image statistics are checkpointed with the pixel ones
    state = algo.state_dict()
    fresh = PXPO(config, 1, (1, 2))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.image_stats.buffer, algo.image_stats.buffer)


def test_hybrid_advantages_are_clipped():
    config = PXPOConfig(
        stat_buffer_size=4, stat_min_count=1, image_advantage_weight=10.0, adv_clip_max=2.0, credit="pixel"
    )
    adv = PXPO(config, 1, (1, 2)).advantages(torch.tensor([0.25, 1.26]), MAPS, CONTEXTS)
    assert adv.abs().max().item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(pixel_std="median"), "pixel_std must be one of"), (dict(image_advantage_weight=-1.0), ">= 0")],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PXPOConfig(**kwargs)


def test_silent_needs_two_values_per_context_and_looks_at_every_context():
    # Context 0 has one value (no silence decided), context 1 exactly two: its constant pixel is silent.
    stats = ContextStats(num_contexts=2, buffer_size=4, min_count=2, value_shape=(1, 2))
    stats.update(torch.tensor([0, 1, 1]), torch.tensor([[[0.5, 0.5]], [[0.0, 0.3]], [[1.0, 0.3]]]))
    silent = stats.silent(1e-3)
    assert silent.dtype == torch.bool and silent.shape == (2, 1, 2)
    assert silent.tolist() == [[[False, False]], [[False, True]]]


def test_stats_state_round_trips_and_refuses_the_wrong_shape():
    stats = ContextStats(2, 4, 2, (1, 2))
    stats.update(torch.tensor([0, 0, 1]), torch.rand(3, 1, 2))
    copy = ContextStats(2, 4, 2, (1, 2))
    copy.load_state_dict(stats.state_dict())
    batch = torch.rand(2, 1, 2)
    torch.testing.assert_close(
        copy.update(torch.tensor([0, 1]), batch), stats.update(torch.tensor([0, 1]), batch)
    )
    assert torch.equal(copy.count, stats.count)
    with pytest.raises(ValueError, match=r"stat buffer shape \(2, 4, 1, 3\) does not match \(2, 4, 1, 2\)"):
        copy.load_state_dict(ContextStats(2, 4, 2, (1, 3)).state_dict())


def test_context_stats_settings_boundaries_and_messages():
    ContextStats(1, 1, 1)  # the smallest buffer: one value, used from the first
    assert ContextStats(2, 4, 2).count.dtype == torch.int64
    message = "need buffer_size >= 1 and 1 <= min_count <= buffer_size, got buffer_size={}, min_count={}"
    for size, count in ((0, 1), (4, 5), (4, 0)):
        with pytest.raises(ValueError) as caught:
            ContextStats(1, size, count)
        assert str(caught.value) == message.format(size, count)
    with pytest.raises(ValueError) as caught:
        ContextStats(1, 4, 2, (1, 2), "median")
    assert (
        str(caught.value) == "std_mode must be one of ('pixel', 'pooled', 'floored'), got std_mode='median'"
    )


def test_batch_statistics_are_per_pixel_until_a_context_has_min_count():
    # min_count 8 > batch: the batch's own per-pixel mean and pooled std normalise it. Pixel 0: 0, 2
    # (mean 1); pixel 1: 10, 10 (mean 10). Pooled std = sqrt((1 + 0) / 2).
    stats = ContextStats(1, 8, 8, (1, 2), "pooled")
    adv = stats.update(torch.tensor([0, 0]), torch.tensor([[[0.0, 10.0]], [[2.0, 10.0]]]))
    pooled = (0.5**0.5) + 1e-6
    torch.testing.assert_close(adv, torch.tensor([[[-1 / pooled, 0.0]], [[1 / pooled, 0.0]]]))


def test_counts_accumulate_over_updates():
    # One value per update; from the second on the context has min_count = 2 of its own.
    stats = ContextStats(1, 4, 2)
    stats.update(torch.tensor([0]), torch.tensor([1.0]))
    adv = stats.update(torch.tensor([0]), torch.tensor([3.0]))  # own buffer [1, 3]: mean 2, std 1
    assert int(stats.count[0]) == 2
    assert adv.item() == pytest.approx(1.0, abs=1e-5)


def test_pooled_std_of_a_one_dimensional_value():
    stats = ContextStats(1, 4, 1, (2,), "pooled")
    adv = stats.update(torch.tensor([0, 0]), torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    # per-element std (1, 0), pooled sqrt(1 / 2): element 0's advantages are +-1 / 0.7071
    torch.testing.assert_close(adv[:, 0], torch.tensor([-1.0, 1.0]) / (0.5**0.5 + 1e-6))


def test_silence_is_relative_to_the_pooled_std_and_a_constant_map_is_silent_everywhere():
    # Pixel 0 std 10, pixel 1 std 0.5: pooled 7.08, so at tolerance 0.1 pixel 1 (0.5 <= 0.708) is silent.
    stats = ContextStats(2, 4, 2, (1, 2))
    stats.update(torch.tensor([0, 0]), torch.tensor([[[0.0, 5.0]], [[20.0, 6.0]]]))
    stats.update(torch.tensor([1, 1]), torch.full((2, 1, 2), 0.3))  # never varies: nothing is scored
    assert stats.silent(0.1).tolist() == [[[False, True]], [[True, True]]]
