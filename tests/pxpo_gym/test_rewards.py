"""Reward library: hand-worked values, file loading, and checked outputs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from pxpo_gym.rewards import Reward, jpeg_sizes_kb, make_reward
from pxpo_gym.shapes import generate_shapes


def _images(*rgb):
    return torch.tensor(rgb, dtype=torch.float32)[:, :, None, None].expand(-1, 3, 2, 2).clone()


def test_color_reward_hand_worked():
    reward = make_reward("color", target=(1.0, 0.0, 0.0))
    out = reward(_images((1, 0, 0), (0, 1, 1), (1, 1, 0)), torch.zeros(3, dtype=torch.long))
    # exact target -> 1; opposite corner -> 0; distance 1 -> 1 - 1/sqrt(3)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, 0.0, 1 - 1 / math.sqrt(3)]))
    assert out.shape == (3, 2, 2)


def test_color_reward_accepts_names():
    red = make_reward("color", target="red")(_images((1, 0, 0)), torch.zeros(1, dtype=torch.long))
    assert torch.allclose(red, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="target"):
        make_reward("color", target="not-a-colour")


def test_target_map_with_png_weights(tmp_path):
    weights = np.zeros((2, 2), dtype=np.uint8)
    weights[0] = 255  # only the top row counts
    Image.fromarray(weights).save(tmp_path / "w.png")
    reward = make_reward("target_map", target=(0, 0, 1), weights=tmp_path / "w.png")
    out = reward(_images((0, 0, 1)), torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_target_map_signed_weights_and_target_image():
    target = torch.zeros(3, 2, 2)
    target[1] = 1.0  # green everywhere
    weights = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    out = make_reward("target_map", target=target, weights=weights)(
        _images((0, 1, 0)), torch.zeros(1, dtype=torch.long)
    )
    torch.testing.assert_close(out[0], weights)


def test_target_map_size_mismatch_is_an_error():
    reward = make_reward("target_map", target="blue", weights=torch.ones(3, 3))
    with pytest.raises(ValueError, match="weights has size"):
        reward(_images((0, 0, 0)), torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("weights", [None, torch.ones(2, 2)])
def test_target_map_without_a_target_is_refused(weights):
    """Before, a missing target fell back to red: the reward was ``color``'s without a word."""
    with pytest.raises(
        ValueError, match=r"reward='target_map' needs a target, got target=None: pass a colour"
    ):
        make_reward("target_map", weights=weights)
    with pytest.raises(ValueError, match="needs a target"):
        make_reward(["target_map:0.5", "color:0.5"])  # a component too


def test_segmentation_reward_on_true_data_is_accurate():
    batch = generate_shapes(64, 16, generator=torch.Generator().manual_seed(123))
    probs = make_reward("segmentation")(batch.images, batch.labels)
    # Pixels of the conditioned shape should score high, background low.
    inside = probs[batch.masks].mean().item()
    outside = probs[~batch.masks].mean().item()
    assert inside > 0.9 and outside < 0.1, (inside, outside)


def test_segmentation_reward_fixed_class_by_name():
    batch = generate_shapes(
        8, 16, generator=torch.Generator().manual_seed(5), labels=torch.ones(8, dtype=torch.long)
    )
    square = make_reward("segmentation", target_class="square")(
        batch.images, torch.zeros(8, dtype=torch.long)
    )
    circle = make_reward("segmentation", target_class="circle")(
        batch.images, torch.zeros(8, dtype=torch.long)
    )
    assert square[batch.masks].mean() > 0.9 > 0.1 > circle[batch.masks].mean()
    with pytest.raises(ValueError, match="target_class"):
        make_reward("segmentation", target_class="hexagon")


def test_jpeg_compressibility_prefers_flat_images():
    flat = torch.full((1, 3, 16, 16), 0.5)
    noisy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sizes = jpeg_sizes_kb(torch.cat([flat, noisy]))
    assert sizes[0] < sizes[1]
    comp = make_reward("jpeg_compressibility")(torch.cat([flat, noisy]), torch.zeros(2, dtype=torch.long))
    assert comp.shape == (2, 16, 16)  # scalars broadcast to constant maps
    torch.testing.assert_close(comp[:, 0, 0], -sizes)
    incomp = make_reward("jpeg_incompressibility")(flat, torch.zeros(1, dtype=torch.long))
    assert incomp[0, 0, 0] == sizes[0]


def test_user_callable_and_module_function():
    reward = make_reward(lambda images, contexts: images[:, 0])
    assert reward(_images((0.3, 0, 0)), torch.zeros(1, dtype=torch.long))[0, 0, 0].item() == pytest.approx(
        0.3
    )
    imported = make_reward("pxpo_gym.rewards:color_reward", target=(0, 0, 0))
    assert imported(_images((0, 0, 0)), torch.zeros(1, dtype=torch.long)).min().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda images, contexts: images.mean(dim=(1, 2, 3))[:, None], "returned shape"),
        (lambda images, contexts: torch.full(images.shape[:1], float("nan")), "non-finite"),
        (lambda images, contexts: images[:, 0] / 0.0, "non-finite"),
        (lambda images, contexts: [1.0], "must return a torch.Tensor"),
    ],
)
def test_bad_reward_outputs_name_the_reward(fn, message):
    fn.__name__ = "my_reward"
    # The message names the reward and says what was wrong with its output.
    with pytest.raises(ValueError, match=f"reward 'my_reward'.*{message}"):
        make_reward(fn)(_images((0.5, 0.5, 0.5)), torch.zeros(1, dtype=torch.long))


def test_unknown_reward_and_bad_options():
    with pytest.raises(ValueError, match="not a built-in reward"):
        make_reward("aesthetic")
    with pytest.raises(ValueError, match="bad options"):
        make_reward("color", colour=(1, 0, 0))
    with pytest.raises(ValueError, match="cannot import"):
        make_reward("no_such_module:fn")
    with pytest.raises(TypeError):
        make_reward(3)
    assert isinstance(make_reward(make_reward("brightness")), Reward)


# -- weighted rewards ---------------------------------------------------------


def test_weighted_reward_is_the_weighted_sum_of_its_components():
    from pxpo_gym.rewards import WeightedReward, color_reward

    images = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    contexts = torch.zeros(3, dtype=torch.int64)
    blue = make_reward("color", target="blue")(images, contexts)
    bright = images.mean(dim=1)
    for spec in (
        ["color:0.25", "brightness:-2"],
        {"color": 0.25, "brightness": -2},
        [("color", 0.25), "brightness:-2"],
    ):
        reward = make_reward(spec, color={"target": "blue"})
        assert isinstance(reward, WeightedReward) and reward.names == ["color", "brightness"]
        total, parts = reward.parts(images, contexts)
        torch.testing.assert_close(total, 0.25 * blue - 2 * bright)
        torch.testing.assert_close(parts["color"], blue)
        torch.testing.assert_close(reward(images, contexts), total)
    # by hand on one pixel: pure white, colour target red: closeness 1 - sqrt(2)/sqrt(3), brightness 1
    white = torch.ones(1, 3, 1, 1)
    hand = 0.5 * (1 - (2 / 3) ** 0.5) + 0.5 * 1.0
    assert make_reward(["color:0.5", "brightness:0.5"])(white, contexts[:1]).item() == pytest.approx(hand)
    # one plain name in a list is that reward itself; one weighted name is a weighted reward of one
    assert not isinstance(make_reward(["brightness"]), WeightedReward)
    assert make_reward("brightness:3")(white, contexts[:1]).item() == pytest.approx(3.0)
    # two settings of one reward, as named Reward objects
    two = make_reward(
        [(Reward(color_reward("red"), "red"), 1.0), (Reward(color_reward("blue"), "blue"), 1.0)]
    )
    assert two.names == ["red", "blue"]


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ([], {}, "empty list"),
        (["color", "color:2"], {}, "given twice"),
        (["color:nan"], {}, "finite number"),
        (["color:0.5", "brightness:0.5"], {"target": "blue"}, "keyed by reward name"),
        (["color:0.5", "brightness:0.5"], {"color": "blue"}, r"reward_kwargs\['color'\] must be a dict"),
        (["color:0.5", "nosuch:0.5"], {}, "not a built-in reward"),
        ([3.5], {}, "each reward of a list"),
        ({"color": "heavy"}, {}, "finite number"),
    ],
)
def test_bad_weighted_rewards_are_refused(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_reward(spec, **kwargs)


def test_module_function_specs_keep_their_colon():
    from pxpo_gym.rewards import split_weight

    assert split_weight("pkg.mod:fn") == ("pkg.mod:fn", None)
    assert split_weight("pkg.mod:fn:0.5") == ("pkg.mod:fn", 0.5)
    assert split_weight("color:-1e-1") == ("color", -0.1)
    assert split_weight("myrewards:score") == ("myrewards:score", None)  # a top-level user module


@pytest.mark.parametrize(
    "spec, message",
    [
        ("color:1:2", "too many ':'"),  # was read as 'color:1' weighted 2
        ("color:abc", "must be a number, got 'abc'"),  # was "No module named 'color'"
        ("color:0", "other than 0"),  # was accepted silently
        ("color:nan", "finite"),
        ("pkg.mod:fn:x", "must be a number"),
        ("pkg.mod:fn:1:2", "too many ':'"),
    ],
)
def test_malformed_reward_specs_are_refused_with_the_spec_named(spec, message):
    from agents.config import TrainConfig
    from pxpo_gym.rewards import split_weight

    with pytest.raises(ValueError, match=re.escape(message)) as err:
        split_weight(spec)
    assert repr(spec) in str(err.value)
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.of(reward=(spec,))  # refused when the config is parsed, before anything loads


def test_env_reports_each_component_and_pxpo_trains_on_the_weighted_map(tiny_model_dir, tmp_path):
    from agents.metrics import read_metrics
    from agents.runs import train
    from agents.trainer import Trainer
    from tests.agents.test_agents import tiny_config

    config = tiny_config(tiny_model_dir, tmp_path, reward=("color:0.3", "brightness:0.7"), num_epochs=2)
    trainer = Trainer(config)
    traj = trainer.sample()
    images = traj.images
    color = make_reward("color")(images, traj.contexts)
    bright = images.mean(dim=1)
    torch.testing.assert_close(traj.image_reward_maps, 0.3 * color + 0.7 * bright)  # PXPO's per-pixel map
    torch.testing.assert_close(
        traj.component_rewards, torch.stack([color.mean((1, 2)), bright.mean((1, 2))], 1)
    )
    torch.testing.assert_close(traj.rewards, traj.component_rewards @ torch.tensor([0.3, 0.7]))
    train(config)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 2
    for row in rows:  # each component's mean is its own column
        assert row["reward_mean"] == pytest.approx(
            0.3 * row["reward_color"] + 0.7 * row["reward_brightness"], rel=1e-5
        )


def test_cli_takes_repeated_weighted_rewards():

    from agents.config import TrainConfig
    from pxpo_gym.cli import parse

    config = parse(TrainConfig, ["--reward", "color:0.5", "--reward", "segmentation:0.5"], sections=True)
    assert config.env.reward == ("color:0.5", "segmentation:0.5")
    assert parse(TrainConfig, [], sections=True).env.reward == ("color",)
    assert TrainConfig.of(reward="brightness").env.reward == ("brightness",)
    with pytest.raises(ValueError, match="finite number"):
        TrainConfig.of(reward=("color:inf",))
