"""The benchmark tasks: a reward (built-in name and options) each, on the default model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


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
    """

    name: str
    reward: str
    reward_kwargs: dict
    per_pixel: bool
    differentiable: bool
    description: str

    @property
    def reward_kwargs_json(self) -> str:
        return json.dumps(self.reward_kwargs)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "color",
            "color",
            {"target": "red"},
            True,
            True,
            "every pixel close to red (the PXPO paper's colour task)",
        ),
        Task(
            "target_map",
            "target_map",
            {"target": str(ASSETS / "two_tone_target.png")},
            True,
            True,
            "painted feedback: left half yellow, right half blue (target image)",
        ),
        Task(
            "segmentation",
            "segmentation",
            {"target_class": "context"},
            True,
            True,
            "per-pixel probability of the conditioned shape (segmentation network)",
        ),
        Task(
            "region",
            "target_map",
            {"target": "blue", "weights": str(ASSETS / "left_half_weights.png")},
            True,
            True,
            "left half close to blue; the right half is silent (scores 0 whatever it shows)",
        ),
        Task(
            "jpeg",
            "jpeg_compressibility",
            {},
            False,
            False,
            "global: minus JPEG size in kB (no per-pixel structure: PXPO has no edge)",
        ),
    )
}
