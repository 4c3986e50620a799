"""The breadth suite's rewards (pxpo_gym.suite_rewards) by hand on tiny images, and the task split."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.suite.tasks import FAMILIES, TASKS, split_tasks
from pxpo_gym.rewards import make_reward

SIG_BG = 1 / (1 + math.exp(6.0))
"""``foreground`` of a pixel exactly the background colour: sigmoid((0 - 0.3) / 0.05)."""
RED, BLUE, BLACK = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)
CLOSE_BLACK_RED = 1 - 1 / math.sqrt(3)  # black vs red: distance 1
CLOSE_BLUE_RED = 1 - math.sqrt(2) / math.sqrt(3)


def flat(color, height=8, width=8) -> torch.Tensor:
    """(1, 3, H, W) of one colour."""
    return torch.tensor(color, dtype=torch.float32)[None, :, None, None].expand(1, 3, height, width).clone()


def square_on(background, color, rows, cols, size=8) -> torch.Tensor:
    """A ``color`` block (rows, cols slices) on a flat ``background``."""
    image = flat(background, size, size)
    image[0, :, rows, cols] = torch.tensor(color)[:, None, None]
    return image


CTX = torch.zeros(1, dtype=torch.int64)


def score(name: str, images: torch.Tensor, **kwargs) -> torch.Tensor:
    return make_reward(name, **kwargs)(images, torch.zeros(len(images), dtype=torch.int64))


def test_blurred_color_by_hand():
    image = square_on(BLACK, RED, slice(1, 2), slice(1, 2), size=5)  # one red pixel at (1, 1)
    out = score("blurred_color", image, target="red", size=3)[0]
    with_red = (8 * CLOSE_BLACK_RED + 1) / 9
    # (0, 0)'s box, edges replicated, holds (1, 1) once; (4, 4)'s box holds no red pixel.
    assert out[0, 0].item() == pytest.approx(with_red) and out[1, 1].item() == pytest.approx(with_red)
    assert out[2, 2].item() == pytest.approx(with_red) and out[3, 3].item() == pytest.approx(CLOSE_BLACK_RED)
    assert out[4, 4].item() == pytest.approx(CLOSE_BLACK_RED)


def test_frame_scores_the_border_and_exactly_zero_inside():
    out = score("frame", flat((0.0, 128 / 255, 0.0), 16, 16), target="green")[0]  # matplotlib's green
    assert int((out != 0).sum()) == 16 * 16 - 10 * 10  # a 3-pixel band
    assert out[:3].min().item() == pytest.approx(1.0) and bool((out[3:13, 3:13] == 0).all())


def test_shape_and_background_color_by_hand():
    image = square_on(BLUE, RED, slice(3, 5), slice(3, 5))
    shape = score("shape_color", image, target="red")[0]
    assert shape[3, 3].item() == pytest.approx(1.0, abs=1e-6)  # the shape, red: foreground 1
    assert shape[0, 0].item() == pytest.approx(SIG_BG * CLOSE_BLUE_RED, rel=1e-4)
    background = score("background_color", image, target="blue")[0]
    assert background[0, 0].item() == pytest.approx(1 - SIG_BG, rel=1e-5)
    assert background[3, 3].item() == pytest.approx(0.0, abs=1e-6)
    # Painting everything red scores (almost) nothing: the border is red too, no pixel stands out.
    assert score("shape_color", flat(RED), target="red").max().item() == pytest.approx(SIG_BG, rel=1e-4)


def test_gated_shape_by_hand():
    image = square_on(BLUE, RED, slice(3, 5), slice(3, 5))  # 4 / 64 of the area is shape
    out = score("gated_shape", image, gate=0.05)[0]
    assert out[3, 3].item() == pytest.approx(1.0, abs=1e-6) and out[0, 0].item() == pytest.approx(
        1.0, abs=1e-2
    )
    # A flat blue image: the gate is mean(foreground) / 0.05 at every pixel.
    gate = SIG_BG / 0.05
    expected = gate * (SIG_BG * CLOSE_BLUE_RED + (1 - SIG_BG) * 1.0)
    assert score("gated_shape", flat(BLUE), gate=0.05)[0, 0, 0].item() == pytest.approx(expected, rel=1e-4)
    # The same square on a larger image falls below the gate: 4 / 256 of the area < 0.05.
    small = score("gated_shape", square_on(BLUE, RED, slice(3, 5), slice(3, 5), size=16), gate=0.05)
    area = (4 * 1.0 + 252 * SIG_BG) / 256
    assert small[0, 3, 3].item() == pytest.approx(area / 0.05, rel=1e-3)


def test_color_budget_by_hand():
    assert score("color_budget", flat(RED), budget=0.6, penalty=3.0).unique().item() == pytest.approx(-0.2)
    black = score("color_budget", flat(BLACK), budget=0.6, penalty=3.0)
    assert black.unique().item() == pytest.approx(CLOSE_BLACK_RED)  # under the budget: no penalty


def test_symmetry_by_hand():
    image = torch.zeros(1, 3, 2, 4)
    image[..., :2] = 1.0  # left half white, right half black: every pixel unlike its mirror
    assert bool((score("symmetry", image) == 0).all())
    image = torch.rand(1, 3, 2, 4)
    image = torch.cat([image[..., :2], image[..., :2].flip(dims=(3,))], dim=3)
    image[0, 1, 0, 0] += 0.3 if image[0, 1, 0, 0] < 0.5 else -0.3  # one channel of one pixel
    out = score("symmetry", image)[0]
    assert out[0, 0].item() == pytest.approx(0.9) and out[0, 3].item() == pytest.approx(0.9)
    assert out[1].tolist() == pytest.approx([1.0] * 4)


def test_shape_position_by_hand():
    # A 2 x 2 shape centred on column 3 of 10 (x = 0.3) and row 5 (y = 0.5): distance 0, reward 1 on the
    # shape. The background's faint foreground pulls the centroid a little towards the middle.
    image = square_on(BLUE, RED, slice(4, 6), slice(2, 4), size=10)
    out = score("shape_position", image, x=0.3, y=0.5)[0]
    weights = torch.full((10, 10), SIG_BG)
    weights[4:6, 2:4] = 1.0
    cols = (torch.arange(10) + 0.5) / 10
    cx = float((weights * cols[None]).sum() / weights.sum())
    cy = float((weights * cols[:, None]).sum() / weights.sum())
    expected = 1 - 2 * math.hypot(cx - 0.3, cy - 0.5)
    assert out[4, 2].item() == pytest.approx(expected, rel=1e-3) and expected > 0.9
    assert out[0, 0].item() == pytest.approx(SIG_BG * expected, rel=1e-3)
    far = score("shape_position", image, x=1.0, y=0.0)[0]  # centroid 0.78 away: floored at 0
    assert bool((far == 0).all())


def test_contrast_and_ramp_by_hand():
    image = torch.zeros(1, 3, 2, 2)
    image[..., 0, :] = 1.0  # two white, two black pixels
    assert score("contrast", image).unique().item() == pytest.approx(math.sqrt(1 / 3))
    grey = score("gradient_target", torch.full((1, 3, 1, 3), 0.5))[0, 0]
    assert grey.tolist() == pytest.approx([0.5, 1.0, 0.5])  # ramp black, grey, white


def test_segmentation_class_offset_wants_the_next_class():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    contexts = torch.tensor([0, 3])
    offset = make_reward("segmentation", target_class="context", class_offset=1)(images, contexts)
    square = make_reward("segmentation", target_class="square")(images, contexts)  # class 1
    circle = make_reward("segmentation", target_class="circle")(images, contexts)  # class 0
    assert torch.equal(offset[0], square[0]) and torch.equal(offset[1], circle[1])


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("blurred_color", {"size": 4}, "size must be an odd int >= 3, got size=4"),
        ("frame", {"width_fraction": 0.7}, "width_fraction must be a number in"),
        ("gated_shape", {"gate": 0.0}, "gate must be a number in"),
        ("color_budget", {"budget": 1.5}, "budget must be a number in"),
        ("color_budget", {"penalty": -1.0}, "penalty must be a finite number > 0"),
        ("shape_position", {"x": 2.0}, "x must be a number in"),
        ("segmentation", {"target_class": "square", "class_offset": 1}, "applies only to target_class"),
    ],
)
def test_suite_rewards_refuse_bad_options(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_reward(name, **kwargs)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_scores_the_default_models_size_with_the_flags_it_declares(task):
    spec = TASKS[task]
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = make_reward(spec.reward, **spec.reward_kwargs)(images, torch.tensor([0, 1, 2]))
    assert out.shape == (3, 16, 16) and bool(torch.isfinite(out).all())
    varies = bool((out.flatten(1).std(dim=1) > 0).any())
    assert varies == spec.per_pixel, "per_pixel says whether the map varies over pixels"
    assert out.requires_grad == spec.differentiable


def test_the_split_is_fixed():
    # Defaults are chosen on the train split and reported on the test split: a task that moves, or a new
    # task, must be a deliberate change of this test.
    assert split_tasks("train") == (
        "color", "target_map", "blurred_red", "region", "shape_red", "gated_shape", "symmetry",
        "segmentation", "jpeg",
    )  # fmt: skip
    assert split_tasks("test") == (
        "ramp", "blurred_dark5", "frame", "background_white", "red_budget", "shape_left",
        "segmentation_next", "contrast",
    )  # fmt: skip
    for family in FAMILIES:  # every family on both sides
        for split in ("train", "test"):
            assert any(t.family == family and t.split == split for t in TASKS.values()), (family, split)
    with pytest.raises(ValueError, match="split must be one of"):
        split_tasks("validation")
