"""Two processes (gloo on localhost, one thread each) train the same run as one process."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agents.distributed import join_local_group
from agents.policy import trainable_state
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config

EPOCHS = 2
UPDATE_TOLERANCE = 1e-2
"""Largest ||update_2proc - update_1proc|| / ||update_1proc|| allowed, the update being the weights' change
over 2 epochs: the ranks' gradients are summed in another order than one process accumulates them (float
addition is not associative), and AdamW's normalised steps magnify that rounding on elements whose
gradient is near 0 (measured: 1.6e-4 for DDPO and 4.5e-4 for PXPO; without the gradient sum, 0.97)."""
IMAGE_TOLERANCE = 1e-4
"""After the first update the policies differ by that rounding, so later epochs' images (in [0, 1]) may
too; the first epoch's images and rewards are bitwise equal."""


def distributed_config(tiny_model_dir, tmp_path, algo):
    # 2 sampling batches of 8 and minibatches of 4: every minibatch mixes both ranks' images, and the
    # per-context buffer (8 values, its own statistics after 4) sees the epoch in the single process's order.
    return tiny_config(
        tiny_model_dir,
        tmp_path,
        algo=algo,
        sample_batch_size=8,
        sample_batches_per_epoch=2,
        train_batch_size=4,
        num_epochs=EPOCHS,
        threads=1,
        export=False,
    )


def run_epochs(trainer: Trainer) -> dict:
    """EPOCHS epochs; what each rank saw and ended with."""
    images, rewards = [], []
    for _ in range(EPOCHS):
        _, traj = trainer.train_epoch()
        images.append(traj.images.clone())  # this rank's own images
        rewards.append(traj.rewards.clone())  # the whole epoch's (gathered)
    return {
        "images": images,
        "rewards": rewards,
        "stats": trainer.algo.state_dict(),
        "weights": trainable_state(trainer.policy),
    }


def worker(rank: int, world: int, store: str, config, out: str, sync: bool) -> None:
    join_local_group(rank, world, store, timeout_seconds=120)
    try:
        if not sync:  # negative control: gradients left unsynchronised
            import agents.trainer

            agents.trainer.sum_gradients = lambda params, world: None
        result = run_epochs(Trainer(config))
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
        # Both ranks done before either tears the group down: one full-suite run (1 of 4 this session)
        # saw rank 0 abort in gloo's teardown ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_two(config, tmp_path, sync=True) -> list[dict]:
    store = tmp_path / f"store-{sync}"
    mp.spawn(worker, args=(2, str(store), config, str(tmp_path), sync), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def max_weight_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def relative_update_difference(a: dict, b: dict, start: dict) -> float:
    """||(a - start) - (b - start)|| / ||b - start|| over all trainable weights."""
    diff = torch.cat([(a[k] - b[k]).reshape(-1) for k in a])
    update = torch.cat([(b[k] - start[k]).reshape(-1) for k in b])
    return float(diff.norm() / update.norm())


@pytest.mark.parametrize("algo,model", [("ddpo", "ddim"), ("pxpo", "ddim"), ("pxpo", "flow")])
def test_two_processes_train_the_single_process_run(request, tmp_path, algo, model):
    folder = request.getfixturevalue("tiny_flow_dir" if model == "flow" else "tiny_model_dir")
    config = distributed_config(folder, tmp_path, algo)
    trainer = Trainer(config)
    start = {k: v.clone() for k, v in trainable_state(trainer.policy).items()}
    single = run_epochs(trainer)
    ranks = run_two(config, tmp_path)
    for epoch in range(EPOCHS):
        # the same images: rank 0 drew slots 0-3, rank 1 slots 4-7 of each sampling batch of 8
        one = single["images"][epoch].reshape(2, 8, 3, 8, 8)
        both = torch.cat([r["images"][epoch].reshape(2, 4, 3, 8, 8) for r in ranks], dim=1)
        tolerance = 0.0 if epoch == 0 else IMAGE_TOLERANCE
        torch.testing.assert_close(both, one, atol=tolerance, rtol=0)
        for rank in ranks:  # the same rewards, gathered in the single process's order
            torch.testing.assert_close(
                rank["rewards"][epoch], single["rewards"][epoch], atol=tolerance, rtol=0
            )
    # identical per-context statistics on both ranks, equal to the single process's
    for key, value in single["stats"].items():
        assert torch.equal(ranks[0]["stats"][key], ranks[1]["stats"][key])
        torch.testing.assert_close(ranks[0]["stats"][key], value)
    assert max_weight_difference(ranks[0]["weights"], ranks[1]["weights"]) == 0.0  # one step on every rank
    difference = relative_update_difference(ranks[0]["weights"], single["weights"], start)
    assert difference <= UPDATE_TOLERANCE


def test_unsynchronised_gradients_are_caught(tiny_model_dir, tmp_path):
    """Negative control: without the gradient sum each rank steps on half a minibatch."""
    config = distributed_config(tiny_model_dir, tmp_path, "pxpo")
    trainer = Trainer(config)
    start = {k: v.clone() for k, v in trainable_state(trainer.policy).items()}
    single = run_epochs(trainer)
    ranks = run_two(config, tmp_path, sync=False)
    difference = relative_update_difference(ranks[0]["weights"], single["weights"], start)
    assert difference > 10 * UPDATE_TOLERANCE
    assert max_weight_difference(ranks[0]["weights"], ranks[1]["weights"]) > 0


def test_resuming_under_another_world_size_is_refused(tiny_model_dir, tmp_path):
    from agents.runs import train

    config = distributed_config(tiny_model_dir, tmp_path, "ddpo")
    train(config.replace(num_epochs=1))
    meta_path = tmp_path / "run" / "checkpoints"
    latest = (meta_path / "latest").read_text().strip()
    meta_file = next((meta_path / latest).glob("*.json"))
    import json

    meta = json.loads(meta_file.read_text())
    meta["world_size"] = 2
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="written by a run on 2 process"):
        train(config.replace(resume=str(tmp_path / "run"), num_epochs=2))


def train_worker(rank: int, world: int, store: str, config, die_in_epoch: int | None, timeout: float) -> None:
    """One rank of a run through ``train``; rank 1 dies (exit code 3) inside epoch ``die_in_epoch``, after sampling."""
    join_local_group(rank, world, store, timeout)
    import agents.runs
    import agents.trainer

    if die_in_epoch is not None and rank == 1:
        epoch = agents.trainer.Trainer.policy_gradient_epoch

        def dying_epoch(self, traj, *args):
            if self.epoch + 1 == die_in_epoch:  # after sampling, while rank 0 waits to gather the epoch
                os._exit(3)
            return epoch(self, traj, *args)

        agents.trainer.Trainer.policy_gradient_epoch = dying_epoch
    agents.runs.train(config)
    dist.destroy_process_group()


def late_rank0_worker(rank: int, world: int, store: str, config, marker: str, seen: str) -> None:
    """Rank 0 finishes its epochs 2 s after rank 1 (as a slow final export would) and then leaves a marker;
    rank 1 records whether the marker was there when its ``train`` returned."""
    import time
    from pathlib import Path

    import agents.runs

    join_local_group(rank, world, store, 60)
    if rank == 0:
        epochs = agents.runs.run_epochs

        def late_epochs(*args):
            history = epochs(*args)
            time.sleep(2.0)
            Path(marker).write_text("done")
            return history

        agents.runs.run_epochs = late_epochs
    agents.runs.train(config)
    if rank == 1:
        Path(seen).write_text(str(Path(marker).exists()))
    dist.destroy_process_group()


def test_no_rank_leaves_train_before_the_others_are_done(tiny_model_dir, tmp_path):
    """Without the end-of-run barrier rank 1 returns while rank 0 still works, and tears the group down
    under it (CI once saw that abort a rank in gloo's teardown)."""
    config = distributed_config(tiny_model_dir, tmp_path, "ddpo").replace(num_epochs=1)
    marker, seen = tmp_path / "rank0-done", tmp_path / "rank1-saw"
    mp.spawn(
        late_rank0_worker,
        args=(2, str(tmp_path / "store-late"), config, str(marker), str(seen)),
        nprocs=2,
        join=True,
    )
    assert seen.read_text() == "True"


def start_ranks(config, store, die_in_epoch=None, timeout=20.0):
    context = mp.get_context("spawn")
    procs = [
        context.Process(target=train_worker, args=(rank, 2, str(store), config, die_in_epoch, timeout))
        for rank in range(2)
    ]
    for proc in procs:
        proc.start()
    return procs


def test_a_dead_rank_stops_the_other_and_resume_continues_exactly(tiny_model_dir, tmp_path):
    import time

    from agents.metrics import read_metrics

    base = distributed_config(tiny_model_dir, tmp_path, "pxpo").replace(num_epochs=4, save_every=1)
    whole = base.replace(out=str(tmp_path / "whole"))
    for proc in start_ranks(whole, tmp_path / "store-whole"):
        proc.join(300)
        assert proc.exitcode == 0

    broken = base.replace(out=str(tmp_path / "broken"))
    started = time.monotonic()
    rank0, rank1 = start_ranks(broken, tmp_path / "store-broken", die_in_epoch=3, timeout=20.0)
    rank1.join(300)
    rank0.join(120)
    assert rank1.exitcode == 3
    assert rank0.exitcode not in (None, 0)  # the survivor failed on its own, it did not hang
    assert time.monotonic() - started < 120

    resumed = broken.replace(resume=str(tmp_path / "broken"))
    for proc in start_ranks(resumed, tmp_path / "store-resume"):
        proc.join(300)
        assert proc.exitcode == 0
    timing = {"seconds", "sample_seconds", "reward_seconds", "train_seconds", "eval_seconds"}
    expected, got = (
        read_metrics(tmp_path / "whole" / "metrics.csv"),
        read_metrics(tmp_path / "broken" / "metrics.csv"),
    )
    assert len(got) == len(expected) == 4
    for a, b in zip(got, expected):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
