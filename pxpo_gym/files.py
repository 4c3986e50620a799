"""Every file a run writes goes through here: atomic replacement, and one fault point a test can fail.

A write can crash (kill -9, a full disk, a read-only mount) at any point. The rules
that make every crash recoverable:

- a whole file is written to ``.NAME.tmp`` beside it, flushed, then renamed over the old one
  (``write_atomic``), so a reader sees the old file or the new one, never half of one;
- a line appended to a log (``append_line``) may be cut short by a crash; the reader that resumes
  keeps only the rows the last checkpoint covers (``agents.metrics.MetricsLogger``);
- before each write (and between the halves of one) the code calls ``fault_point(path)``.
  ``FAULTS.hook``, None in normal use, lets a test fail exactly the N-th write with ENOSPC or a
  simulated kill and check that ``--resume`` finishes what was cut off (``tests/agents/test_crash.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


class Faults:
    """The fault-injection hook: ``hook(path)`` is called at every fault point (None: no faults)."""

    hook: Callable[[Path], None] | None = None


FAULTS = Faults()


def fault_point(path: str | Path) -> None:
    """Marks a write about to happen (a test's hook may raise here)."""
    if FAULTS.hook is not None:
        FAULTS.hook(Path(path))


def _fsync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Writes ``data`` to ``path`` all or nothing (through ``.NAME.tmp`` and a rename); makes the parent.

    Raises:
        OSError: the write failed (the old file, if any, is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    fault_point(path)
    with open(tmp, "wb") as handle:
        handle.write(payload[: len(payload) // 2])
        fault_point(path)  # a crash here leaves half a temporary file, never half of ``path``
        handle.write(payload[len(payload) // 2 :])
        _fsync(handle)
    os.replace(tmp, path)
    return path


def append_line(path: str | Path, line: str) -> None:
    """Appends one line (``line`` ends with its newline) and flushes it to disk.

    A crash between the halves leaves a cut line at the end; readers that resume drop it.
    """
    path = Path(path)
    fault_point(path)
    with open(path, "a", newline="") as handle:
        handle.write(line[: len(line) // 2])
        fault_point(path)
        handle.write(line[len(line) // 2 :])
        _fsync(handle)
