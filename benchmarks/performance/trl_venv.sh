#!/usr/bin/env bash
# Builds a separate virtualenv with trl 0.23.1 (DDPOTrainer) for benchmarks/performance/trl_compare.py.
# trl is NOT a dependency of pxpo-gym: this venv only runs benchmarks/performance/trl_compare.py's trl side
# (the script's --trl-python). pxpo-gym itself is not installed here: the trl side imports
# nothing from the project (the driver builds the tiny pipeline folder in the project's venv).
#
#   bash benchmarks/performance/trl_venv.sh [VENV]        # default /tmp/venv-trl
#
# torch is pinned as scripts/bootstrap.sh pins it: "torch==2.13.0" from constraints-dev.txt,
# which pip resolves to the CPU wheel (2.13.0+cpu) from the find-links folder / index set up
# in pip's config on dev/CI machines. Every install below goes through the same constraints
# file, so nothing can pull a looser (CUDA, multi-GB) torch; a dry run checks that first.
# diffusers / transformers / accelerate / peft are pinned to the versions in the project's
# own .venv so both sides of the comparison run the same model code.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-/tmp/venv-trl}
PYTHON=${PYTHON:-python3.11}
CONSTRAINTS=constraints-dev.txt
# Versions of the project's venv (what ours runs with), overridable.
DIFFUSERS=${DIFFUSERS:-0.42.1}
TRANSFORMERS=${TRANSFORMERS:-5.25.0}
ACCELERATE=${ACCELERATE:-1.16.0}
PEFT=${PEFT:-0.21.2}
PACKAGES=(
  "trl==0.23.1"
  "diffusers==$DIFFUSERS"
  "transformers==$TRANSFORMERS"
  "accelerate==$ACCELERATE"
  "peft==$PEFT"
)
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==2.13.0"
# Refuse to go on if the resolver would touch torch or pull CUDA libraries.
REPORT=$(mktemp)
"${PIP[@]}" install -q --dry-run --ignore-installed --report "$REPORT" -c "$CONSTRAINTS" "torch==2.13.0" "${PACKAGES[@]}"
"$VENV/bin/python" - "$REPORT" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
torch = names.get("torch", "")
cuda = sorted(n for n in names if n.startswith("nvidia-") or n.startswith("triton"))
if not torch.endswith("+cpu") or cuda:
    sys.exit(f"refusing: the resolver picked torch {torch!r} and {cuda}: not the CPU wheel")
PY
rm -f "$REPORT"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "${PACKAGES[@]}"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
assert torch.__version__.endswith("+cpu"), torch.__version__
from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline  # noqa: F401
print(" ".join(f"{n}=={md.version(n)}" for n in ("trl", "torch", "diffusers", "transformers", "accelerate", "peft", "datasets")))
PY
echo "trl venv ready: $VENV"
