"""What every benchmark records about how its result was made, and where results go by default.

Shared by the suite harness (``benchmarks.suite``), the one-question studies (``benchmarks.studies``)
and the performance measurements (``benchmarks.performance``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRATCH = "outputs/benchmarks"
"""Where benchmark commands write unless told otherwise (untracked): the committed results in
benchmarks/results/ change only when a command names them with --out (as the docs' commands do)."""
RESULTS = "benchmarks/results"
"""The committed results: one folder per study (its about.json: command, commit, summary), indexed in
benchmarks/results/INDEX.md (``python -m benchmarks.index``)."""


def scratch(name: str) -> str:
    """The default output path of a benchmark: ``SCRATCH/name``."""
    return f"{SCRATCH}/{name}"


def git_commit() -> str:
    """Short hash of HEAD (empty outside a git checkout)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def provenance(module: str) -> dict[str, str]:
    """What a result file records about how it was made: the commit and the command (this process's flags)."""
    return {"commit": git_commit(), "command": " ".join(["python -m", module, *sys.argv[1:]])}


def write_result(out: str | Path, result: dict, indent: int = 1) -> Path:
    """Writes a benchmark's result dict as JSON to ``out`` (its folder made if missing); returns the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent) + "\n")
    return path
