"""Every crash point recovers: a write cut off at any point (kill -9 or a full disk) leaves a run folder
that ``resume`` (or, before the first checkpoint, a retry) finishes to the same files as a run that was
never interrupted; ``overwrite`` deletes only what a run wrote; a damaged checkpoint is named, not used."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.metrics import read_metrics
from agents.runs import MANIFEST, train
from pxpo_gym.files import FAULTS, write_atomic
from tests.agents.test_agents import tiny_config
from tests.agents.test_export import pinned_run_config


class Killed(BaseException):
    """A simulated kill -9: nothing after the fault point runs (no ``except Exception`` catches it)."""


def fault_at(n: int, kind: str):
    """A hook that counts fault points and fails the ``n``-th (1-based) with ``kind``."""
    calls = {"count": 0}

    def hook(path: Path) -> None:
        calls["count"] += 1
        if calls["count"] == n:
            if kind == "kill":
                raise Killed(str(path))
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return hook, calls


def crash_config(tiny_model_dir, out: Path):
    # every kind of write: metrics rows, image grids, held-out evaluation, a checkpoint per epoch, the export
    return tiny_config(
        tiny_model_dir,
        out.parent,
        out=str(out),
        num_epochs=2,
        sample_batch_size=4,
        train_batch_size=4,
        stat_buffer_size=4,
        stat_min_count=2,
        save_every=1,
        image_every=1,
        eval_every=1,
        eval_images=4,
    )


def recover(config) -> None:
    """What a user does after a crash: resume if there is a checkpoint, else run again (with --overwrite
    only if the refusal says that is the one way on)."""
    run = Path(config.run.out)
    if (run / "checkpoints" / "latest").is_file():
        train(config.replace(resume=str(run)))
        return
    try:
        train(config)
    except ValueError as err:
        assert "--overwrite" in str(err) and "nothing to resume" in str(err), err
        train(config.replace(overwrite=True))


def final_files(run: Path) -> dict[str, object]:
    """What a finished run leaves, with only the wall-clock columns left out (they differ run to run)."""
    from safetensors.torch import load_file

    rows = read_metrics(run / "metrics.csv")
    for row in rows:
        for key in [k for k in row if k.endswith("seconds")]:
            del row[key]
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    meta = json.loads((latest / "meta.json").read_text())
    for key in ("resume", "overwrite", "out"):  # how it was started, and where (each case has its folder)
        meta["config"]["run"].pop(key)
    files = {
        "metrics": rows,
        "checkpoint": load_file(str(latest / "state.safetensors")),
        "checkpoint_meta": meta,
        "eval_reference.json": (run / "eval_reference.json").read_bytes(),
    }
    for folder in ("images", "model"):
        for path in sorted((run / folder).rglob("*")):
            if path.name == "pxpo_gym.json":
                exported = json.loads(path.read_text())
                exported["run"]["config"].pop("out")
                files[str(path.relative_to(run))] = exported
            elif path.is_file():
                files[str(path.relative_to(run))] = path.read_bytes()
    return files


def assert_same(a: dict[str, object], b: dict[str, object], label: str) -> None:
    assert a.keys() == b.keys(), (label, sorted(a.keys() ^ b.keys()))
    for key in a:
        if key == "checkpoint":
            assert a[key].keys() == b[key].keys(), label
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), (label, name)
        else:
            assert a[key] == b[key], (label, key)


def raw_grid(images, maps, path, titles=None):
    """Stands in for the matplotlib grid (most of a tiny run's time): the same one atomic write, of the raw
    pixels and maps, so the comparison below checks the images bit for bit."""
    return write_atomic(path, images.numpy().tobytes() + maps.numpy().tobytes())


@pytest.fixture(scope="module", autouse=True)
def fast_grids():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agents.runs.save_reward_grid", raw_grid)
        yield


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    """(the finished files of a run never interrupted, its number of fault points)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    hook, calls = fault_at(0, "none")
    FAULTS.hook = hook
    try:
        train(crash_config(tiny_model_dir, run))
    finally:
        FAULTS.hook = None
    return final_files(run), calls["count"]


def test_every_write_cut_off_by_a_kill_or_a_full_disk_resumes_to_the_same_files(
    tiny_model_dir, tmp_path, uninterrupted
):
    expected, points = uninterrupted
    assert points >= 30  # the manifest, configs, metrics rows, images, checkpoints and the export
    recovered = 0
    for n in range(1, points + 1):
        for kind in ("kill", "enospc"):
            run = tmp_path / f"{kind}-{n}" / "run"
            config = crash_config(tiny_model_dir, run)
            hook, calls = fault_at(n, kind)
            FAULTS.hook = hook
            try:
                with pytest.raises(Killed if kind == "kill" else OSError):
                    train(config)
            finally:
                FAULTS.hook = None
            assert calls["count"] == n
            recover(config)
            assert_same(final_files(run), expected, f"{kind} at write {n} of {points}")
            recovered += 1
    assert recovered == 2 * points


def test_resume_writes_an_export_a_crash_cut_off(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import shutil
    import sys

    from agents import train as train_cli

    # a reward that leaves the right half unscored: the run pins it, and the export carries the pin
    config = pinned_run_config(tiny_model_dir, tmp_path, silent_mode="hold-unscored", trust_code=True)
    train(config)
    model = tmp_path / "run" / "model"
    written = {p.name: p.read_bytes() for p in (model / "unet").iterdir()}
    pin = (model / "pinned_pixels.safetensors").read_bytes()
    shutil.rmtree(model)  # what a kill between removing the old export and renaming the new one leaves
    monkeypatch.setattr(
        sys, "argv", ["train", "--resume", str(tmp_path / "run"), "--no-progress", "--trust-code"]
    )
    train_cli.main()
    assert {p.name: p.read_bytes() for p in (model / "unet").iterdir()} == written
    assert (model / "pinned_pixels.safetensors").read_bytes() == pin  # the pin, restored from the checkpoint
    assert f"its export: {model}" in capsys.readouterr().out


def test_a_start_that_failed_leaves_nothing_that_blocks_the_retry(tiny_model_dir, tmp_path, monkeypatch):
    from agents.trainer import Trainer

    def broken(self):
        raise ValueError("the reward server is down")

    config = tiny_config(tiny_model_dir, tmp_path, eval_every=1)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_epoch", broken)
        with pytest.raises(ValueError, match="reward server is down"):
            train(config)
    assert {"config.json", "eval_reference.json", "metrics.csv", MANIFEST} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }
    with pytest.raises(ValueError, match="no checkpoint"):  # nothing to resume ...
        train(config.replace(resume=str(tmp_path / "run")))
    history = train(config)  # ... and nothing blocks a new start without any flag
    assert [int(row["epoch"]) for row in history] == [1, 2]


def test_overwrite_deletes_only_what_a_run_wrote(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    for name in ("images", "model", "tb"):  # the user's own folders, under names a run writes
        (run / name).mkdir(parents=True)
        (run / name / "mine.txt").write_text("keep")
    config = tiny_config(tiny_model_dir, tmp_path)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="which no run wrote"):
            train(config.replace(overwrite=overwrite))
    assert all((run / name / "mine.txt").read_text() == "keep" for name in ("images", "model", "tb"))

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    config = config.replace(out=str(other))
    train(config)
    with pytest.raises(ValueError, match="--overwrite"):
        train(config)
    train(config.replace(overwrite=True))
    assert (other / "notes.txt").read_text() == "keep" and (other / "model").is_dir()
    assert json.loads((other / MANIFEST).read_text())["files"][0] == "metrics.csv"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "latest").write_text("../../../etc\n"), "must name a checkpoint folder"),
        (lambda root: (root / "latest").write_text("epoch-000009\n"), "unreadable"),
        (lambda root: _edit_meta(root, epoch=-5), "'epoch' is the folder's epoch 2, got '-5'"),
        (lambda root: _edit_meta(root, config=7), "no 'config' object"),
        (lambda root: _edit_meta(root, config_learning_rate="fast"), "config is not valid"),
        (lambda root: _edit_meta(root, config_num_epochs=-1), "num_epochs must be an int >= 1"),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_what_is_wrong(tiny_model_dir, tmp_path, damage, message):
    config = tiny_config(tiny_model_dir, tmp_path, export=False)
    train(config)
    damage(tmp_path / "run" / "checkpoints")
    with pytest.raises(ValueError, match="resume=") as err:
        train(config.replace(resume=str(tmp_path / "run"), num_epochs=3))
    assert message in str(err.value)


def _edit_meta(root: Path, **changes) -> None:
    path = root / "epoch-000002" / "meta.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("config_"):
            name = key.removeprefix("config_")
            section = next(s for s in meta["config"].values() if isinstance(s, dict) and name in s)
            section[name] = value
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def test_a_checkpoint_cut_off_while_an_epoch_was_saved_again_is_still_found(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, export=False)
    train(config)
    root = tmp_path / "run" / "checkpoints"
    (root / "epoch-000002").rename(root / ".epoch-000002.old")  # the moment between the two renames
    tensors, meta = load_checkpoint(tmp_path / "run")
    assert meta["epoch"] == 2 and tensors


def test_a_cut_last_metrics_row_is_left_out_and_a_corrupt_one_is_named(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,images\r\n1,32\r\n2,6")  # the second row cut short by a crash
    assert read_metrics(path) == [{"epoch": 1.0, "images": 32.0}]
    path.write_text("epoch,images\r\n1,32,7\r\n2,64\r\n")  # a complete row with a cell too many
    with pytest.raises(ValueError, match="line 2 has 3 cells but the header has 2"):
        read_metrics(path)


def test_an_overwrite_of_a_run_from_before_manifests_claims_it_first(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    import agents.runs as runs

    config = tiny_config(tiny_model_dir, tmp_path, num_epochs=1, image_every=1)
    train(config)
    (tmp_path / "run" / MANIFEST).unlink()  # as a run from before manifests left it
    deleted = []

    def killed_after_the_first(path, *args, **kwargs):
        if deleted:
            raise Killed(str(path))
        deleted.append(path)
        real_rmtree(path, *args, **kwargs)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(runs.shutil, "rmtree", killed_after_the_first)
    with pytest.raises(Killed):
        train(config.replace(overwrite=True))
    monkeypatch.undo()
    assert (tmp_path / "run" / MANIFEST).is_file()  # claimed before anything was deleted ...
    train(config.replace(overwrite=True))  # ... so the retry finishes the overwrite
