#!/usr/bin/env bash
# Creates a virtualenv (default .venv; set VENV to choose) and installs pxpo-gym
# in it with the dev, LoRA, Stable Diffusion (transformers) and refine (web page) extras. torch is pinned to 2.13.0 through
# constraints-dev.txt so that dev/CI machines take the CPU wheel; the library's
# own requirement (pyproject.toml) stays a broad range for CUDA users.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints-dev.txt "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c constraints-dev.txt -e ".[dev,lora,sd,refine]"
echo "pxpo-gym installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
