#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with clang (address and undefined sanitizers, the library
# instrumented too) and runs each for a bounded time from its seed corpus (fuzz/corpus/<harness>/,
# read only; new inputs go to BUILD_DIR/fuzz-corpus/<harness>/). Fails on any finding: a crash, a
# sanitizer report, an exception other than otcal::InvalidArgument, a broken property, a leak, an
# allocation over the memory limit or an input that runs past the per-input timeout. The input that
# caused it is saved as BUILD_DIR/fuzz-findings/<harness>-<kind>-<hash> (docs/testing.md §4).
# Environment: BUILD_DIR (build-fuzz), FUZZ_SECONDS (45 per harness), FUZZ_HARNESSES (all),
#              JOBS (nproc), CXX (clang++, or the newest clang++-NN found).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-45}
JOBS=${JOBS:-$(nproc)}
harnesses=(${FUZZ_HARNESSES:-fuzz_npy fuzz_npz_piece fuzz_csv fuzz_spec_json fuzz_sizes})

cxx=${CXX:-}
if [ -z "$cxx" ] || [[ "$cxx" != *clang* ]]; then
  cxx=$(command -v clang++ || ls /usr/bin/clang++-* 2>/dev/null | sort -V | tail -1 || true)
fi
if [ -z "$cxx" ]; then
  echo "ci_fuzz: no clang++ (Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 1
fi
# libFuzzer ships in compiler-rt (Debian: libclang-rt-NN-dev); say so instead of failing in the build.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err"; then
  cat "$probe/err" >&2
  echo "ci_fuzz: $cxx cannot link libFuzzer (Debian: apt-get install libclang-rt-dev)" >&2
  exit 1
fi

args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g"
      -DOTCAL_FUZZ=ON -DOTCAL_BUILD_TESTS=OFF -DOTCAL_BUILD_TOOL=OFF -DOTCAL_BUILD_BENCH=OFF
      -DOTCAL_BUILD_PYTHON=OFF -DOTCAL_CUDA=OFF -DOTCAL_MPI=OFF)
if command -v ccache >/dev/null 2>&1; then
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$BUILD_DIR" "${args[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${harnesses[@]}"

# The longest input worth trying per harness: headers plus a few values, a small archive, short text.
declare -A max_len=([fuzz_npy]=4096 [fuzz_npz_piece]=8192 [fuzz_csv]=4096 [fuzz_spec_json]=4096 [fuzz_sizes]=64)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:allocator_may_return_null=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
findings="$BUILD_DIR/fuzz-findings"
mkdir -p "$findings"
failed=()
summary=()
for h in "${harnesses[@]}"; do
  corpus="$BUILD_DIR/fuzz-corpus/$h"
  log="$BUILD_DIR/fuzz-$h.log"
  mkdir -p "$corpus"
  rc=0
  # -malloc_limit_mb: a header that claims a huge array must be refused, not allocated (inputs are a
  # few KiB; no reader needs 256 MiB in one piece for them). -timeout: one input, at most 10 s.
  "$BUILD_DIR/fuzz/$h" "$corpus" "fuzz/corpus/$h" -max_total_time="$FUZZ_SECONDS" -max_len="${max_len[$h]:-4096}" \
    -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 -print_final_stats=1 -artifact_prefix="$findings/$h-" >"$log" 2>&1 || rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  if [ "$rc" -ne 0 ]; then
    failed+=("$h")
    summary+=("ci_fuzz: $h FINDING (exit $rc) after ${runs} runs; input in $findings/, log $log")
    grep -E 'ERROR:|FINDING|runtime error|Test unit written' "$log" | head -5 >&2 || true
  else
    summary+=("ci_fuzz: $h ok: ${runs} runs in ${FUZZ_SECONDS} s, coverage ${cov} edges, corpus $(ls "$corpus" | wc -l) + $(ls "fuzz/corpus/$h" | wc -l) seeds")
  fi
done
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "ci_fuzz: findings in ${failed[*]} (reproduce: $BUILD_DIR/fuzz/<harness> <input file>)" >&2
  exit 1
fi
