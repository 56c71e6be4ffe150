#!/usr/bin/env bash
# Installs the Python package with pip into the virtual environment made by ci_install.sh and runs
# `python -m otcal demo`. As scripts/demo.sh, the CUDA backend is compiled only when a GPU is there
# to run it (set OTCAL_CUDA=AUTO to compile it whenever nvcc exists).
# Environment: VENV (.venv), OTCAL_CUDA (AUTO with a GPU, else OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
cuda=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=AUTO; fi
export OTCAL_CUDA=${OTCAL_CUDA:-$cuda}
export CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)}
"$VENV/bin/python" -m pip install -q .
"$VENV/bin/python" -m otcal demo "$@"
