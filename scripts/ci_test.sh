#!/usr/bin/env bash
# Runs the find_package(otcal) consumer, the CPU test set (label cpu) and the Python tests
# (gpu-marked ones skip without a CUDA device).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
"$BUILD_DIR/consumer/otcal_consumer"
ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j "${JOBS:-2}" --timeout 900
VENV=${VENV:-.venv}
"$VENV/bin/python" -m pytest tests/python -q -m "not slow"
