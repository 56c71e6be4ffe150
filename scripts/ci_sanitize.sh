#!/usr/bin/env bash
# The CPU test set (ctest -L cpu) on a build of the library, the tool, the benches and the tests
# with AddressSanitizer and UndefinedBehaviorSanitizer (docs/testing.md §4). Every report is fatal
# (-fno-sanitize-recover=all, halt_on_error): a test that trips a sanitizer fails.
# The tool tests run the sanitized otcal binary; the bench smoke test the sanitized benches.
# Left out, because they cannot run sanitized here: the CUDA backend (nvcc device code has no
# ASan/UBSan; compute-sanitizer covers it on GPU machines, scripts/gpu_check.sh) and MPI (Open MPI's
# own leaks and uninstrumented transports drown the reports; the mpi_* tests run in the plain build).
# Python tests are not run: the extension would need the sanitizer runtime preloaded into python.
# Environment: BUILD_DIR (build-asan), JOBS (nproc), CXX (the compiler; default g++),
#              OTCAL_NATIVE (ON), EXTRA_CMAKE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g1 -DNDEBUG"
args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="${CXX:-g++}"
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
      -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
      -DOTCAL_CUDA=OFF -DOTCAL_MPI=OFF -DOTCAL_BUILD_PYTHON=OFF -DOTCAL_BUILD_BENCH=ON
      -DOTCAL_NATIVE="${OTCAL_NATIVE:-ON}")
if command -v ccache >/dev/null 2>&1; then
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" "${args[@]}" ${EXTRA_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS"

# detect_leaks: leaks fail too. abort_on_error is off so that ctest sees an exit code, not a core.
# OpenMP's thread pool outlives main; its allocations are reachable, not leaks.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
start=$(date +%s)
ctest --test-dir "$BUILD_DIR" -L cpu --output-on-failure -j "${JOBS}" --timeout 1800
echo "ci_sanitize: ctest -L cpu passed under ASan+UBSan in $(( $(date +%s) - start )) s ($BUILD_DIR)"
