"""benchmarks.suite.passes by hand: passes to 90% of a run's own held-out gain, the ratio and the 1-std check."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest

from benchmarks.suite.grid import SuiteConfig, run_dir
from benchmarks.suite.passes import Run, cost_to, load_run, write_passes


def write_run(folder, start, held, passes_per_epoch):
    folder.mkdir(parents=True)
    (folder / "eval_reference.json").write_text(json.dumps({"eval_reward": start}))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "images", "seconds", "passes", "eval_reward"])
        for e, value in enumerate(held, 1):
            writer.writerow([e, 32 * e, 2.0, passes_per_epoch * e, value])


def test_cost_to_a_target_on_the_smoothed_curve():
    import numpy as np

    run = Run(np.array([0.0, 0.3, 0.9, 0.9, 0.9]), np.arange(5) * 10.0, np.arange(5) * 2.0)
    assert run.final == pytest.approx(0.9)
    # smoothed over 3: 0, 0.15, 0.4, 0.7, 0.9 -> 0.81 first reached at the last point
    assert cost_to(run, 0.81) == (40.0, 8.0)
    assert cost_to(run, 0.39) == (20.0, 4.0)
    assert all(math.isnan(v) for v in cost_to(run, 1.5))


def test_the_table_by_hand(tmp_path):
    cfg = dataclasses.replace(
        SuiteConfig(), tasks=("color",), algos=("pxpo",), option_variants=("default", "window4"),
        seeds=(0, 1), num_epochs=4, eval_every=1, out=str(tmp_path),
    )  # fmt: skip
    curve = [0.2, 0.6, 0.6, 0.6]  # smoothed: 0.0 (start), 0.1, 0.267, 0.467, 0.6 vs 90% own: 0.54
    for seed in (0, 1):
        write_run(run_dir(cfg, "color", "pxpo-default", seed), 0.0, curve, 2560)
        write_run(run_dir(cfg, "color", "pxpo-window4", seed), 0.0, [0.6, 0.6, 0.6, 0.6], 1024)
    text = write_passes(cfg)
    rows = {(r["arm"], r["seed"]): r for r in csv.DictReader(open(tmp_path / "passes.csv"))}
    # default: final 0.6, smoothed curve reaches 0.54 at epoch 4 -> 4 x 2560; window: 0.0, 0.3, 0.4, 0.6 -> epoch 3
    assert float(rows[("pxpo-default", "0")]["passes_to_90pct_own"]) == 4 * 2560
    assert float(rows[("pxpo-window4", "0")]["passes_to_90pct_own"]) == 3 * 1024
    ratio = f"{4 * 2560 / (3 * 1024):.2f}x"
    assert (
        f"| color | pxpo-window4 | 0.0000 | 0.6000 +- 0.0000 | yes | nan | nan | 0.032 | 3.1 | {ratio} |"
        in text
    )
    with pytest.raises(ValueError, match="eval_every must be 1"):
        write_run(tmp_path / "bad", 0.0, [0.1, math.nan], 10)
        load_run(tmp_path / "bad", 2)


def test_each_algorithm_is_compared_with_its_own_first_arm_and_the_std_check(tmp_path):
    cfg = dataclasses.replace(
        SuiteConfig(), tasks=("color",), algos=("ddpo", "pxpo"), option_variants=("default", "window4"),
        seeds=(0, 1), num_epochs=4, eval_every=1, out=str(tmp_path),
    )  # fmt: skip
    flat = [0.6, 0.6, 0.6, 0.6]  # smoothed: 0, 0.2, 0.4, 0.6, 0.6 -> 90% of 0.6 at the 4th point (epoch 3)
    for seed, end in ((0, 0.5), (1, 0.7)):  # finals 0.5 and 0.7: mean 0.6, std 0.1414
        write_run(run_dir(cfg, "color", "ddpo-default", seed), 0.0, flat, 1000)
        write_run(run_dir(cfg, "color", "ddpo-window4", seed), 0.0, flat, 500)
        write_run(run_dir(cfg, "color", "pxpo-default", seed), 0.0, [end] * 4, 2000)
        write_run(run_dir(cfg, "color", "pxpo-window4", seed), 0.0, [0.47] * 4, 2000)
    text = write_passes(cfg)
    assert (
        "| color | ddpo-window4 | 0.0000 | 0.6000 +- 0.0000 | yes | nan | nan | 0.016 | 1.5 | 2.00x |" in text
    )
    # pxpo-window4 ends at 0.47: within one std (0.141) of pxpo-default's 0.6? 0.6 - 0.141 = 0.459 -> yes;
    # its ratio is against pxpo-default (3 x 2000 each: 1.00x), not against DDPO's first arm
    assert (
        "| color | pxpo-window4 | 0.0000 | 0.4700 +- 0.0000 | yes | nan | nan | 0.062 | 6.0 | 1.00x |" in text
    )
    for seed in (0, 1):  # 0.45 < 0.459: more than one std below
        folder = run_dir(cfg, "color", "pxpo-window4", seed)
        (folder / "metrics.csv").unlink()
        (folder / "eval_reference.json").unlink()
        folder.rmdir()
        write_run(folder, 0.0, [0.45] * 4, 2000)
    assert "| color | pxpo-window4 | 0.0000 | 0.4500 +- 0.0000 | no |" in write_passes(cfg)
