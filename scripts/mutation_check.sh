#!/usr/bin/env bash
# Mutation check of the test suite (docs/testing.md): plants each documented bug of
# scripts/mutations/*.mut, one at a time, in a scratch copy of the working tree, rebuilds only the
# test binaries that mutation names, runs them and records whether they caught it. Every mutation
# must be caught; the script exits non-zero otherwise. Run by hand (too slow for CI on two cores);
# the last report is committed as tests/mutation/REPORT.md.
#
# usage: scripts/mutation_check.sh [--dry-run] [--only REGEX] [--report PATH]
#   --dry-run     only check that every mutation applies to the working tree (exactly one match of
#                 its original snippet in its file); no build. Fails loudly on drift.
#   --only REGEX  run the mutations whose file name matches REGEX (the report says so)
#   --report PATH where to write the Markdown report (default tests/mutation/REPORT.md; a run with
#                 --only writes tests/mutation/REPORT-partial.md unless --report is given)
# environment:
#   OTCAL_MUTATION_DIR     scratch directory, kept between runs for incremental rebuilds
#                          (default ${TMPDIR:-/tmp}/otcal-mutation-check)
#   OTCAL_MUTATION_REPEAT  runs of each mutant's tests (default 2); see "Verdicts" below
#   OTCAL_MUTATION_SEED    exported as OTCAL_TEST_SEED (default 20240611)
#   OTCAL_MUTATION_TIMEOUT per-test timeout in seconds (default 900; a timeout counts as caught)
#   JOBS                   build parallelism (default 2)
#
# Mutation file format (scripts/mutations/NN-name.mut):
#   # one-line description
#   file: path/relative/to/the/repo
#   tests: test_a test_b            test binaries (tests/<name>.cpp) to rebuild and run, in order
#   --- original
#   <exact text, one or more lines; must occur exactly once in the file>
#   --- replacement
#   <text that replaces it>
#
# Verdicts. The C++ tests draw fresh random inputs (std::random_device, printed on failure), so a
# single run could catch a mutation by luck. Each mutant's tests therefore run REPEAT times, every
# run with its own fresh draws: "caught" needs a failure in every run, "survived" means no run
# failed, and anything in between is "flaky" and counts as not caught. OTCAL_TEST_SEED is exported
# too, fixed, for the tests that honour it. Before any mutation every listed test runs once
# unmutated (baseline); one that fails there is left out of the mutants' runs, named in the report,
# and makes the check fail, so a failure can always be blamed on the mutation.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MUT_DIR="$ROOT/scripts/mutations"
SCRATCH="${OTCAL_MUTATION_DIR:-${TMPDIR:-/tmp}/otcal-mutation-check}"
REPEAT="${OTCAL_MUTATION_REPEAT:-2}"
SEED="${OTCAL_MUTATION_SEED:-20240611}"
TIMEOUT="${OTCAL_MUTATION_TIMEOUT:-900}"
JOBS="${JOBS:-2}"
DRY_RUN=0
ONLY=""
REPORT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --only) ONLY="$2"; shift ;;
    --report) REPORT="$2"; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "mutation_check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$REPORT" ]]; then
  if [[ -n "$ONLY" ]]; then REPORT="$ROOT/tests/mutation/REPORT-partial.md"; else REPORT="$ROOT/tests/mutation/REPORT.md"; fi
fi

SRC="$SCRATCH/src"
BUILD="$SCRATCH/build"
LOGS="$SCRATCH/logs"
mkdir -p "$SCRATCH" "$LOGS"

# The helper: parse, check, apply and revert mutations (exact text, exactly one occurrence).
HELPER="$SCRATCH/mutation_helper.py"
cat > "$HELPER" <<'PY'
import json, os, pathlib, re, sys

def parse(path):
    lines = pathlib.Path(path).read_text().split("\n")
    desc, file, tests, mode = None, None, None, None
    orig, repl = [], []
    for ln in lines:
        if mode is None:
            if ln.startswith("# ") and desc is None: desc = ln[2:].strip()
            elif ln.startswith("file:"): file = ln[5:].strip()
            elif ln.startswith("tests:"): tests = ln[6:].split()
            elif ln == "--- original": mode = "o"
            elif ln.strip(): sys.exit(f"{path}: unexpected line before '--- original': {ln!r}")
        elif ln == "--- replacement": mode = "r"
        elif mode == "o": orig.append(ln)
        else: repl.append(ln)
    while repl and repl[-1] == "": repl.pop()
    if not (desc and file and tests and orig and mode == "r"):
        sys.exit(f"{path}: needs '# description', 'file:', 'tests:', '--- original' and '--- replacement'")
    o, r = "\n".join(orig), "\n".join(repl)
    if o == r: sys.exit(f"{path}: the replacement equals the original")
    return {"id": pathlib.Path(path).stem, "desc": desc, "file": file, "tests": tests, "orig": o, "repl": r}

def check(m, tree):
    p = pathlib.Path(tree) / m["file"]
    if not p.is_file(): return f"{m['id']}: {m['file']} does not exist"
    n = p.read_text().count(m["orig"])
    if n != 1: return f"{m['id']}: the original snippet occurs {n} times in {m['file']} (must be exactly once): the source drifted, update the mutation"
    return None

cmd = sys.argv[1]
if cmd == "list":  # list <dir> <regex> -> JSON lines
    for f in sorted(pathlib.Path(sys.argv[2]).glob("*.mut")):
        if sys.argv[3] and not re.search(sys.argv[3], f.name): continue
        print(json.dumps(parse(f)))
elif cmd == "check":  # check <tree> <mut> -> error text or nothing
    err = check(parse(sys.argv[3]), sys.argv[2])
    if err: print(err); sys.exit(1)
elif cmd == "apply":  # apply <tree> <mut> <backup>
    m = parse(sys.argv[3]); err = check(m, sys.argv[2])
    if err: print(err); sys.exit(1)
    p = pathlib.Path(sys.argv[2]) / m["file"]; text = p.read_text()
    pathlib.Path(sys.argv[4]).write_text(text)
    p.write_text(text.replace(m["orig"], m["repl"], 1))
elif cmd == "field":  # field <mut> <name>
    v = parse(sys.argv[2])[sys.argv[3]]
    print(" ".join(v) if isinstance(v, list) else v)
elif cmd == "sync":  # sync <root> <dest> < NUL-separated paths: copy changed files, drop stale ones
    root, dest = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    wanted = set()
    for rel in sys.stdin.buffer.read().split(b"\0"):
        if not rel: continue
        rel = rel.decode()
        s = root / rel
        if not s.is_file() or s.is_symlink(): continue  # deleted in the working tree
        wanted.add(rel)
        d = dest / rel
        data = s.read_bytes()
        if not d.is_file() or d.read_bytes() != data:
            d.parent.mkdir(parents=True, exist_ok=True); d.write_bytes(data); os.chmod(d, s.stat().st_mode & 0o777)
    for d in list(dest.rglob("*")):
        if d.is_file() and str(d.relative_to(dest)) not in wanted: d.unlink()
else:
    sys.exit("unknown command " + cmd)
PY

mapfile -t MUTS < <(find "$MUT_DIR" -maxdepth 1 -name '*.mut' | sort | { if [[ -n "$ONLY" ]]; then grep -E "$ONLY" || true; else cat; fi; })
if [[ ${#MUTS[@]} -eq 0 ]]; then echo "mutation_check: no mutation matches" >&2; exit 2; fi

# 1. Every mutation must apply to the working tree as it is (drift is an error, not a skip).
drift=0
for m in "${MUTS[@]}"; do
  if ! msg=$(python3 "$HELPER" check "$ROOT" "$m"); then echo "mutation_check: DRIFT: $msg" >&2; drift=1; fi
done
[[ $drift -eq 0 ]] || { echo "mutation_check: some mutations no longer apply; fix scripts/mutations/ first" >&2; exit 2; }
echo "mutation_check: all ${#MUTS[@]} mutations apply to $ROOT"
[[ $DRY_RUN -eq 1 ]] && exit 0

START=$(date +%s)
# 2. Scratch copy of the working tree: tracked files plus untracked, not ignored ones (new tests
#    other engineers have not committed yet), as they are on disk now. Unchanged files keep their
#    timestamps, so a second run rebuilds incrementally.
mkdir -p "$SRC"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard | python3 "$HELPER" sync "$ROOT" "$SRC"
COMMIT=$(git -C "$ROOT" rev-parse HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=normal | wc -l | tr -d ' ')

# 3. One CPU build of everything, once.
export CCACHE_BASEDIR="$SCRATCH"
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DOTCAL_CUDA=OFF -DOTCAL_BUILD_BENCH=OFF \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache > "$LOGS/configure.log" 2>&1 || { tail -30 "$LOGS/configure.log"; exit 2; }
fi
echo "mutation_check: building the unmutated tree in $BUILD"
cmake --build "$BUILD" -j"$JOBS" > "$LOGS/build-baseline.log" 2>&1 || { tail -40 "$LOGS/build-baseline.log"; exit 2; }

export OTCAL_TEST_SEED="$SEED"
export GTEST_FAIL_FAST=1  # the first failing test is all a verdict needs

declare -A BASE_BAD=()
existing_tests() {  # the listed tests that exist in the copy and passed the baseline, in order
  local t out=()
  for t in "$@"; do [[ -f "$SRC/tests/$t.cpp" && -z "${BASE_BAD[$t]:-}" ]] && out+=("$t"); done
  echo "${out[*]:-}"
}

# Runs the given test binaries through CTest (its environment: OTCAL_CLI, OMP_NUM_THREADS...),
# stopping at the first failure. Prints "" when all passed, else what failed first.
run_tests() {
  local log="$1"; shift
  local regex="^($(IFS='|'; echo "$*"))\$"
  if ctest --test-dir "$BUILD" -R "$regex" --stop-on-failure --output-on-failure --timeout "$TIMEOUT" > "$log" 2>&1; then
    echo ""; return
  fi
  local first
  first=$(grep -m1 -oE '^\[  FAILED  \] [A-Za-z0-9_/.]+' "$log" | sed 's/^\[  FAILED  \] //' || true)
  local bin
  bin=$(grep -m1 -oE 'Test +#[0-9]+: [A-Za-z0-9_]+ \.+\*+[A-Za-z]+' "$log" | sed -E 's/Test +#[0-9]+: ([A-Za-z0-9_]+) \.+\*+([A-Za-z]+)/\1 (\2)/' || true)
  if [[ -n "$first" ]]; then echo "${bin%% *}: $first"; elif [[ -n "$bin" ]]; then echo "$bin"; else echo "failed (see log)"; fi
}

# 4. Baseline: every test any selected mutation names must pass unmutated.
declare -A SEEN=()
ALL_TESTS=()
for m in "${MUTS[@]}"; do
  for t in $(existing_tests $(python3 "$HELPER" field "$m" tests)); do
    [[ -n "${SEEN[$t]:-}" ]] || { SEEN[$t]=1; ALL_TESTS+=("$t"); }
  done
done
echo "mutation_check: baseline run of ${ALL_TESTS[*]}"
# A test that fails unmutated cannot judge a mutation: it is left out of every mutant's run, named
# in the report, and the check fails (the suite must be green for a verdict to count).
if ! ctest --test-dir "$BUILD" -R "^($(IFS='|'; echo "${ALL_TESTS[*]}"))\$" --output-on-failure --timeout "$TIMEOUT" \
    > "$LOGS/baseline.log" 2>&1; then
  while read -r t; do BASE_BAD[$t]=1; done < <(sed -n '/The following tests FAILED/,$p' "$LOGS/baseline.log" |
    grep -oE '^[[:space:]]*[0-9]+ - [A-Za-z0-9_]+' | awk '{print $3}')
  [[ ${#BASE_BAD[@]} -gt 0 ]] || { echo "mutation_check: baseline failed (log $LOGS/baseline.log)" >&2; exit 2; }
  echo "mutation_check: FAILING UNMUTATED, left out: ${!BASE_BAD[*]} (log $LOGS/baseline.log)" >&2
fi
BASE_NOTE="passed $(existing_tests "${ALL_TESTS[@]}")"
[[ ${#BASE_BAD[@]} -eq 0 ]] || BASE_NOTE+="; **failing unmutated, left out of every run: ${!BASE_BAD[*]}**"

# 5. One mutation at a time.
ROWS=()
n_caught=0; n_bad=0
for m in "${MUTS[@]}"; do
  id=$(basename "$m" .mut)
  desc=$(python3 "$HELPER" field "$m" desc)
  file=$(python3 "$HELPER" field "$m" file)
  listed=$(python3 "$HELPER" field "$m" tests)
  tests=$(existing_tests $listed)
  missing=""
  for t in $listed; do [[ " $tests " == *" $t "* ]] || missing+="$t "; done
  echo "mutation_check: [$id] $desc"
  if [[ -z "$tests" ]]; then
    ROWS+=("| $id | $desc | \`$file\` | (none of: $listed) | **no tests** | — |"); n_bad=$((n_bad + 1)); continue
  fi
  backup="$SCRATCH/backup.orig"
  python3 "$HELPER" apply "$SRC" "$m" "$backup"
  verdict=""; by=""; caught_runs=0
  if ! cmake --build "$BUILD" -j"$JOBS" --target $tests > "$LOGS/$id.build.log" 2>&1; then
    verdict="**build error**"; by="see logs/$id.build.log"
  else
    for ((r = 1; r <= REPEAT; r++)); do
      what=$(run_tests "$LOGS/$id.run$r.log" $tests)
      if [[ -n "$what" ]]; then caught_runs=$((caught_runs + 1)); [[ -n "$by" ]] || by="$what"; fi
    done
    if [[ $caught_runs -eq $REPEAT ]]; then verdict="caught"
    elif [[ $caught_runs -eq 0 ]]; then verdict="**survived**"; by="—"
    else verdict="**flaky** ($caught_runs/$REPEAT runs)"
    fi
  fi
  cp "$backup" "$SRC/$file"  # revert
  [[ "$verdict" == "caught" ]] && n_caught=$((n_caught + 1)) || n_bad=$((n_bad + 1))
  note=""; [[ -n "$missing" ]] && note=" (left out: ${missing% } — not in the tree yet or failing unmutated)"
  echo "mutation_check:   -> $verdict ${by:+by $by}"
  ROWS+=("| $id | $desc | \`$file\` | ${tests// /, }$note | $verdict | ${by//|/\\|} |")
done
# Leave the scratch build unmutated for the next run.
cmake --build "$BUILD" -j"$JOBS" > "$LOGS/build-final.log" 2>&1 || true

END=$(date +%s)
mkdir -p "$(dirname "$REPORT")"
{
  echo "# Mutation check report"
  echo
  echo "Written by \`scripts/mutation_check.sh\` (docs/testing.md). Do not edit by hand."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: \`$COMMIT\`$([[ $DIRTY -gt 0 ]] && echo " plus the working tree ($DIRTY changed or untracked paths)")"
  echo "- build: CPU, Release, \`-DOTCAL_CUDA=OFF\`; $JOBS build jobs; $(nproc) cores"
  echo "- runs per mutant: $REPEAT (fresh random inputs each; caught = failed in every run); OTCAL_TEST_SEED=$SEED; per-test timeout ${TIMEOUT} s"
  [[ -n "$ONLY" ]] && echo "- subset: mutations matching \`$ONLY\`"
  echo "- baseline (unmutated): $BASE_NOTE"
  echo "- result: **$n_caught of ${#MUTS[@]} caught**$([[ $n_bad -gt 0 ]] && echo ", $n_bad not caught")"
  echo "- elapsed: $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
  echo
  echo "| mutation | planted bug | file | tests run | verdict | first failure |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} > "$REPORT"
echo "mutation_check: $n_caught of ${#MUTS[@]} caught; report $REPORT; logs $LOGS"
[[ $n_bad -eq 0 && ${#BASE_BAD[@]} -eq 0 ]]
