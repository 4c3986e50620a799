"""Training on N processes with torch.distributed: the same run as on one.

Launched by ``torchrun --nproc_per_node=N -m agents.train ...`` (or any launcher
that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT); without those
variables nothing here is used. gloo on CPU, nccl on CUDA (one GPU per process,
``cuda:LOCAL_RANK``).

How the run stays the single-process run:

- Sampling is split by env slot: with B images per sampling batch and N ranks,
  rank r owns slots r B/N ... (r + 1) B/N - 1 and seeds its vector env with
  ``seed + r B/N``, so slot i is seeded ``seed + i`` exactly as in one process.
- Rewards, reward maps and contexts are gathered into the single process's image
  order, so the per-context statistics see the whole epoch and are identical on
  every rank; each rank keeps its own slice of the advantages.
- Every rank draws the same minibatch order (same generator); of each minibatch
  a rank trains the images it owns, scales its loss by its share of the
  minibatch, and the gradients are summed across ranks before clipping and the
  AdamW step: the sum of the ranks' losses is the single process's loss, so the
  step is the same.
- Only rank 0 writes metrics, images, evaluations, checkpoints and the export;
  checkpoints hold every slot's RNG state, so a resume under the same world size
  continues exactly (another world size is refused).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size, local rank."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files."""
        return self.rank == 0


SINGLE = World()


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: str, timeout_seconds: float) -> World:
    """Joins the process group torchrun describes (once); SINGLE without a launcher.

    Args:
        device: the config's device; "cuda" becomes this rank's ``cuda:LOCAL_RANK`` (nccl), else gloo.
        timeout_seconds: how long a collective may wait for the other ranks before failing.
    """
    if not launched() and not dist.is_initialized():
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local)


def join_local_group(rank: int, world_size: int, store: str, timeout_seconds: float) -> None:
    """Joins a gloo group of ``world_size`` processes on this machine through a file store at ``store``,
    with one torch thread (for tests and benchmarks that start the processes themselves, not torchrun)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_seconds),
    )


def rank_device(device: str, world: World) -> str:
    """One GPU per process: plain "cuda" means this rank's ``cuda:LOCAL_RANK``."""
    return f"cuda:{world.local_rank}" if world.distributed and device == "cuda" else device


def gather_epoch(local: torch.Tensor, world: World, batches: int) -> torch.Tensor:
    """All ranks' (batches x L, ...) slices -> the epoch's (batches x N L, ...) tensor, in the
    single process's order (batch-major, then slot), identical on every rank."""
    if not world.distributed:
        return local
    parts = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(parts, local.contiguous())
    per = local.shape[0] // batches
    stacked = torch.stack([p.reshape(batches, per, *local.shape[1:]) for p in parts], dim=1)  # (S, N, L, ...)
    return stacked.reshape(batches * world.size * per, *local.shape[1:])


def local_indices(num_images: int, batch_size: int, world: World) -> torch.Tensor:
    """Global image index of each of this rank's images, in its local order (batch-major)."""
    per = batch_size // world.size
    batches = num_images // batch_size
    slots = torch.arange(world.rank * per, (world.rank + 1) * per)
    return (torch.arange(batches)[:, None] * batch_size + slots[None]).reshape(-1)


def sum_gradients(parameters: list[torch.nn.Parameter], world: World) -> None:
    """Sums the gradients over ranks in place (one flat all-reduce; a missing grad counts as 0)."""
    if not world.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for param, grad in zip(parameters, grads):
        n = grad.numel()
        param.grad = flat[offset : offset + n].view_as(param).clone()
        offset += n


def all_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of a tensor over ranks (a copy)."""
    if not world.distributed:
        return value
    out = value.clone()
    dist.all_reduce(out)
    return out


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def check_splittable(algo: type, sample_batch_size: int, world: World) -> None:
    """Refuses what a distributed run cannot split exactly (an algorithm that backpropagates through
    sampling, e.g. the oracle; a batch that is not a multiple of the world size)."""
    if getattr(algo, "samples_with_gradients", False):
        raise ValueError(f"algo={algo.name!r} runs on one process; launch it without torchrun")
    if sample_batch_size % world.size:
        raise ValueError(
            f"sample_batch_size={sample_batch_size} must be a multiple of the {world.size} processes: "
            "each rank samples an equal share of every batch"
        )


def local_rows(num_images: int, sample_batch_size: int, world: World) -> torch.Tensor:
    """(num_images,) int64: each global image index's row in this rank's trajectories (-1: another rank's)."""
    owned = local_indices(num_images, sample_batch_size, world)
    rows = torch.full((num_images,), -1, dtype=torch.int64)
    rows[owned] = torch.arange(len(owned))
    return rows


def minibatches(order: torch.Tensor, batch_size: int, rows: torch.Tensor):
    """Splits an epoch's global image order into minibatches of ``batch_size``; yields, per minibatch, this
    rank's share of it (the ranks' shares sum to 1, so their scaled losses sum to the minibatch's mean), the
    global indices of this rank's images in it, and their local rows (``local_rows``)."""
    for start in range(0, len(order), batch_size):
        minibatch = order[start : start + batch_size]  # (b,) global indices
        mine = minibatch[rows[minibatch] >= 0]
        yield len(mine) / len(minibatch), mine, rows[mine]
