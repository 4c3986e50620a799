"""Samples-to-threshold on synthetic curves, worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.suite.analysis import (
    best_improvement,
    confidence_band,
    images_to_reach,
    samples_to_threshold,
    summarise,
)

IMAGES = np.array([32, 64, 96, 128, 160])


def test_images_to_reach():
    curve = np.array([0.5, 0.6, 0.7, 0.8, 0.8])
    assert images_to_reach(curve, IMAGES, 0.65) == 96
    assert images_to_reach(curve, IMAGES, 0.5) == 32
    assert math.isnan(images_to_reach(curve, IMAGES, 0.9))


def test_samples_to_threshold_hand_worked():
    # Algo "fast" rises 0.5 -> 0.9 (improvement 0.4, the best); "slow" 0.5 -> 0.7.
    fast = [np.array([0.5, 0.8, 0.9, 0.9, 0.9]), np.array([0.5, 0.7, 0.85, 0.9, 0.9])]
    slow = [np.array([0.5, 0.55, 0.6, 0.65, 0.7]), np.array([0.5, 0.55, 0.6, 0.65, 0.7])]
    curves = {"fast": fast, "slow": slow}
    assert best_improvement(curves) == pytest.approx(0.4)
    out = samples_to_threshold(curves, IMAGES)
    # 50% target = 0.5 + 0.2 = 0.7: fast reaches it at 64 and 64; slow at 160.
    assert out["fast"][0.5] == [64, 64]
    assert out["slow"][0.5] == [160, 160]
    # 90% target = 0.86: fast at 96 (0.9) and 128 (0.85 < 0.86); slow never.
    assert out["fast"][0.9] == [96, 128]
    assert all(math.isnan(v) for v in out["slow"][0.9])


def test_no_improvement_means_never_reached():
    flat = {"a": [np.array([0.5, 0.4, 0.5])]}
    assert best_improvement(flat) == 0.0
    assert math.isnan(samples_to_threshold(flat, np.array([1, 2, 3]))["a"][0.5][0])


def test_summarise_and_band():
    assert summarise([64, 96, 128]) == "96 [64-128]"
    assert summarise([64, float("nan")]) == "64 [64-64] (1/2 reached)"
    assert summarise([float("nan")]) == "not reached (0/1)"
    low, high = confidence_band([np.array([1.0, 2.0]), np.array([3.0, 2.0])])
    # mean [2, 2], std [1.414, 0], t(0.975, 1) = 12.706 -> half width 12.706 * 1.414 / 1.414
    assert low[0] == pytest.approx(2 - 12.706, abs=1e-3) and high[1] == pytest.approx(2.0)


def test_smoothing_and_noise_floor():
    from benchmarks.suite.analysis import smooth

    # trailing window 3: [1, (1+2)/2, (1+2+3)/3, (2+3+7)/3]
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0, 3.0, 7.0]), 3), [1.0, 1.5, 2.0, 4.0])
    # A single lucky epoch (0.5 -> 0.9 -> 0.5) is damped by smoothing...
    lucky = {"a": [np.array([0.5, 0.9, 0.5, 0.5])]}
    assert best_improvement({"a": [smooth(lucky["a"][0], 3)]}) == pytest.approx(0.2)
    # ...and an improvement below the noise floor counts as none.
    assert best_improvement(lucky, noise=0.5) == 0.0
    out = samples_to_threshold(lucky, np.array([1, 2, 3, 4]), window=3, noise=0.5)
    assert math.isnan(out["a"][0.5][0])


def test_verdict_counts_seeds_before_medians():
    from benchmarks.suite.report import verdict

    nan = float("nan")
    finals = {"ddpo": np.array([0.7, 0.7]), "pxpo": np.array([1.0, 1.0])}
    text = verdict("color", {"ddpo": {0.9: [352, nan]}, "pxpo": {0.9: [320, 224]}}, finals)
    assert "PXPO reached 90% of the best improvement in 2/2 seeds" in text and "DDPO in 1/2" in text
    text = verdict("color", {"ddpo": {0.9: [300, 300]}, "pxpo": {0.9: [100, 100]}}, finals)
    assert "PXPO needed 3.0x fewer images" in text
    text = verdict("jpeg", {"ddpo": {0.9: [nan]}, "pxpo": {0.9: [nan]}}, finals)
    assert "neither reached" in text


def test_arm_scores_and_best_settings_by_hand():
    import dataclasses

    from benchmarks.suite.grid import SuiteConfig
    from benchmarks.suite.report import arm_scores, best_settings

    cfg = dataclasses.replace(
        SuiteConfig(), tasks=("color", "segmentation"), algos=("pxpo",), pxpo_variants=("pixel", "footprint")
    )
    # colour: best improvement 0.4 (pixel's mean curve); segmentation: 0.1 (footprint's).
    curves = {
        "color": {"pxpo-pixel": [np.array([0.5, 0.9, 0.9])], "pxpo-footprint": [np.array([0.5, 0.5, 0.7])]},
        "segmentation": {
            "pxpo-pixel": [np.array([0.1, 0.1, 0.1])],
            "pxpo-footprint": [np.array([0.1, 0.1, 0.2])],
        },
    }
    scores = arm_scores(cfg, curves)
    # pixel: colour mean(0, 0.4, 0.4) / 0.4 = 2/3, segmentation 0 -> 1/3;
    # footprint: colour mean(0, 0, 0.2) / 0.4 = 1/6, segmentation mean(0, 0, 0.1) / 0.1 = 1/3 -> 1/4.
    assert scores["pxpo-pixel"] == pytest.approx(1 / 3)
    assert scores["pxpo-footprint"] == pytest.approx(1 / 4)
    assert best_settings(cfg, curves)["pxpo"]["credit"] == "pixel"
