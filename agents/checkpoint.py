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
import shutil
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.safetensors"
META_FILE = "meta.json"
POINTER = "latest"


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
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_FILE))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    _fsync_dir_files(tmp)
    final = root / name
    if final.exists():  # re-saving an epoch: move the old one aside first
        old = root / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    pointer_tmp = root / f".{POINTER}.tmp"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, root / POINTER)
    for stale in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-keep]:
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
    folder = root / pointer.read_text().strip()
    try:
        tensors = load_file(str(folder / STATE_FILE))
        meta = json.loads((folder / META_FILE).read_text())
    except Exception as err:  # SafetensorError, OSError, JSONDecodeError
        raise ValueError(f"resume={str(run_dir)!r}: checkpoint {folder} is unreadable: {err}") from err
    return tensors, meta


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
