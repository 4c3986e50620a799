"""Window means of logged curves (benchmarks.studies.curve_windows), on hand-written metrics files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.studies.curve_windows import WindowsConfig, main, window_means


def write_run(folder, rewards, silent_kl=None):
    folder.mkdir(parents=True)
    lines = ["epoch,images,reward_mean,silent_kl"]
    for e, r in enumerate(rewards):
        kl = "" if silent_kl is None else silent_kl[e]
        lines.append(f"{e + 1},{32 * (e + 1)},{r},{kl}")
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_window_means_by_hand():
    values = np.array([1.0, 3.0, 5.0, 7.0, 100.0])
    assert window_means(values, 2).tolist() == [2.0, 6.0]  # the partial last window is dropped
    assert window_means(values, 5).tolist() == [23.2]
    assert window_means(values, 6).tolist() == []
    with pytest.raises(ValueError, match="window must be >= 1, got window=0"):
        window_means(values, 0)


def test_arms_per_seed_and_mean(tmp_path):
    write_run(tmp_path / "a" / "seed0", [0.1, 0.3, 0.5, 0.5, 0.6], silent_kl=[1, 1, 2, 2, 9])
    write_run(tmp_path / "a" / "seed1", [0.3, 0.5, 0.5, 0.7, 0.0], silent_kl=[3, 3, 2, 2, 9])
    write_run(tmp_path / "b" / "seed0", [0.2, 0.2, 0.2, 0.2, 0.2])  # no silent_kl logged (DDPO)
    out = tmp_path / "w.json"
    cfg = WindowsConfig(
        arms=(f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"),
        columns=("reward_mean", "silent_kl"),
        window=2,
        out=str(out),
    )
    main(cfg)
    result = json.loads(out.read_text())
    assert result["commit"] and result["command"].startswith("python -m benchmarks.studies.curve_windows")
    a = result["arms"]["a"]
    assert a["seeds"] == ["seed0", "seed1"] and a["window_images"] == [[32, 64], [96, 128]]
    assert a["reward_mean"]["per_seed"] == [[0.2, 0.5], [0.4, 0.6]]
    assert a["reward_mean"]["mean"] == [0.3, 0.55]
    assert a["silent_kl"]["mean"] == [2.0, 2.0]
    assert result["arms"]["b"]["silent_kl"]["mean"] == [None, None]  # not logged: NaN, written as null
    assert result["arms"]["b"]["reward_mean"]["mean"] == [0.2, 0.2]


def test_bad_arms(tmp_path):
    write_run(tmp_path / "a" / "seed0", [0.1, 0.2, 0.3])
    write_run(tmp_path / "a" / "seed1", [0.1, 0.2])

    def run(arms, columns=("reward_mean",), window=1):
        main(WindowsConfig(arms=arms, columns=columns, window=window, out=str(tmp_path / "w.json")))

    with pytest.raises(ValueError, match="LABEL=FOLDER"):
        run((str(tmp_path / "a"),))
    with pytest.raises(ValueError, match="has no seed"):
        run((f"x={tmp_path / 'missing'}",))
    with pytest.raises(ValueError, match="has 2 epochs"):
        run((f"a={tmp_path / 'a'}",))
    write_run(tmp_path / "c" / "seed0", [0.1, 0.2])
    with pytest.raises(ValueError, match="no column 'loss'"):
        run((f"c={tmp_path / 'c'}",), columns=("loss",))
    with pytest.raises(ValueError, match="fewer than window=3"):
        run((f"c={tmp_path / 'c'}",), window=3)
    assert not (tmp_path / "w.json").exists()  # nothing written on bad input
