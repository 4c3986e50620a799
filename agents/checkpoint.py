"""Atomic, pickle-free checkpoints: one safetensors file of tensors plus one JSON file.

Layout: ``RUN/checkpoints/epoch-000012/{state.safetensors, meta.json}`` and
``RUN/checkpoints/latest`` naming the newest complete one. A checkpoint is
written into a temporary folder, flushed, then renamed into place, and only
then does ``latest`` move (``os.replace``), so a crash mid-save leaves the
previous checkpoint and pointer intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from pxpo_gym.files import fault_point, write_atomic
from pxpo_gym.models import current_parameter_name

STATE_FILE = "state.safetensors"
META_FILE = "meta.json"
POINTER = "latest"
WEIGHT_PREFIXES = ("policy/", "ema/", "best/policy/", "best/ema/")
"""The checkpoint keys that hold the policy's parameters by name (after the prefix)."""


def _fsync_dir_files(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def save_checkpoint(
    run_dir: str | Path, epoch: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], keep: int = 2
) -> Path:
    """Writes a checkpoint atomically and points ``latest`` at it.

    Args:
        run_dir: the run's folder.
        epoch: epochs completed; names the checkpoint.
        tensors: flat name -> tensor map (saved with safetensors).
        meta: JSON-serialisable metadata.
        keep: how many most recent checkpoints to keep.

    Returns:
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:06d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fault_point(tmp / STATE_FILE)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_FILE))
    write_atomic(tmp / META_FILE, json.dumps(meta, indent=1))
    _fsync_dir_files(tmp)
    final = root / name
    fault_point(final)
    if final.exists():  # re-saving an epoch: move the old one aside first
        old = root / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    write_atomic(root / POINTER, name + "\n")
    for stale in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-keep]:
        fault_point(stale)
        shutil.rmtree(stale)
    return final


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads the checkpoint that ``RUN/checkpoints/latest`` names.

    Raises:
        ValueError: no checkpoint, or a missing or corrupt file.
    """
    from safetensors.torch import load_file

    root = Path(run_dir) / "checkpoints"
    pointer = root / POINTER
    if not pointer.is_file():
        raise ValueError(f"resume={str(run_dir)!r}: no checkpoint found ({pointer} is missing)")
    name = pointer.read_text(errors="replace").strip()
    if not re.fullmatch(r"epoch-\d{6}", name):
        raise ValueError(
            f"resume={str(run_dir)!r}: {pointer} must name a checkpoint folder 'epoch-NNNNNN' beside it, got "
            f"{name[:80]!r}"
        )
    folder = root / name
    if not folder.is_dir() and (root / f".{name}.old").is_dir():  # a crash while an epoch was saved again
        folder = root / f".{name}.old"
    try:
        tensors = load_file(str(folder / STATE_FILE))
        meta = json.loads((folder / META_FILE).read_text())
    except Exception as err:  # SafetensorError, OSError, JSONDecodeError
        raise ValueError(f"resume={str(run_dir)!r}: checkpoint {folder} is unreadable: {err}") from err
    epoch = meta.get("epoch") if isinstance(meta, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch != int(name.removeprefix("epoch-")):
        raise ValueError(
            f"resume={str(run_dir)!r}: {folder / META_FILE} must hold an object whose 'epoch' is the folder's "
            f"epoch {int(name.removeprefix('epoch-'))}, got {str(epoch)[:40]!r}"
        )
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"resume={str(run_dir)!r}: {folder / META_FILE} has no 'config' object")
    return current_names(tensors), meta


def current_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors with the policy's parameters under today's names: checkpoints written before
    ``NoiseModel.unet`` became ``net`` name them ``unet.*`` (``pxpo_gym.models.current_parameter_name``)."""
    out = {}
    for key, value in tensors.items():
        prefix = next((p for p in WEIGHT_PREFIXES if key.startswith(p)), None)
        out[key if prefix is None else prefix + current_parameter_name(key.removeprefix(prefix))] = value
    return out


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flattens an optimizer's state for safetensors: tensors by name, the rest as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{param_id}/{key}"] = value
            else:
                scalars[f"{param_id}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of ``optimizer_to_tensors``: loads the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, param_id, key = name.split("/", 2)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in meta["scalars"].items():
        param_id, key = name.split("/", 1)
        state.setdefault(int(param_id), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors(generator: torch.Generator, env: Any, world: Any) -> dict[str, torch.Tensor]:
    """Every random state a resumed run needs: the trainer's generator, each rank's torch state and every env
    slot's generators by global slot index (all ranks take part in the gather; rank 0 writes them).

    Args:
        generator: the trainer's shuffling generator; env: the env core (``get_rng_state``);
        world: ``agents.distributed.World``.
    """
    from .distributed import gather_objects

    tensors = {"rng/trainer": generator.get_state()}
    ranks = gather_objects((torch.get_rng_state(), env.get_rng_state()), world)
    tensors["rng/torch"] = ranks[0][0]
    for rank, (torch_state, _) in enumerate(ranks[1:], start=1):
        tensors[f"rng/torch/rank{rank}"] = torch_state
    slots = [state for _, env_states in ranks for state in env_states]  # rank-major = slot order
    tensors.update({f"rng/env/{i}": state for i, state in enumerate(slots)})
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor], generator: torch.Generator, env: Any, world: Any) -> None:
    """Puts ``rng_tensors``' states back: the generator, this rank's torch state and its env slots."""
    generator.set_state(tensors["rng/trainer"])
    torch.set_rng_state(tensors["rng/torch" if world.rank == 0 else f"rng/torch/rank{world.rank}"])
    local = env.num_envs
    first = world.rank * local
    env.set_rng_state([tensors[f"rng/env/{first + i}"] for i in range(local)])


def trainer_state(trainer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a resumed run needs from an ``agents.trainer.Trainer``, as (tensors, JSON metadata): the
    trainable weights, the optimizer, the EMA and the algorithm's statistics (if any) under policy/, optim/,
    ema/ and stats/, PXPO's pin of the last epoch (``pinned``), every rank's RNG states, and the epoch,
    image count, config and world size."""

    from .policy import trainable_state

    tensors = {f"policy/{k}": v for k, v in trainable_state(trainer.policy).items()}
    optim_tensors, optim_meta = optimizer_to_tensors(trainer.optimizer)
    tensors.update(optim_tensors)
    if trainer.ema is not None:
        tensors.update({f"ema/{k}": v for k, v in trainer.ema.state_dict().items()})
    if trainer.algo is not None:
        tensors.update({f"stats/{k}": v for k, v in trainer.algo.state_dict().items()})
    best_tensors, best_meta = trainer.best.state()
    tensors.update(best_tensors)
    if (
        trainer.pinned is not None
    ):  # the pin the last epoch sampled with: an export written on resume needs it
        tensors["pinned"] = trainer.pinned
    tensors.update(rng_tensors(trainer.generator, trainer.envs.unwrapped, trainer.world))
    meta = {
        "epoch": trainer.epoch,
        "images": trainer.images,
        "passes": trainer.passes.total,
        "config": trainer.config.to_dict(),
        "optimizer": optim_meta,
        "torch": torch.__version__,
        "world_size": trainer.world.size,
        "best": best_meta,
    }
    return tensors, meta


def restore_trainer(trainer: Any, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Puts ``trainer_state``'s output back into ``trainer`` (world size and weight names checked before
    anything changes).

    Raises:
        ValueError: the checkpoint was written on another number of processes, or its weights are not
            this policy's.
    """
    from .policy import trainable_state

    saved_world = int(meta.get("world_size", 1))
    if saved_world != trainer.world.size:
        raise ValueError(
            f"the checkpoint was written by a run on {saved_world} process(es); resume it on "
            f"{saved_world} (torchrun --nproc_per_node={saved_world}), not {trainer.world.size}"
        )

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

    weights, expected = part("policy/"), set(trainable_state(trainer.policy))
    if set(weights) != expected:
        raise ValueError(
            f"checkpoint weights do not match the policy: {len(set(weights) ^ expected)} names differ"
        )
    trainer.policy.load_state_dict(weights, strict=False)
    optimizer_from_tensors(trainer.optimizer, tensors, meta["optimizer"])
    if trainer.ema is not None:
        trainer.ema.load_state_dict(part("ema/"))
    if trainer.algo is not None:
        trainer.algo.load_state_dict(part("stats/"))
    trainer.best.load(tensors, meta.get("best"))
    if "pinned" in tensors:
        loaded = trainer.envs.unwrapped.loaded
        pinned, expected = tensors["pinned"], (loaded.num_contexts, *loaded.sample_shape[-2:])
        if tuple(pinned.shape) != expected:
            raise ValueError(
                f"the checkpoint's pinned pixels have shape {tuple(pinned.shape)}, not {expected}"
            )
        trainer.pinned = pinned.bool().to(trainer.device)
    restore_rng(tensors, trainer.generator, trainer.envs.unwrapped, trainer.world)
    trainer.epoch, trainer.images = int(meta["epoch"]), int(meta["images"])
    trainer.passes.total = int(meta.get("passes", 0))  # checkpoints from before the count have none
