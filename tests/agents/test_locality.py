"""A reward's locality (agents.credit.reward_locality) and the credit 'auto' chooses from it."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.checkpoint import load_checkpoint
from agents.runs import train
from tests.agents.test_agents import tiny_config
from tests.agents.toy_rewards import (
    tiny_core,
)

A = torch.arange(16, dtype=torch.float32).view(1, 4, 4) - 7.5  # one 4x4 advantage map


def test_reward_locality_by_hand(tiny_model_dir):
    from agents.credit import reward_locality

    def locality(reward):
        return reward_locality(tiny_core(tiny_model_dir, reward))

    assert locality("color") == 1.0  # a pixel's redness is its own
    # The 3x3 box mean moves the k in-image cells around the changed pixel by the same amount: a share of
    # 1/k per probe, k = 9 inside, 6 on an edge, 4 in a corner (rows and columns swapped would miss it).
    box = locality("tests.agents.toy_rewards:box_brightness")
    assert 1 / 9 <= box <= 1 / 4
    assert (
        abs(locality("tests.agents.toy_rewards:mean_red_reward") - 1 / 64) < 1e-6
    )  # one score for the 8x8 image
    assert (
        locality("tests.agents.toy_rewards:right_neighbour_brightness") == 0.0
    )  # only its left neighbour moves
    assert (
        locality("tests.agents.toy_rewards:gated_reward") == 1.0
    )  # never responds: the paper's rule is kept


def test_reward_locality_seed_and_probes(tiny_model_dir):
    from agents.credit import reward_locality

    core = tiny_core(tiny_model_dir, "tests.agents.toy_rewards:box_brightness")
    # The default is seed 0 (what every run's RUN/credit.json records); another seed draws other cells.
    assert reward_locality(core) == reward_locality(core, seed=0) != reward_locality(core, seed=1)
    assert 1 / 9 <= reward_locality(core, probes=1) <= 1 / 4  # one probe per context is allowed
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match=f"^probes must be an int >= 1, got probes={bad}$"):
            reward_locality(core, probes=bad)


def test_committed_segmentation_locality_reproduces():
    """The shipped segmentation net's locality at measurement seed 0 is the committed one the default's choice
    rests on (benchmarks/results/locality/locality.json): a reward that judges a pixel by its neighbours, so the share
    depends on how far each probe moves its cell (x -> 1 - x), not only on where the cell is."""
    import json
    from pathlib import Path

    from benchmarks.studies.locality import LocalityConfig, measure

    committed = json.loads(
        (Path(__file__).parents[2] / "benchmarks/results/locality/locality.json").read_text()
    )
    measured = measure(LocalityConfig(tasks=("segmentation",), seeds=(0,)))
    assert (
        measured["tasks"]["segmentation"]["locality"][0] == committed["tasks"]["segmentation"]["locality"][0]
    )


def test_offset_canvas_by_hand():
    from agents.credit import _offset_canvas

    values = torch.arange(12.0).view(1, 2, 2, 3)  # one image, 2 steps, a 2 x 3 map
    rows, cols = torch.tensor([1]), torch.tensor([0])
    # Indexed by the reward pixel q for the noise pixel p = (1, 0): q - p spans rows -1 ... 0, cols 0 ... 2,
    # i.e. canvas rows 0 ... 1 (offset + h - 1) and columns 2 ... 4 (offset + w - 1).
    canvas, seen = _offset_canvas(values, rows, cols, flip=False)
    assert canvas.shape == (1, 2, 3, 5) and seen.shape == (1, 1, 3, 5)
    expected = torch.zeros(1, 2, 3, 5)
    expected[0, :, 0:2, 2:5] = values[0]
    assert torch.equal(canvas, expected)
    mask = torch.zeros(1, 1, 3, 5)
    mask[0, 0, 0:2, 2:5] = 1.0
    assert torch.equal(seen, mask)
    # Indexed by the noise pixel p for the reward pixel q = (1, 0): o = q - p spans rows 0 ... 1, cols -2 ... 0,
    # the map flipped (p = (1, 0) is o = (0, 0) at canvas (1, 2); p = (0, 2) is o = (1, -2) at (2, 0)).
    canvas, seen = _offset_canvas(values, rows, cols, flip=True)
    expected = torch.zeros(1, 2, 3, 5)
    expected[0, :, 1:3, 0:3] = values[0].flip(-2, -1)
    assert torch.equal(canvas, expected)
    assert canvas[0, 0, 1, 2] == values[0, 0, 1, 0] and canvas[0, 0, 2, 0] == values[0, 0, 0, 2]
    mask = torch.zeros(1, 1, 3, 5)
    mask[0, 0, 1:3, 0:3] = 1.0
    assert torch.equal(seen, mask)


def test_reward_locality_on_a_latent_grid(tiny_sd_dir):
    from agents.credit import reward_locality

    def locality(reward):
        envs = gym.make_vec(
            "DiffusionDenoise-v0", num_envs=2, model=str(tiny_sd_dir), reward=reward, prompts=["a", "b"]
        )
        core = envs.unwrapped
        assert tuple(core.loaded.sample_shape[1:]) != tuple(core.loaded.image_size)  # a latent grid
        return reward_locality(core, probes=4), core.loaded.sample_shape[1:]

    share, (h, w) = locality("color")
    assert abs(share - 1.0) < 1e-6  # the cell's whole block of image pixels changes, and only its own reward
    share, (h, w) = locality("tests.agents.toy_rewards:mean_red_reward")
    assert abs(share - 1 / (h * w)) < 1e-6


def test_auto_credit_is_pixel_credit_where_local_and_image_credit_where_not():
    torch.manual_seed(0)
    rewards, maps, contexts = torch.rand(8), torch.rand(8, 4, 4), torch.tensor([0, 1] * 4)
    maps[:, 0, 0] = 0.25  # a silent pixel, under the penalty with per-pixel credit only

    def algo(credit, locality=None, **kw):
        out = PXPO(PXPOConfig(credit=credit, stat_min_count=2, **kw), 2, (4, 4))
        if locality is not None:
            out.set_locality(locality)
        return out

    with pytest.raises(RuntimeError, match="set_locality"):
        algo("auto").advantages(rewards, maps, contexts)
    assert algo("auto").needs_locality and not algo("pixel").needs_locality
    for locality, same_as in ((1.0, "pixel"), (0.5, "pixel"), (0.49, "image"), (0.0, "image")):
        auto, plain = algo("auto", locality), algo(same_as)
        assert auto.credit == same_as
        assert torch.equal(
            auto.advantages(rewards, maps, contexts), plain.advantages(rewards, maps, contexts)
        )
        silent = auto.silent_mask(contexts)
        assert bool(silent[:, 0, 0].all())
        penalised = auto.silent_weights(contexts)
        assert (penalised is None) == (same_as == "image")  # 'auto' drops the penalty with the image credit
    # An explicit image credit keeps the penalty it is given (the image5 arm of docs/results/segmentation.md).
    explicit = algo("image")
    explicit.advantages(rewards, maps, contexts)
    assert explicit.silent_weights(contexts) is not None
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="locality must be in"):
            algo("auto").set_locality(bad)


def test_auto_credit_trains_as_the_credit_it_chose_and_resumes_exactly(tiny_model_dir, tmp_path):
    import json

    def run(name, reward, **kw):
        config = tiny_config(tiny_model_dir, tmp_path, reward=(reward,), out=str(tmp_path / name), **kw)
        return train(config), config

    auto_local, _ = run("auto-local", "color", credit="auto")
    pixel, _ = run("pixel", "color", credit="pixel")
    assert [m["loss"] for m in auto_local] == [m["loss"] for m in pixel]
    chosen = json.loads((tmp_path / "auto-local" / "credit.json").read_text())
    assert chosen == {"credit": "auto", "locality": 1.0, "chosen": "pixel"}
    reward = "tests.agents.toy_rewards:box_brightness"  # a 3x3 receptive field: not pixel-local
    auto_global, config = run("auto-global", reward, credit="auto", save_every=1, num_epochs=3)
    image, _ = run("image", reward, credit="image", silent_kl_coef=0.0, num_epochs=3)
    box_pixel, _ = run("box-pixel", reward, credit="pixel", num_epochs=3)
    assert [m["loss"] for m in auto_global] == [m["loss"] for m in image]
    assert [m["loss"] for m in auto_global][1:] != [m["loss"] for m in box_pixel][1:]
    chosen = json.loads((tmp_path / "auto-global" / "credit.json").read_text())
    assert chosen["chosen"] == "image" and 1 / 9 <= chosen["locality"] <= 1 / 4
    # A resumed run takes the locality from its checkpoint and continues bit for bit.
    part = config.replace(out=str(tmp_path / "part"), num_epochs=1)
    train(part)
    tensors, _ = load_checkpoint(tmp_path / "part")
    assert float(tensors["stats/locality"]) == chosen["locality"]
    resumed = train(config.replace(out="", resume=str(tmp_path / "part")))
    assert resumed[-1]["loss"] == auto_global[-1]["loss"]


def test_reward_probes_score_in_batches_of_the_envs_size(tiny_model_dir):
    # A latent pipeline's reward sees full-size images: the probes must not score 32 x contexts at once.
    from agents.credit import reward_locality, reward_unscored

    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=3, model=str(tiny_model_dir), reward="color")
    core = envs.unwrapped
    sizes, score = [], core.reward_fn

    def recording(images, contexts):
        sizes.append(len(images))
        return score(images, contexts)

    core.reward_fn = recording
    assert reward_locality(core, probes=4) == 1.0
    assert max(sizes) == 3 and sum(sizes) == 2 * 4 * 3  # two passes over 4 probes x 3 contexts
    sizes.clear()
    assert not bool(reward_unscored(core, probes=4).any())
    assert max(sizes) == 3 and sum(sizes) == 4 * 3
