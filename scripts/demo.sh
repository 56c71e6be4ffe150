#!/usr/bin/env bash
# Builds only what the demo needs (the library and the otcal tool; no tests, no benches) and runs
# `otcal demo`. The CUDA backend is compiled only when a GPU is there to run it (nvidia-smi finds
# one), so a machine without a GPU does not spend minutes in nvcc for a demo that runs on the CPU.
# Environment: BUILD_DIR (build-demo), JOBS (nproc), OTCAL_CUDA (AUTO with a GPU, else OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-demo}
JOBS=${JOBS:-$(nproc)}
cuda=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=AUTO; fi
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOTCAL_CUDA="${OTCAL_CUDA:-$cuda}" \
  -DOTCAL_BUILD_TESTS=OFF -DOTCAL_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target otcal_cli
"$BUILD_DIR/otcal" demo "$@"
