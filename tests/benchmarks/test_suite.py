"""A tiny sample-efficiency grid runs end to end: runs, resume/skip, plot, table, summary."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.suite import PRESETS, SuiteConfig, main, run_dir


def tiny_suite(out, **overrides) -> SuiteConfig:
    """A grid of 2-epoch runs of 4 images on the default model (a few seconds a run)."""
    base = dict(
        tasks=("color", "jpeg"),
        seeds=(0,),
        num_epochs=2,
        sample_batch_size=4,
        train_batch_size=4,
        num_inference_steps=3,
        stat_buffer_size=4,
        stat_min_count=1,
        eval_every=1,
        eval_images=4,
        workers=1,
        out=str(out),
    )
    return SuiteConfig(**{**base, **overrides})


def test_tiny_grid_end_to_end(tmp_path, capsys):
    cfg = tiny_suite(tmp_path)
    summary = main(cfg)
    for name in ("plot.png", "table.csv", "summary.md"):
        assert (tmp_path / name).is_file()
    with open(tmp_path / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    # The exact-gradient oracle runs on the differentiable colour task only.
    assert {(r["task"], r["algo"]) for r in rows} == {
        ("color", "ddpo"),
        ("color", "pxpo"),
        ("color", "oracle"),
        ("jpeg", "ddpo"),
        ("jpeg", "pxpo"),
    }
    by_key = {(r["task"], r["algo"]): r for r in rows}
    assert by_key[("color", "pxpo")]["share_of_oracle_gain"] != ""
    assert by_key[("color", "oracle")]["clipfrac"] == ""
    # Fidelity is measured on held-out noise: the pretrained point first, then every eval.
    assert by_key[("color", "pxpo")]["shape_match"].count("->") == 1
    assert float(by_key[("color", "ddpo")]["distance"]) > 0
    assert "| color | pxpo |" in summary and "images to 90%" in summary and "fidelity" in summary
    # Every run's own numbers: the table's means are the means of these rows.
    with open(tmp_path / "seeds.csv") as handle:
        seeds = list(csv.DictReader(handle))
    assert {(r["task"], r["algo"], r["seed"]) for r in seeds} == {k + ("0",) for k in by_key}
    for r in seeds:
        assert by_key[(r["task"], r["algo"])]["final_reward"].startswith(f"{float(r['final_reward']):.4f}")
        assert float(r["peak_reward"]) >= max(float(r["start_reward"]), float(r["final_reward"]))
    pxpo = next(r for r in seeds if (r["task"], r["algo"]) == ("color", "pxpo"))
    assert 0 <= float(pxpo["silent_fraction_first"]) <= 1 and pxpo["shape_match_start"] != "nan"
    assert "Sample-efficiency suite" in capsys.readouterr().out
    # Two families (pixel-local, scalar): the per-family table and the per-task targets.
    with open(tmp_path / "targets.csv") as handle:
        targets = {r["task"]: r for r in csv.DictReader(handle)}
    assert targets["color"]["family"] == "pixel-local" and targets["jpeg"]["split"] == "train"
    assert (
        targets["color"]["safe"] in ("yes", "no") and targets["jpeg"]["faster"] == ""
    )  # scalar: no speed target
    # Colour is pixel-local and JPEG's map is one number: PXPO's check keeps per-pixel credit on both.
    assert (
        targets["color"]["pxpo_image_credit_from_epoch"]
        == "-"
        == targets["jpeg"]["pxpo_image_credit_from_epoch"]
    )
    with open(tmp_path / "families.csv") as handle:
        families = list(csv.DictReader(handle))
    assert [(r["split"], r["family"], r["tasks"]) for r in families] == [
        ("train", "pixel-local", "color"),
        ("train", "scalar", "jpeg"),
    ]
    assert "## Per family" in summary
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["runs_trained"] == 5 and timing["seconds"] > 0 and timing["command"].startswith("python -m")
    # A second call skips complete runs: their metrics files (and the timing of the call that trained
    # them) are left untouched.
    metrics = run_dir(cfg, "color", "pxpo", 0) / "metrics.csv"
    before = metrics.stat().st_mtime_ns
    main(cfg)
    assert metrics.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "timing.json").read_text()) == timing


def test_presets_and_validation():
    assert PRESETS["full"]().seeds == (0, 1, 2, 3, 4)
    # Same effort for every algorithm: 3 rates x 2 clip ranges for DDPO and PXPO; 3 rates for the oracle.
    labels = [label for label, _, _ in PRESETS["sweep"]().labels()]
    assert len(labels) == 15 and sum(label.startswith("oracle") for label in labels) == 3
    assert len(PRESETS["advantages"]().arms("segmentation")) == 4
    with pytest.raises(ValueError, match="tasks"):
        SuiteConfig(tasks=("aesthetics",))


def test_throughput_measures_one_configuration():
    from benchmarks.performance.throughput import ThroughputConfig, measure_one

    result = measure_one(ThroughputConfig(num_inference_steps=2, repeats=1, train_batch_size=2), "pxpo", 2)
    assert result["sample_images_per_s"] > 0 and result["train_ratio_to_floor"] > 0
    assert result["peak_memory_mib"] > 0


def test_runs_commits_join_when_runs_are_added_and_reset_when_remade(tmp_path, monkeypatch):
    import benchmarks.suite.grid as grid

    head = iter(["aaaaaaa", "bbbbbbb", "bbbbbbb", "ccccccc"])
    monkeypatch.setattr(grid, "git_commit", lambda: next(head))
    tasks = ("color", "jpeg")
    grid.record_runs_commit(tmp_path, ["color", "jpeg"], tasks)  # first runs at aaaaaaa
    grid.record_runs_commit(tmp_path, ["color"], tasks, added_to=("color",))  # more seeds at bbbbbbb
    assert grid.read_runs_commits(tmp_path, tasks) == {"color": "aaaaaaa + bbbbbbb", "jpeg": "aaaaaaa"}
    grid.record_runs_commit(tmp_path, ["color"], tasks, added_to=("color",))  # resumed at the same commit
    assert grid.read_runs_commits(tmp_path, tasks)["color"] == "aaaaaaa + bbbbbbb"
    grid.record_runs_commit(tmp_path, ["jpeg"], tasks)  # every jpeg run made again at ccccccc
    assert grid.read_runs_commits(tmp_path, tasks) == {"color": "aaaaaaa + bbbbbbb", "jpeg": "ccccccc"}


def test_unscored_measures_the_region_tasks_silent_half_only():
    from benchmarks.studies.unscored import UnscoredConfig, measure

    result = measure(UnscoredConfig(tasks=("region", "color"), images_per_context=2))
    assert result["command"].startswith("python -m benchmarks.studies.unscored") and result["commit"]
    for row in result["tasks"]["region"].values():
        assert row == {"silent": 0.5, "insensitive": 0.5, "unscored": 0.5}
    assert all(row["unscored"] == 0.0 for row in result["tasks"]["color"].values())


def test_hold_cost_times_held_and_free_epochs_of_the_region_task():
    from benchmarks.studies.hold_cost import HoldCostConfig, measure

    result = measure(HoldCostConfig(batch_size=8, train_batch_size=8, num_inference_steps=2, repeats=1))
    assert result["pinned_fraction"] == 0.5  # the right half of every context
    assert set(result["seconds"]) == {"sample_free", "sample_held", "update_free", "update_held"}
    assert all(v > 0 for v in result["seconds"].values()) and result["sample_ratio_held_to_free"] > 0


def test_reproduce_reruns_a_suites_cells_bit_for_bit_and_sees_a_change(tmp_path, monkeypatch):
    import benchmarks.suite.reproduce as reproduce

    cfg = tiny_suite(tmp_path / "suite", tasks=("color",), algos=("pxpo",), eval_every=0)
    main(cfg)
    monkeypatch.setitem(reproduce.PRESETS, "tiny", lambda: cfg)
    check = reproduce.ReproduceConfig(
        runs=cfg.out, preset="tiny", tasks=("color",), epochs=2, out=str(tmp_path / "r.json")
    )
    result = reproduce.main(check)
    assert result["all_equal"] and result["cells"][0]["credit"] == "pixel"  # colour is pixel-local
    assert json.loads((tmp_path / "r.json").read_text())["all_equal"]
    # One logged loss off in its last digit: that epoch, and only it, is reported different.
    metrics = run_dir(cfg, "color", "pxpo", 0) / "metrics.csv"
    with open(metrics) as handle:
        rows = list(csv.DictReader(handle))
    rows[1]["loss"] = repr(float(rows[1]["loss"]) * (1 + 1e-12))
    with open(metrics, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    changed = reproduce.measure(check)
    assert changed["cells"][0]["equal_per_epoch"] == [True, False] and not changed["all_equal"]
    with pytest.raises(ValueError, match="label must be one of"):
        reproduce.measure(reproduce.ReproduceConfig(runs=cfg.out, preset="tiny", tasks=("color",), label="x"))
    with pytest.raises(ValueError, match="fewer than epochs=3"):
        reproduce.measure(reproduce.ReproduceConfig(runs=cfg.out, preset="tiny", tasks=("color",), epochs=3))


def test_locality_reports_which_credit_the_default_picks_per_task(tmp_path):
    from benchmarks.studies.locality import LocalityConfig
    from benchmarks.studies.locality import main as locality

    result = locality(LocalityConfig(tasks=("color", "jpeg"), seeds=(0,), out=str(tmp_path / "l.json")))
    assert result["tasks"]["color"] == {"locality": [1.0], "chosen": ["pixel"]}
    assert result["tasks"]["jpeg"]["chosen"] == ["image"]
    assert result["tasks"]["jpeg"]["locality"] == [round(1 / 256, 4)]  # one size per 16x16 image
    assert json.loads((tmp_path / "l.json").read_text())["command"].startswith(
        "python -m benchmarks.studies.locality"
    )
    with pytest.raises(ValueError, match="tasks must be among"):
        locality(LocalityConfig(tasks=("aesthetics",), out=str(tmp_path / "x.json")))


def test_the_report_leaves_out_arms_whose_runs_are_incomplete_and_says_so(tmp_path):
    cfg = tiny_suite(tmp_path, tasks=("color",), algos=("ddpo", "pxpo"))
    main(cfg)
    metrics = run_dir(cfg, "color", "pxpo", 0) / "metrics.csv"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]))  # header + epoch 1 of 2
    from benchmarks.suite.report import write_report

    summary = write_report(cfg)
    assert "| color | ddpo |" in summary and "| color | pxpo |" not in summary
    assert "Not in this report (runs missing or incomplete): pxpo on color." in summary


def test_a_plugin_algorithm_runs_beside_the_built_in_ones(tmp_path):
    cfg = tiny_suite(
        tmp_path,
        tasks=("color",),
        algos=("ddpo", "tests.plugin_algorithms:BatchBaseline"),
        plugin_learning_rates=(1e-4, 3e-4),
        plugin_options=("baseline=none", "window=2"),  # window: not its option, so not passed to it
    )
    arms = {arm.label: arm for arm in cfg.arms("color")}
    assert set(arms) == {"ddpo", "BatchBaseline-lr0.0001", "BatchBaseline-lr0.0003"}
    assert dict(arms["BatchBaseline-lr0.0001"].overrides)["algo_option"] == ("baseline=none",)
    main(cfg)
    with open(tmp_path / "table.csv") as handle:
        rows = {r["algo"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(arms) and rows["BatchBaseline-lr0.0003"]["final_reward"] != ""
    config = json.loads((run_dir(cfg, "color", "BatchBaseline-lr0.0003", 0) / "config.json").read_text())
    assert (
        config["algo"] == "tests.plugin_algorithms:BatchBaseline"
        and config["optimiser"]["learning_rate"] == 3e-4
    )
    with pytest.raises(ValueError, match="algo must be one of"):
        tiny_suite(tmp_path, algos=("ppo",))


def test_reproduce_counts_nan_columns_as_equal_and_nothing_else():
    from benchmarks.suite.reproduce import same

    nan = float("nan")
    assert same(nan, nan) and same(0.25, 0.25)
    assert not same(nan, 0.0) and not same(0.0, nan) and not same(0.25, 0.25000001)


def test_passes_and_seconds_to_target_are_the_runs_own_at_that_epoch(tmp_path):
    from agents.metrics import read_metrics
    from benchmarks.suite.report import cost_to, summarise_cost

    cfg = tiny_suite(
        tmp_path,
        tasks=("color",),
        algos=("ddpo", "oracle"),
        num_epochs=4,
        sample_batch_size=8,
        train_batch_size=8,
    )
    main(cfg)
    with open(tmp_path / "seeds.csv") as handle:
        seeds = list(csv.DictReader(handle))
    checked = 0
    for row in seeds:
        metrics = read_metrics(run_dir(cfg, "color", row["algo"], 0) / "metrics.csv")
        for pct in ("50", "90"):
            images = float(row[f"images_to_{pct}pct"])
            if images == images and images > 0:
                k = next(i for i, m in enumerate(metrics) if m["images"] == images)
                assert float(row[f"passes_to_{pct}pct"]) == metrics[k]["passes"] > 0
                assert float(row[f"seconds_to_{pct}pct"]) == pytest.approx(
                    sum(m["seconds"] for m in metrics[: k + 1]), abs=1e-3
                )
                checked += 1
    assert checked > 0
    with open(tmp_path / "table.csv") as handle:
        assert {"passes_to_90pct", "seconds_to_90pct"} <= set(next(csv.DictReader(handle)))
    rows = [{"images": 4.0, "passes": 10.0, "seconds": 1.0}, {"images": 8.0, "passes": 25.0, "seconds": 2.0}]
    assert cost_to(rows, 8.0) == (25.0, 3.0) and cost_to(rows, 0.0) == (0.0, 0.0)
    nan_cost = cost_to(rows, float("nan"))
    assert nan_cost[0] != nan_cost[0]  # never reached
    assert cost_to([{"images": 4.0, "seconds": 1.0}], 4.0) == (None, 1.0)  # reached, but not counted
    assert (
        summarise_cost([None, 10.0], 1000.0) == "-" and summarise_cost([2000.0, 4000.0], 1000.0) == "3 [2-4]"
    )
