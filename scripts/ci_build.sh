#!/usr/bin/env bash
# Configures, builds and installs otcal (CUDA backend too when nvcc is found), builds a consumer
# project against the installed tree with find_package(otcal), then pip-installs the Python
# package with its test extras into the virtual environment made by ci_install.sh.
# Environment: BUILD_DIR (build), PREFIX (BUILD_DIR/install), OTCAL_CUDA (AUTO),
#              CUDA_ARCHS (90), OTCAL_NATIVE (ON), JOBS (nproc), EXTRA_CMAKE_ARGS, VENV (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PREFIX=${PREFIX:-$PWD/$BUILD_DIR/install}
JOBS=${JOBS:-$(nproc)}
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX"
      -DOTCAL_CUDA="${OTCAL_CUDA:-AUTO}" -DOTCAL_NATIVE="${OTCAL_NATIVE:-ON}")
if command -v ccache >/dev/null 2>&1; then
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  args+=(-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}")
fi
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" "${args[@]}" ${EXTRA_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS"
cmake --install "$BUILD_DIR" >/dev/null
cmake -S tests/consumer -B "$BUILD_DIR/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR/consumer" -j "$JOBS"

# The Python package, as `pip install .` builds it, with the same compiler flags as the library
# above (ccache then serves the library's objects). No build isolation: the build requirements
# are in the environment already (ci_install.sh) and ccache sees stable paths.
VENV=${VENV:-.venv}
pip_args=(--no-build-isolation -C "build-dir=$BUILD_DIR/python" -C "cmake.define.OTCAL_NATIVE=${OTCAL_NATIVE:-ON}"
          -C "cmake.define.OTCAL_CUDA=${OTCAL_CUDA:-AUTO}")
if command -v ccache >/dev/null 2>&1; then
  pip_args+=(-C cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache -C cmake.define.CMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  pip_args+=(-C "cmake.define.CMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-90}")
fi
CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "$VENV/bin/python" -m pip install -q "${pip_args[@]}" ".[test]"
echo "ci_build: built $BUILD_DIR, installed to $PREFIX, consumer built, Python package installed in $VENV"
