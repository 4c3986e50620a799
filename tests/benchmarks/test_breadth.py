"""The breadth suite's verdicts (benchmarks.suite.breadth) on curves worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.suite.breadth import family_rows, main_label, task_targets

IMAGES = np.arange(7) * 32.0  # the pretrained point, then 6 epochs of 32 images


def flat_after(start: float, values: list[float]) -> np.ndarray:
    return np.array([start, *values])


def test_main_label_prefers_the_plain_then_the_default_arm():
    assert main_label(["ddpo", "pxpo-auto", "pxpo-default"], "pxpo") == "pxpo-default"
    assert main_label(["pxpo", "pxpo-default"], "pxpo") == "pxpo"
    assert main_label(["pxpo-auto"], "pxpo") == "pxpo-auto"
    assert main_label(["ddpo"], "pxpo") is None


def test_a_pixel_local_task_where_pxpo_is_safe_and_faster():
    # Best improvement 0.5 (PXPO's mean curve). Smoothed over 3 epochs (trailing: 0.4, 0.65, 0.73, 0.9),
    # PXPO reaches start + 0.45 at epoch 3 (96 images); DDPO's smoothed curve (..., 0.8, 0.87) at epoch 6
    # (192 images): 2x fewer, more than the 1.8x asked.
    pxpo = [flat_after(0.4, [0.9, 0.9, 0.9, 0.9, 0.9, 0.9])] * 3
    ddpo = [flat_after(0.4, [0.5, 0.6, 0.7, 0.8, 0.9, 0.9])] * 3
    row = task_targets("color", {"ddpo": ddpo, "pxpo": pxpo}, IMAGES, 0.0, {})
    assert row["safe"] and row["faster"] and row["pxpo_seeds_below_start"] == 0
    assert row["pxpo_to90"] == 96 and row["ddpo_to90"] == 192
    assert row["gains"] == pytest.approx({"ddpo": 1.0, "pxpo": 1.0})


def test_a_collapse_is_unsafe_even_within_one_std():
    # DDPO rises on average (0.4 -> 0.5) with a wide spread; PXPO's mean is within one DDPO std of DDPO's
    # but one PXPO seed ends below its start: not safe.
    ddpo = [flat_after(0.4, [0.4] * 5 + [final]) for final in (0.2, 0.5, 0.8)]
    pxpo = [flat_after(0.4, [0.4] * 5 + [final]) for final in (0.3, 0.45, 0.6)]
    row = task_targets("gated_shape", {"ddpo": ddpo, "pxpo": pxpo}, IMAGES, 0.0, {})
    assert row["pxpo_final"] == pytest.approx(0.45) and row["ddpo_std"] == pytest.approx(
        np.std([0.2, 0.5, 0.8])
    )
    assert row["pxpo_seeds_below_start"] == 1 and not row["safe"] and "faster" not in row
    # Where DDPO's mean does not rise, a PXPO seed below its start is no breach.
    ddpo_flat = [flat_after(0.4, [0.4] * 6)] * 3
    assert task_targets("gated_shape", {"ddpo": ddpo_flat, "pxpo": pxpo}, IMAGES, 0.0, {})["safe"]


def test_family_rows_count_the_targets_per_split_and_family():
    up = [flat_after(0.0, [1.0] * 6)] * 2
    down = [flat_after(0.0, [-1.0] * 6)] * 2
    targets = [
        task_targets("color", {"ddpo": up, "pxpo": up}, IMAGES, 0.0, {}),
        task_targets("target_map", {"ddpo": up, "pxpo": down}, IMAGES, 0.0, {}),
        task_targets("ramp", {"ddpo": up, "pxpo": up}, IMAGES, 0.0, {}),
    ]
    rows = {(r["split"], r["family"]): r for r in family_rows(targets)}
    assert set(rows) == {("train", "pixel-local"), ("test", "pixel-local")}
    train = rows[("train", "pixel-local")]
    assert train["tasks"] == "color target_map" and train["pxpo_safe"] == "1/2"
    assert train["gain_pxpo"] == "+0.00" and train["gain_ddpo"] == "+1.00"  # (1 + -1) / 2 in units of 1
    assert rows[("test", "pixel-local")]["pxpo_safe"] == "1/1"
