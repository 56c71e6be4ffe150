#!/usr/bin/env bash
# Runs the CPU test set (label cpu) and the find_package(otcal) consumer.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
"$BUILD_DIR/consumer/otcal_consumer"
ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j "${JOBS:-2}" --timeout 900
