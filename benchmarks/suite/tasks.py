"""The benchmark tasks: a reward (built-in name and options) each, on the default model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


FAMILIES = (
    "pixel-local",
    "near-local",
    "partial",
    "content-dependent",
    "interacting",
    "relational",
    "learned",
    "scalar",
)
"""What each family assumes of a reward (the tags of ``Task.family``):

- pixel-local: a pixel's reward depends on that pixel alone (PXPO's premise);
- near-local: on a small neighbourhood (a smoothed per-pixel reward);
- partial: a scored part and a part the reward never looks at;
- content-dependent: which pixels are scored, and for what, depends on the image;
- interacting: per-pixel rewards coupled through one image-level number (a gate, a budget);
- relational: a pixel's reward depends on pixels far from it (a mirror, the shape's centroid);
- learned: a network's per-pixel output (segmentation);
- scalar: one number per image (JPEG size, contrast).
"""
SPLITS = ("train", "test")
"""Every default is chosen on the train split's tasks; the test split is run once, at the end, and
reported as it comes out. Every family has a task on each side."""


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        name: short id used in folders, plots and tables.
        reward: built-in reward name.
        reward_kwargs: options of the reward.
        per_pixel: whether the reward map varies over pixels (PXPO's premise).
        differentiable: whether the reward has a gradient w.r.t. the image (the exact-gradient
            oracle runs only then).
        description: one line for the summary.
        family: one of FAMILIES.
        split: 'train' (defaults may be chosen on it) or 'test' (never tuned on).
    """

    name: str
    reward: str
    reward_kwargs: dict
    per_pixel: bool
    differentiable: bool
    description: str
    family: str
    split: str

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"task {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.split not in SPLITS:
            raise ValueError(f"task {self.name!r}: split must be one of {SPLITS}, got {self.split!r}")

    @property
    def reward_kwargs_json(self) -> str:
        return json.dumps(self.reward_kwargs)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        # -- train split: defaults are chosen on these -------------------------------------------------
        Task(
            "color",
            "color",
            {"target": "red"},
            True,
            True,
            "every pixel close to red (the PXPO paper's colour task)",
            "pixel-local",
            "train",
        ),
        Task(
            "target_map",
            "target_map",
            {"target": str(ASSETS / "two_tone_target.png")},
            True,
            True,
            "painted feedback: left half yellow, right half blue (target image)",
            "pixel-local",
            "train",
        ),
        Task(
            "blurred_red",
            "blurred_color",
            {"target": "red", "size": 3},
            True,
            True,
            "redness averaged over each pixel's 3 x 3 neighbourhood",
            "near-local",
            "train",
        ),
        Task(
            "region",
            "target_map",
            {"target": "blue", "weights": str(ASSETS / "left_half_weights.png")},
            True,
            True,
            "left half close to blue; the right half is silent (scores 0 whatever it shows)",
            "partial",
            "train",
        ),
        Task(
            "shape_red",
            "shape_color",
            {"target": "red"},
            True,
            True,
            "the shape's pixels red (told from the background by the border's colour); background ~0",
            "content-dependent",
            "train",
        ),
        Task(
            "gated_shape",
            "gated_shape",
            {"shape": "red", "background": "blue", "gate": 0.05},
            True,
            True,
            "shape red, background blue, every pixel scaled by min(1, shape area / 0.05): a flat image scores 0",
            "interacting",
            "train",
        ),
        Task(
            "symmetry",
            "symmetry",
            {},
            True,
            True,
            "each pixel like its mirror pixel across the vertical midline",
            "relational",
            "train",
        ),
        Task(
            "segmentation",
            "segmentation",
            {"target_class": "context"},
            True,
            True,
            "per-pixel probability of the conditioned shape (segmentation network)",
            "learned",
            "train",
        ),
        Task(
            "jpeg",
            "jpeg_compressibility",
            {},
            False,
            False,
            "global: minus JPEG size in kB (no per-pixel structure: PXPO has no edge)",
            "scalar",
            "train",
        ),
        # -- test split: run once with the defaults chosen above, reported as it comes out -------------
        Task(
            "ramp",
            "gradient_target",
            {"dark": "black", "light": "white"},
            True,
            True,
            "every pixel close to a grey ramp, black on the left to white on the right",
            "pixel-local",
            "test",
        ),
        Task(
            "blurred_dark5",
            "blurred_color",
            {"target": "black", "size": 5},
            True,
            True,
            "darkness averaged over each pixel's 5 x 5 neighbourhood",
            "near-local",
            "test",
        ),
        Task(
            "frame",
            "frame",
            {"target": "green", "width_fraction": 0.1875},
            True,
            True,
            "a 3-pixel frame close to green; the inside is silent (scores 0 whatever it shows)",
            "partial",
            "test",
        ),
        Task(
            "background_white",
            "background_color",
            {"target": "white"},
            True,
            True,
            "the background's pixels white (told from the shape by the border's colour); shape ~0",
            "content-dependent",
            "test",
        ),
        Task(
            "red_budget",
            "color_budget",
            {"target": "red", "budget": 0.6, "penalty": 3.0},
            True,
            True,
            "redness at every pixel minus 3 x the image's mean redness beyond 0.6 (best: exactly 0.6 red)",
            "interacting",
            "test",
        ),
        Task(
            "shape_left",
            "shape_position",
            {"x": 0.3, "y": 0.5},
            True,
            True,
            "shape pixels scored by how close the shape's centroid is to (0.3, 0.5) of the image",
            "relational",
            "test",
        ),
        Task(
            "segmentation_next",
            "segmentation",
            {"target_class": "context", "class_offset": 1},
            True,
            True,
            "per-pixel probability of the next shape class (a circle asked to become a square)",
            "learned",
            "test",
        ),
        Task(
            "contrast",
            "contrast",
            {},
            False,
            True,
            "global: the std of the image's luminance (one number per image)",
            "scalar",
            "test",
        ),
    )
}
"""Every task of the benchmarks. The breadth suite runs them all; the other presets name theirs."""


def split_tasks(split: str) -> tuple[str, ...]:
    """The names of the tasks in ``split`` ('train' or 'test'), in TASKS' order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got split={split!r}")
    return tuple(name for name, task in TASKS.items() if task.split == split)
