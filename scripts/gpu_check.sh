#!/usr/bin/env bash
# GPU check, run on a machine with an NVIDIA GPU (the lent H100/H200 machines, which have the CUDA
# toolkit, CMake and a compiler but perhaps not the header-only packages: run
# scripts/gather_deps.sh here first and carry .deps/ along).
#
#   scripts/gpu_check.sh [--quick] [stage...]   stages: build gpu-tests sanitize bench (default: all)
#
# --quick (or QUICK=1): the profile for a lent GPU machine's 15 minutes, about 9 minutes on a
# 16-core H200 machine: builds only the gpu_* test binaries (every tests/gpu_*.cpp, so new ones such
# as gpu_lse_tensor_core or gpu_newton_solve come along) and the three bench binaries (not the
# tool, the cpu tests or the Python module), and puts a time limit on every stage:
#   build 300 s | gpu-tests 150 s | sanitize 4 x 45 s (memcheck + racecheck of $SANITIZE_FILTER on
#   gpu_backend and gpu_sparsify) | bench 240 s in all: the key benches, each a cold process with
#   its own limit (quick_benches below: row LSE through fixed-length Sinkhorn at n = m = 1e5 and
#   1e6, d = 3 and 64, float32, and float64 at 1e5; the gradient calibration epoch at 1.5M
#   records x 4k targets; sparsify at 1e5), one JSON record each under $LOG_DIR/bench/ and all of
#   them in $LOG_DIR/bench/quick-benches.json, with the achieved rate, the ceiling and the fraction
# (build: the three CUDA objects took 80 s of CPU, 66 s wall on 2 loaded cores, here; with 16
# cores the longest single object, cuda_backend.cu, bounds it: about 2 minutes expected, not yet
# measured on the GPU machine; docs/testing.md §5).
#
# 1. build       CUDA build (sm_$CUDA_ARCHS, default 90) in $BUILD_DIR against .deps/.
# 2. gpu-tests   ctest -L gpu.
# 3. sanitize    compute-sanitizer memcheck and racecheck on the gpu_* test binaries, restricted
#                by a gtest filter ($SANITIZE_FILTER) because sanitized kernels run 10-100x slower.
# 4. bench       bench/run_sweeps.py --device cuda (gpu profile: peak/time vs batch and n, Sinkhorn
#                at n = m = 1e5 and 1e6 for d = 3 and 64, sparsify at 1e5, calibration at
#                1.5M records x 4k targets), plus the CPU speed check against dense numpy; writes
#                one results file bench/results/gpu-check-<device>-<date>.json (device, commit, date).
# Logs go to $LOG_DIR (default $OUT when set, the device machine's returned folder, else
# $BUILD_DIR/gpu-check-logs). Exit status: non-zero when any stage failed (all stages still run).
#
# Environment: BUILD_DIR (build-gpu), CUDA_ARCHS (90), JOBS (nproc), DEPS_DIR (.deps), BENCH_BUDGET
#   (quick profile: seconds for all the benches, 240),
#   SWEEPS (comma list: batch,n_peak,n_time,large,sparsify,calibrate; default all),
#   SANITIZE_FILTER ('CudaVsCpu/*.ValidityFlags:CudaVsCpu/*.UploadNorms*'), OTT_PATH (OTT-JAX checkout,
#   optional), PYTHON (/usr/bin/python3 when it has numpy, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
QUICK=${QUICK:-0}
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
BUILD_DIR=${BUILD_DIR:-build-gpu}
CUDA_ARCHS=${CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
DEPS_DIR=${DEPS_DIR:-$root/.deps}
SANITIZE_FILTER=${SANITIZE_FILTER:-'CudaVsCpu/*.ValidityFlags:CudaVsCpu/*.UploadNorms*'}
LOG_DIR=${LOG_DIR:-${OUT:-$BUILD_DIR/gpu-check-logs}}
mkdir -p "$LOG_DIR"
if [ -z "${PYTHON:-}" ]; then
  if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
export PATH="/usr/local/cuda/bin:$PATH"

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build gpu-tests sanitize bench)
failed=()
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
step() {  # name command...: runs, logs, records failure, never aborts the script
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  if "$@" >"$LOG_DIR/$name.log" 2>&1; then echo "   ok in $((SECONDS - t0)) s ($LOG_DIR/$name.log)"
  else echo "   FAILED (rc $?, 124: timed out) in $((SECONDS - t0)) s; tail of $LOG_DIR/$name.log:"
       tail -n 30 "$LOG_DIR/$name.log"; failed+=("$name"); fi
}
# limit SECONDS: the quick profile's time limit of a stage's command (none in the full profile).
limit() { if [ "$QUICK" = 1 ]; then echo timeout --kill-after=10 "$1"; fi; }
have_gpu() { nvidia-smi -L >/dev/null 2>&1; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >"$LOG_DIR/nvidia-smi.csv" 2>&1 || true
cat "$LOG_DIR/nvidia-smi.csv"

if want build; then
  deps_args=()
  if [ -d "$DEPS_DIR" ]; then
    deps_args=(-DOTCAL_DEPS_DIR="$DEPS_DIR" -DOTCAL_GTEST_SOURCE_DIR="$DEPS_DIR/googletest")
  else
    echo "gpu_check: no $DEPS_DIR; using the system's packages (run scripts/gather_deps.sh where they exist)"
  fi
  launcher=()
  command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  step configure cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOTCAL_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" -DOTCAL_NATIVE=ON "${deps_args[@]}" "${launcher[@]}"
  if [ "$QUICK" = 1 ]; then
    # Only what the later stages run: the gpu_* tests and the bench binaries.
    # QUICK_TARGETS (space-separated) replaces the list, e.g. for a dry run of this stage.
    targets=(otcal_bench_sinkhorn otcal_bench_sparsify otcal_bench_calibrate)
    for src in tests/gpu_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
    [ -n "${QUICK_TARGETS:-}" ] && read -r -a targets <<<"$QUICK_TARGETS"
    step build $(limit 300) cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"
  else
    step build cmake --build "$BUILD_DIR" -j "$JOBS"
    "$BUILD_DIR/otcal" info >"$LOG_DIR/otcal-info.txt" 2>&1 && cat "$LOG_DIR/otcal-info.txt"
  fi
fi
if [ "$QUICK" = 1 ] && ! have_gpu; then
  echo "gpu_check: no GPU here (nvidia-smi -L failed): the gpu-tests, sanitize and bench stages are skipped"
  for s in gpu-tests sanitize bench; do want "$s" && echo "   skipped: $s"; done
  stages=(build)
fi

if want gpu-tests; then
  step ctest-gpu $(limit 150) ctest --test-dir "$BUILD_DIR" -L gpu --output-on-failure --timeout 1200
fi

if want sanitize; then
  if command -v compute-sanitizer >/dev/null 2>&1; then
    bins=("$BUILD_DIR"/tests/gpu_*)
    [ "$QUICK" = 1 ] && bins=("$BUILD_DIR"/tests/gpu_backend "$BUILD_DIR"/tests/gpu_sparsify)
    for bin in "${bins[@]}"; do
      [ -x "$bin" ] || continue
      name=$(basename "$bin")
      for tool in memcheck racecheck; do
        step "sanitize-$tool-$name" $(limit 45) compute-sanitizer --tool "$tool" --error-exitcode 1 \
          "$bin" --gtest_filter="$SANITIZE_FILTER"
      done
    done
  else
    echo "gpu_check: compute-sanitizer not found; sanitize stage skipped"; failed+=(sanitize-missing)
  fi
fi

# The quick profile's benches: one cold process per configuration, each under its own limit and
# all of them within BENCH_BUDGET seconds (a configuration that would start with less than 20 s
# left is skipped and named). Sizes: a Sinkhorn iteration is two row LSEs over n x m entries;
# 1e6 x 1e6 at d = 64 is one iteration (tens of seconds with the row engine), the rest are a few.
quick_benches() {
  local dir="$LOG_DIR/bench" t0=$SECONDS rc=0
  local budget=${BENCH_BUDGET:-240}
  mkdir -p "$dir"
  one() {  # name limit-seconds bench args...
    local name=$1 lim=$2 bin="$BUILD_DIR/bench/otcal-bench-$3"; shift 3
    local left=$((budget - (SECONDS - t0)))
    if [ "$left" -lt 20 ]; then echo "   $name: skipped, the bench budget ($budget s) is spent"; rc=1; return; fi
    [ "$lim" -gt "$left" ] && lim=$left
    local r0=$SECONDS
    timeout --kill-after=5 "$lim" "$bin" --device cuda --memory-budget 16GiB "$@" >"$dir/$name.out" 2>"$dir/$name.err"
    local status=$?
    grep '^OTCAL_BENCH ' "$dir/$name.out" | sed 's/^OTCAL_BENCH //' >"$dir/$name.json"
    if [ "$status" -ne 0 ] || [ ! -s "$dir/$name.json" ]; then
      echo "   $name: FAILED (rc $status, 124: timed out after $lim s)"; tail -n 5 "$dir/$name.err"; rc=1
    else
      echo "   $name ($((SECONDS - r0)) s): $(grep '^otcal-bench' "$dir/$name.err" | tail -n 1)"
    fi
  }
  local sk=(--iterations)
  one lse-f32-d3-n1e5 40 sinkhorn --precision float32 --n 100000 --d 3 "${sk[@]}" 10 --warmup 1 --repeats 3
  one lse-f32-d64-n1e5 40 sinkhorn --precision float32 --n 100000 --d 64 "${sk[@]}" 5 --warmup 1 --repeats 3
  one lse-f64-d3-n1e5 40 sinkhorn --precision float64 --n 100000 --d 3 "${sk[@]}" 3 --warmup 1 --repeats 3
  one lse-f64-d64-n1e5 45 sinkhorn --precision float64 --n 100000 --d 64 "${sk[@]}" 2 --warmup 0 --repeats 1
  one lse-f32-d3-n1e6 60 sinkhorn --precision float32 --n 1000000 --d 3 "${sk[@]}" 2 --warmup 0 --repeats 1
  one calibrate-gradient-1.5Mx4k 90 calibrate --records 1500000 --targets 4000 --categories 100 \
    --method gradient --epochs 10 --warmup 1 --repeats 3
  one lse-f32-d64-n1e6 120 sinkhorn --precision float32 --n 1000000 --d 64 "${sk[@]}" 1 --warmup 0 --repeats 1
  one sparsify-f32-d3-n1e5 45 sparsify --precision float32 --n 100000 --d 3 --warmup 1 --repeats 3
  # Every record in one file (each line of a .json above is one record).
  "$PYTHON" - "$dir" <<'PY' || rc=1
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
recs = [json.loads(l) | {"config": p.stem} for p in sorted(d.glob("*.json")) if p.name != "quick-benches.json"
        for l in p.read_text().splitlines() if l.strip()]
(d / "quick-benches.json").write_text(json.dumps(recs, indent=1) + "\n")
for r in recs:
    c = r.get("ceiling") or {}
    print(f"{r['config']}: {r['throughput']:.3g} {r['throughput_unit']}, {c.get('binding')} ceiling "
          f"{c.get('ceiling_rate') or 0:.3g}, fraction {c.get('fraction') or 0:.3f}")
PY
  return $rc
}

if want bench; then
  if [ "$QUICK" = 1 ]; then
    step bench quick_benches
    tail -n 12 "$LOG_DIR/bench.log"
  else
    sweep_args=(--build "$BUILD_DIR" --device cuda --name gpu-check --dense-numpy --timeout 1800)
    [ -n "${SWEEPS:-}" ] && sweep_args+=(--sweeps "$SWEEPS")
    [ -n "${OTT_PATH:-}" ] && sweep_args+=(--ott "$OTT_PATH")
    step bench "$PYTHON" bench/run_sweeps.py "${sweep_args[@]}"
    tail -n 12 "$LOG_DIR/bench.log"
    # Keep a copy of the results next to the logs (the device machine's $OUT comes back).
    cp bench/results/gpu-check-*.json "$LOG_DIR/" 2>/dev/null || true
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: FAILED stages: ${failed[*]}"
  exit 1
fi
echo "gpu_check: all stages passed"
