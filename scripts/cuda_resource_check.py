#!/usr/bin/env python3
"""Resource report of the CUDA backend's kernels, from the compiler, on a machine without a GPU.

    cuda_resource_check.py --build DIR [--instructions] [--json F] [--markdown F]

Recompiles each CUDA source of the otcal library with the exact command of the build in DIR
(build.ninja's command, or compile_commands.json), to a cubin for the build's first real
architecture, with ptxas' resource report (--resource-usage) and the PTX kept (--keep). This needs
nvcc and ptxas only (cuobjdump, nvdisasm and a GPU are not needed: the toolkit on the CI machines
has neither of the first two, and an object's fatbinary is compressed).

Checks, for every kernel of namespace otcal (cub's kernels are not ours to fix):
  * no local-memory spill: spill stores and spill loads must be 0, unless the kernel is in
    ALLOWED_SPILLS below with at most the listed bytes;
  * registers within what the kernel's __launch_bounds__ allow: 65536 registers per SM /
    (maxThreadsPerBlock rounded up to whole warps * minBlocksPerSM), rounded down to the
    allocation unit of 8 registers per thread, at most 255 (.maxntid / .minnctapersm of the PTX);
  * every hot kernel of HOT_KERNELS is there (a renamed kernel must not pass by vanishing).
Exit status 1 names each failing kernel (demangled) and its numbers; 2 when it could not compile.

--instructions adds, per hot kernel, the instruction count of its innermost loop in the PTX (and
in the SASS when a disassembler is found: $OTCAL_NVDISASM, nvdisasm or cuobjdump on PATH, next to
nvcc or in $CUDA_HOME/bin), divided by the entries that loop processes, and, for the row kernels
(row engine and lse_fast), the issued instructions per cost entry at d = 3 and d = 64: the chunk
loop's static count plus its nested loops times their trips, over the entries of one chunk
iteration (per_entry_model; docs/testing.md, "GPU checks without a GPU").

Always (with or without --instructions): the float32 sqeuclidean lse_fast kernel for d = 3 must
issue at most LSE_FAST_D3_BUDGET instructions per entry (skipped, with a message, when the build
has no lse_fast kernel).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REGISTERS_PER_SM = 65536
REGISTER_UNIT = 8  # registers per thread are allocated in steps of 8 (256 per warp)
MAX_REGISTERS = 255
ROW_CHUNK = 32  # cuda/row_engine.cuh kChunk: cost terms per coordinate step of the inner loop
SLAB = 16  # cuda/row_engine.cuh kSlab: coordinates per shared-memory slab
ROWS_PER_BLOCK = 128  # cuda/row_engine.cuh kRowsPerBlock: threads per block
# The issue-13 target: the float32 sqeuclidean row LSE for d = 3 (the lse_fast kernel) issues at most
# this many SASS instructions per cost entry (PTX when no disassembler is found). Checked whenever an
# lse_fast kernel exists, with or without --instructions; skipped, with a message, when none does.
LSE_FAST_D3_BUDGET = 8.0
# What the budget is checked on: "hot" (the chunk loop without the cold path's branch regions: the
# instructions every accepted chunk issues) or "static" (every basic block of the chunk loop, the
# cold path included: an upper bound). Both are printed.
LSE_FAST_BUDGET_ON = "hot"

# Kernels allowed to spill, with the most bytes (stores, loads) each may spill and why. A kernel
# here that spills more fails; one that no longer spills should be taken out. nvcc 13.0, sm_90:
# ptxas spills these at 64-96 registers whatever -maxrregcount or --register-usage-level says.
ALLOWED_SPILLS: dict[str, tuple[int, int, str]] = {
    # apply, float32 pnorm / sq_pnorm: one 32-bit value stored before the chunk loop and read once
    # after it (not in the loop).
    r"row_engine_kernel<\(otcal::CostKind\)[34], float, otcal::detail::cuda_engine::PlanEntry<"
    r"\(otcal::CostKind\)[34], float>, otcal::detail::cuda_engine::ApplyReduction<float>": (4, 4, "outside the loop"),
}

COSTS = ["sqeuclidean", "euclidean", "cosine", "pnorm", "sq_pnorm"]


def _row_engine(cost: int, dtype: str, formula: str, reduction: str) -> str:
    return (rf"^otcal::detail::cuda_engine::row_engine_kernel<\(otcal::CostKind\){cost}, {dtype}, "
            rf"otcal::detail::cuda_engine::{formula}<\(otcal::CostKind\){cost}, {dtype}>, "
            rf"otcal::detail::cuda_engine::{reduction}<{dtype}> ?>")


# The hot kernels: (label, regex on the demangled name, entries of its innermost loop per
# iteration or None when the loop is not per entry). Every one must be found.
HOT_KERNELS: list[tuple[str, str]] = []
for _dtype in ("float", "double"):
    for _cost, _name in enumerate(COSTS):
        HOT_KERNELS.append((f"lse {_dtype} {_name}", _row_engine(_cost, _dtype, "LseExponent", "LseReduction")))
        HOT_KERNELS.append((f"apply {_dtype} {_name}", _row_engine(_cost, _dtype, "PlanEntry", "ApplyReduction")))
HOT_KERNELS += [
    ("sparsify row_max", r"^otcal::detail::cuda_sparsify::row_max_kernel<"),
    ("sparsify key_histogram", r"^otcal::detail::cuda_sparsify::key_histogram_kernel<"),
    ("sparsify count", r"^otcal::detail::cuda_sparsify::count_kernel<"),
    ("sparsify compact", r"^otcal::detail::cuda_sparsify::compact_kernel<"),
    ("sparsify mass_cut", r"^otcal::detail::cuda_sparsify::mass_cut_kernel<"),
    ("calibration spmv", r"^otcal::calib::\(anonymous namespace\)::granule_partials_kernel<"),
    ("calibration newton_matrix", r"^otcal::calib::\(anonymous namespace\)::newton_matrix_kernel"),
    ("calibration gradient", r"^otcal::calib::\(anonymous namespace\)::gradient_kernel"),
]


def fail(msg: str, code: int = 2) -> None:
    print(f"cuda_resource_check: {msg}", file=sys.stderr)
    sys.exit(code)


# --- the build's compile commands -----------------------------------------------------------------
def compile_commands(build: Path) -> dict[str, list[str]]:
    """Source path -> argv of the otcal library's CUDA compiles."""
    out: dict[str, list[str]] = {}
    db = build / "compile_commands.json"
    if (build / "build.ninja").exists():
        listing = subprocess.run(["ninja", "-C", str(build), "-t", "commands", "otcal"], capture_output=True,
                                 text=True, check=False)
        if listing.returncode != 0:
            fail(f"ninja -t commands failed in {build}: {listing.stderr.strip()}")
        lines = listing.stdout.splitlines()
    elif db.exists():
        lines = [e["command"] if "command" in e else shlex.join(e["arguments"]) for e in json.loads(db.read_text())]
    else:
        fail(f"--build {build}: neither build.ninja nor compile_commands.json (configure with -G Ninja "
             "or -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)")
    for line in lines:
        argv = shlex.split(line)
        src = next((a for a in argv if a.endswith(".cu")), None)
        if src and "otcal.dir" in line and any(Path(a).name == "nvcc" for a in argv):
            out[src] = argv
    if not out:
        fail(f"--build {build}: no CUDA compile of the otcal library (configure with -DOTCAL_CUDA=ON)")
    return out


def cubin_command(argv: list[str], src: str, work: Path) -> tuple[list[str], str]:
    """The build's command, turned into a cubin + kept PTX compile with the resource report."""
    nvcc = next(i for i, a in enumerate(argv) if Path(a).name == "nvcc")  # drops ccache and co.
    args = argv[nvcc:]
    out, arch, skip = [args[0]], None, False
    for i, a in enumerate(args[1:], 1):
        if skip:
            skip = False
            continue
        if a in ("-o", "-MT", "-MF", "-gencode", "--generate-code", "-arch", "--gpu-architecture",
                 "-code", "--gpu-code"):
            if a in ("-gencode", "--generate-code", "-arch", "--gpu-architecture") and arch is None:
                arch = _real_arch(args[i + 1])
            skip = True
            continue
        m = re.match(r"^(--generate-code|-gencode|-arch|--gpu-architecture)=(.*)$", a)
        if m:
            arch = arch or _real_arch(m.group(2))
            continue
        if a in ("-c", "-MD", "-MMD") or a.startswith(("-code=", "--gpu-code=")):
            continue
        out.append(a)
    if arch is None:
        fail(f"no sm_ architecture in the compile command of {src}")
    stem = Path(src).stem
    out += [f"-arch={arch}", "-cubin", "--resource-usage", "--keep", "--keep-dir", str(work),
            "-o", str(work / f"{stem}.cubin")]
    return out, arch


def _real_arch(spec: str) -> str | None:
    m = re.search(r"sm_(\d+a?)", spec) or re.search(r"compute_(\d+a?)", spec)
    return f"sm_{m.group(1)}" if m else None


# --- ptxas' report and the PTX --------------------------------------------------------------------
ENTRY = re.compile(r"Compiling entry function '([^']+)'")
PROPS = re.compile(r"Function properties for (\S+)")
SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")


def parse_resources(text: str) -> dict[str, dict]:
    kernels: dict[str, dict] = {}
    entries: set[str] = set()
    current = None
    for line in text.splitlines():
        if m := ENTRY.search(line):
            entries.add(m.group(1))
            kernels.setdefault(m.group(1), {"stack": 0, "spill_stores": 0, "spill_loads": 0, "registers": None})
        elif m := PROPS.search(line):
            current = m.group(1) if m.group(1) in entries else None
        elif current and (m := SPILL.search(line)):
            k = kernels[current]
            k["stack"], k["spill_stores"], k["spill_loads"] = (int(x) for x in m.groups())
        elif current and (m := USED.search(line)):
            kernels[current]["registers"] = int(m.group(1))
    return kernels


def ptx_entries(ptx: str) -> dict[str, dict]:
    """Entry name -> launch bounds and body lines of the PTX."""
    out: dict[str, dict] = {}
    starts = [m for m in re.finditer(r"^\.(?:visible |weak )?\.entry (\S+)\($", ptx, re.M)]
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(ptx)
        text = ptx[m.end():end]
        brace = text.find("\n{")
        head, body = text[:brace], text[brace:]
        maxntid = re.search(r"\.maxntid (\d+)(?:, (\d+))?(?:, (\d+))?", head)
        threads = None
        if maxntid:
            threads = 1
            for g in maxntid.groups():
                threads *= int(g) if g else 1
        minb = re.search(r"\.minnctapersm (\d+)", head)
        out[m.group(1)] = {"max_threads": threads, "min_blocks": int(minb.group(1)) if minb else None,
                           "body": body}
    return out


def register_limit(max_threads: int | None, min_blocks: int | None) -> int:
    if not max_threads:
        return MAX_REGISTERS
    warps = (max_threads + 31) // 32
    limit = REGISTERS_PER_SM // (warps * 32 * (min_blocks or 1))
    return min(MAX_REGISTERS, limit // REGISTER_UNIT * REGISTER_UNIT)


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=False)
    lines = res.stdout.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


# --- loops and instruction counts -----------------------------------------------------------------
# A listing is normalised to [(instruction text, index of its branch target or None)], the same for
# PTX and SASS; a loop is a backward branch, the index range [target, branch] (its static body).
PTX_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
PTX_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")
EX2 = re.compile(r"\bMUFU\.EX2\b|\bex2\.approx\b")
BARRIER = re.compile(r"\bBAR\.SYNC|\bbar\.sync\b|\bbarrier\.sync\b")

Listing = list  # [(text, target index | None)]


def ptx_listing(body: str) -> Listing:
    """The PTX instructions of an entry (no labels, directives, braces or comments), in order."""
    rows: list[tuple[str, str | None]] = []
    labels: dict[str, int] = {}
    for raw in body.splitlines():
        s = raw.split("//")[0].strip()
        if m := PTX_LABEL.match(s):
            labels[m.group(1)] = len(rows)
            continue
        if not s or s.endswith(":") or s.startswith((".", "{", "}", ")")) or not s.endswith(";"):
            continue
        b = PTX_BRANCH.search(s)
        rows.append((s, b.group(1) if b else None))
    return [(s, labels.get(t) if t else None) for s, t in rows]


def loops_of(insns: Listing) -> list[tuple[int, int]]:
    return sorted({(t, n) for n, (_, t) in enumerate(insns) if t is not None and t <= n})


def innermost(loops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in loops if not any((c, d) != (a, b) and a <= c and d <= b for c, d in loops)]


def parent_of(loop: tuple[int, int], loops: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The smallest loop that strictly holds `loop`."""
    outer = [(c, d) for c, d in loops if (c, d) != loop and c <= loop[0] and loop[1] <= d]
    return min(outer, key=lambda cd: cd[1] - cd[0]) if outer else None


def children_of(loop: tuple[int, int], loops: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The loops directly inside `loop`, in address order."""
    inner = [(c, d) for c, d in loops if (c, d) != loop and loop[0] <= c and d <= loop[1]]
    return sorted(l for l in inner if parent_of(l, inner + [loop]) == loop)


def size(insns: Listing, loop: tuple[int, int]) -> int:
    return sum(1 for s, _ in insns[loop[0]:loop[1] + 1] if not s.startswith("NOP"))


def issued(insns: Listing, loop: tuple[int, int], loops, trips) -> float:
    """Instructions one iteration of `loop` issues: its own instructions once (every basic block,
    rarely taken branches included: a static upper bound) plus each nested loop's issued count
    times trips(nested loop) (1 unless the caller knows better)."""
    kids = children_of(loop, loops)
    own = size(insns, loop) - sum(size(insns, k) for k in kids)
    return own + sum(trips(k) * issued(insns, k, loops, trips) for k in kids)


def innermost_hot_loop(insns: Listing) -> dict | None:
    """The innermost loop with the most instructions (the unrolled one): the figure the report
    always had (per coordinate step for the row engine, per element elsewhere)."""
    loops = loops_of(insns)
    inner = innermost(loops)
    if not inner:
        return None
    best = max(inner, key=lambda ab: size(insns, ab))
    return {"loop": best, "instructions": size(insns, best), "total": len(insns)}


# Entries per chunk iteration and the loop model, per kernel family, keyed on the demangled name.
#  * row engine (cuda/row_engine.cuh): one thread owns a row; the chunk loop walks kChunk = 32
#    columns per iteration. Inside it: the slab loop (ceil(d / kSlab) trips), holding the staging
#    of the chunk's coordinates (kSlab*kChunk / kRowsPerBlock = 4 trips per thread), the staging of
#    its potentials and norms (at most 1) and the coordinate loop (d / slabs trips: a runtime loop,
#    one coordinate over the 32 columns per trip); after it, the fold (formula + reduction,
#    unrolled). Found as: coordinate loop = the largest innermost loop; slab loop = its parent;
#    chunk loop = the slab loop's parent.
#  * lse_fast (cuda/lse_fast.cuh, issue 13): R rows x C columns per thread per chunk, D a
#    template parameter (the coordinate loop fully unrolled). Found as: chunk loop = the innermost
#    loop that holds an ex2 (MUFU.EX2 / ex2.approx); entries = R x C from the header's constants
#    (LSE_FAST_CONSTANTS below), else the number of ex2 in that loop (one per entry, the design's
#    hot path); nested loops counted once.
# Other hot kernels (sparsify, calibration): one element per innermost-loop iteration.
ROW_ENGINE = re.compile(r"row_engine_kernel<")
# A branch with no predicate (PTX bra / bra.uni, SASS BRA), or an exit: no fall-through.
UNCONDITIONAL = re.compile(r"^(?:bra(?:\.uni)?\s|BRA\s|EXIT\b|ret\b|RET\b)")
LSE_FAST = re.compile(r"lse_fast")
ROW_STAGING_TRIPS = [ROW_CHUNK * SLAB // ROWS_PER_BLOCK, 1]  # the slab loop's other loops, in order
LSE_FAST_CONSTANTS = (r"constexpr\s+int\s+(k\w*Rows\w*)\s*=\s*(\d+)", r"constexpr\s+int\s+(k\w*(?:Col|Chunk)\w*)\s*=\s*(\d+)")


def lse_fast_shape(root: Path) -> tuple[int | None, str]:
    """R x C of cuda/lse_fast.cuh's constants, when it names them (rows / columns per thread)."""
    src = root / "cuda" / "lse_fast.cuh"
    if not src.exists():
        return None, "no cuda/lse_fast.cuh"
    text = src.read_text()
    rows, cols = (re.search(p, text) for p in LSE_FAST_CONSTANTS)
    where = "cuda/lse_fast.cuh"
    engine = root / "cuda" / "row_engine.cuh"
    if rows and not cols and re.search(r"\bkChunk\b", text) and engine.exists():
        cols = re.search(r"constexpr\s+int\s+(kChunk)\s*=\s*(\d+)", engine.read_text())  # the engine's chunk
        where = "cuda/lse_fast.cuh and cuda/row_engine.cuh"
    if rows and cols:
        return int(rows.group(2)) * int(cols.group(2)), f"{rows.group(1)} x {cols.group(1)} of {where}"
    return None, "constants not found in cuda/lse_fast.cuh"


def per_entry_model(kernel: str, insns: Listing, d_values=(3, 64), root: Path | None = None) -> dict:
    """Issued instructions per cost entry for each d, the chunk loop's static size, the entries
    per chunk iteration and how they were derived."""
    loops = loops_of(insns)
    out: dict = {"model": None, "chunk_loop": None, "entries_per_chunk": None, "per_entry": {}}
    if LSE_FAST.search(kernel):
        # The chunk loop: the loop with the most ex2 in its own body (the unrolled hot loop's R x C);
        # the cold path's loops, nested in it, hold one each.
        def ex2s(l):
            return sum(1 for t, _ in insns[l[0]:l[1] + 1] if EX2.search(t))

        own = {l: ex2s(l) - sum(ex2s(k) for k in children_of(l, loops)) for l in loops}
        if own and max(own.values()) > 0:
            chunk = max(own, key=lambda l: (own[l], -size(insns, l)))
        else:  # float64: a software exp2, no ex2; the chunk loop is the innermost one with a barrier
            bars = [l for l in loops if any(BARRIER.search(t) for t, _ in insns[l[0]:l[1] + 1])]
            bars = [l for l in bars if not any(k != l and l[0] <= k[0] and k[1] <= l[1] for k in bars)]
            if not bars:
                out["model"] = "lse_fast: no loop with an ex2 or a barrier"
                return out
            chunk = max(bars, key=lambda ab: size(insns, ab))
            own = {chunk: 0}
        entries, basis = lse_fast_shape(root) if root else (None, "")
        if entries is None:
            entries = own[chunk]
            basis = "ex2 instructions in the chunk loop's own body (" + basis + ")"
        static = issued(insns, chunk, loops, lambda _: 1)
        # The hot path: the chunk loop less every region a forward branch skips that holds a loop
        # (the cold path: the rows' chunk recomputation, the only loops inside; the hot loop is
        # fully unrolled).
        cold = set()
        for n in range(chunk[0], chunk[1] + 1):
            t = insns[n][1]
            if t is not None and n < t <= chunk[1] and any(n < a and b < t for a, b in loops):
                cold.update(range(n + 1, t))
        # Then only what the loop head reaches without entering that region: code the compiler
        # places after the accept block but enters only from the cold path (the cold merge) is cold.
        hot_set, todo = set(), [chunk[0]]
        while todo:
            n = todo.pop()
            if n in hot_set or n in cold or not (chunk[0] <= n <= chunk[1]):
                continue
            hot_set.add(n)
            text, target = insns[n]
            if target is not None:
                todo.append(target)
            if not UNCONDITIONAL.search(text):
                todo.append(n + 1)
        hot = sum(1 for n in hot_set if not insns[n][0].startswith("NOP"))
        out.update(model="lse_fast", chunk_loop=static, hot_path=hot, entries_per_chunk=entries, entries_basis=basis)
        out["per_entry"] = {d: round(static / entries, 2) for d in d_values}  # D unrolled: same loop
        out["hot_per_entry"] = {d: round(hot / entries, 2) for d in d_values}
        return out
    if ROW_ENGINE.search(kernel):
        # The slab loop is the innermost loop that synchronises the block; its largest nested loop
        # is the coordinate loop (pow's own loops in pnorm sit inside that one).
        bars = [l for l in loops if any(BARRIER.search(t) for t, _ in insns[l[0]:l[1] + 1])]
        bars = [l for l in bars if not any(k != l and l[0] <= k[0] and k[1] <= l[1] for k in bars)]
        slab = max(bars, key=lambda ab: size(insns, ab)) if bars else None
        kids = children_of(slab, loops) if slab else []
        coord = max(kids, key=lambda ab: size(insns, ab)) if kids else None
        chunk = parent_of(slab, loops) if slab else None
        if chunk is None or coord is None:
            out["model"] = "row engine: loop nest not found"
            return out
        staging = [k for k in children_of(slab, loops) if k != coord]
        for d in d_values:
            slabs = -(-d // SLAB)

            def trips(l, d=d, slabs=slabs):
                if l == slab:
                    return slabs
                if l == coord:
                    return d / slabs
                if l in staging:
                    i = staging.index(l)
                    return ROW_STAGING_TRIPS[i] if i < len(ROW_STAGING_TRIPS) else 1
                return 1
            out["per_entry"][d] = round(issued(insns, chunk, loops, trips) / ROW_CHUNK, 2)
        out.update(model="row engine", chunk_loop=issued(insns, chunk, loops, lambda _: 1),
                   coordinate_loop=issued(insns, coord, loops, lambda _: 1), entries_per_chunk=ROW_CHUNK,
                   entries_basis="kChunk = 32 columns per thread (cuda/row_engine.cuh)")
        return out
    return out


SASS_FUNC = re.compile(r"^\s*(?:\.text\.(\S+?):|Function : (\S+))\s*$")
SASS_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
SASS_INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def disassembler(nvcc: str | None = None) -> list[str] | None:
    """nvdisasm or cuobjdump: $OTCAL_NVDISASM, then PATH, then next to nvcc and in $CUDA_HOME/bin
    (CI's toolkit has neither: the counts are then PTX only)."""
    if (env := os.environ.get("OTCAL_NVDISASM")) and Path(env).is_file():
        return [env, "-c"]
    dirs = [Path(nvcc).parent] if nvcc else []
    dirs += [Path(os.environ[v]) / "bin" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    for name, args in (("nvdisasm", ["-c"]), ("cuobjdump", ["-sass"])):
        tool = shutil.which(name) or next((str(d / name) for d in dirs if (d / name).is_file()), None)
        if tool:
            return [tool] + args
    return None


def sass_listing(cubin: Path, tool: list[str] | None) -> dict[str, list[tuple[int, str, int | None]]] | None:
    """Kernel -> [(address, instruction, branch target address)], None without a disassembler."""
    if not tool:
        return None
    cmd = tool + [str(cubin)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return None
    raw: dict[str, list[tuple[int, str]]] = {}
    labels: dict[tuple[str, str], int] = {}
    current, pending = None, []
    for line in res.stdout.splitlines():
        if m := SASS_FUNC.match(line):
            current, pending = m.group(1) or m.group(2), []
            raw[current] = []
        elif current and (m := SASS_LABEL.match(line)):
            pending.append(m.group(1))
        elif current and (m := SASS_INSN.search(line)):
            addr = int(m.group(1), 16)
            for label in pending:
                labels[(current, label)] = addr
            pending = []
            raw[current].append((addr, m.group(2)))
    out = {}
    for fn, insns in raw.items():
        rows = []
        for addr, text in insns:
            target = None
            if re.search(r"\bBRA\b", text):
                if t := re.search(r"\(?(\.L_x_\d+)\)?", text):
                    target = labels.get((fn, t.group(1)))
                elif t := re.search(r"0x([0-9a-f]+)", text):
                    target = int(t.group(1), 16)
            rows.append((addr, text, target))
        out[fn] = rows
    return out


def sass_as_listing(rows: list[tuple[int, str, int | None]]) -> Listing:
    index = {a: n for n, (a, _, _) in enumerate(rows)}
    return [(t, index.get(target) if target is not None else None) for _, t, target in rows]


# --- main ---------------------------------------------------------------------------------------------
def compile_all(cmds: dict[str, list[str]], work: Path, jobs: int, reuse: bool = False) -> tuple[dict, dict, dict, str]:
    def one(src: str):
        d = work / Path(src).stem
        d.mkdir(parents=True, exist_ok=True)
        argv, arch = cubin_command(cmds[src], src, d)
        if reuse:
            return src, d, None, arch
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        (d / "resource-usage.txt").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            return src, None, (res.stdout + res.stderr)[-4000:], arch
        return src, d, None, arch

    resources, ptx, cubins, arch = {}, {}, {}, ""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for src, d, err, arch in pool.map(one, sorted(cmds)):
            if err is not None:
                print(err, file=sys.stderr)
                fail(f"compiling {src} for the resource report failed (above)")
            for name, rec in parse_resources((d / "resource-usage.txt").read_text()).items():
                rec["source"] = Path(src).name
                resources[name] = rec
            ptx.update(ptx_entries((d / f"{Path(src).stem}.ptx").read_text()))
            cubins[src] = d / f"{Path(src).stem}.cubin"
    return resources, ptx, cubins, arch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, type=Path, help="a CMake build folder with -DOTCAL_CUDA=ON")
    ap.add_argument("--work", type=Path, help="where the cubins, PTX and reports go (default BUILD/cuda-resources)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", action="append", default=[],
                    help="compile only the sources whose name contains this (repeatable; skips the hot-kernel check)")
    ap.add_argument("--instructions", action="store_true", help="also count instructions per entry")
    ap.add_argument("--reuse", action="store_true", help="read the last compile in --work again, compile nothing")
    ap.add_argument("--source", type=Path, help="the source tree of the build (default: this script's checkout), "
                    "for cuda/lse_fast.cuh's constants and the commit")
    ap.add_argument("--commit", help="the commit to record (default: git rev-parse of --source), e.g. for a "
                    "`git archive` export")
    ap.add_argument("--json", type=Path, help="write the records here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    args = ap.parse_args()
    build = args.build.resolve()
    work = (args.work or build / "cuda-resources").resolve()
    work.mkdir(parents=True, exist_ok=True)

    cmds = compile_commands(build)
    if args.only:
        cmds = {k: v for k, v in cmds.items() if any(o in Path(k).name for o in args.only)}
        if not cmds:
            fail(f"--only {args.only}: no such CUDA source")
    resources, ptx, cubins, arch = compile_all(cmds, work, min(args.jobs, len(cmds)), args.reuse)
    names = demangle(sorted(resources))

    problems: list[str] = []
    records = []
    for mangled, rec in sorted(resources.items(), key=lambda kv: names[kv[0]]):
        name = names[mangled]
        bounds = ptx.get(mangled, {})
        limit = register_limit(bounds.get("max_threads"), bounds.get("min_blocks"))
        rec = dict(rec, kernel=name, mangled=mangled, max_threads=bounds.get("max_threads"),
                   min_blocks=bounds.get("min_blocks"), register_limit=limit)
        records.append(rec)
        if "otcal::" not in name:
            continue
        if rec["spill_stores"] or rec["spill_loads"]:
            allowed = next((v for k, v in ALLOWED_SPILLS.items() if re.search(k, name)), None)
            if allowed is None or rec["spill_stores"] > allowed[0] or rec["spill_loads"] > allowed[1]:
                problems.append(f"{name} ({rec['source']}): spills {rec['spill_stores']} bytes stores, "
                                f"{rec['spill_loads']} bytes loads, stack frame {rec['stack']} bytes, "
                                f"{rec['registers']} registers")
        if rec["registers"] is not None and rec["registers"] > limit:
            problems.append(f"{name} ({rec['source']}): {rec['registers']} registers > {limit} allowed by "
                            f"__launch_bounds__({bounds.get('max_threads')}, {bounds.get('min_blocks') or 1})")
    for label, pattern in HOT_KERNELS:
        hits = [r for r in records if re.search(pattern, r["kernel"].removeprefix("void "))]
        if not hits and args.only:
            continue
        if not hits:
            problems.append(f"hot kernel '{label}' not found (pattern {pattern}): renamed? update HOT_KERNELS")
        for r in hits:
            r.setdefault("hot", label)

    ours = [r for r in records if "otcal::" in r["kernel"]]
    print(f"cuda_resource_check: {len(ours)} otcal kernels ({len(records)} in all) for {arch}, "
          f"from {', '.join(sorted(Path(s).name for s in cmds))}")
    table = ["| kernel | source | registers | limit | stack B | spill stores B | spill loads B |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in ours:
        table.append(f"| `{r['kernel']}` | {r['source']} | {r['registers']} | {r['register_limit']} | "
                     f"{r['stack']} | {r['spill_stores']} | {r['spill_loads']} |")

    # The SASS (when a disassembler is found) of what is counted: every kernel with --instructions,
    # else only the lse_fast kernels of the budget check (few, so the check stays cheap).
    tool = disassembler(next(a for a in next(iter(cmds.values())) if Path(a).name == "nvcc"))
    sass: dict[str, list] = {}
    if tool and (args.instructions or lse_fast_kernels(records)):
        for cubin in cubins.values():
            sass.update(sass_listing(cubin, tool) or {})
    root = Path(__file__).resolve().parent.parent if args.source is None else args.source.resolve()
    if args.commit:
        COMMIT_OVERRIDE.append(args.commit)
    budget_problems, budget_note = lse_fast_budget(records, ptx, sass, root)
    problems += budget_problems
    if budget_note:
        print(f"cuda_resource_check: {budget_note}")
    loops = []
    if args.instructions:
        loops = instruction_table(records, ptx, sass, root)
        if not tool:
            print("cuda_resource_check: no nvdisasm or cuobjdump (OTCAL_NVDISASM, PATH, next to nvcc, $CUDA_HOME/bin): "
                  "PTX counts only")
    if args.json:
        args.json.write_text(json.dumps({"arch": arch, "nvcc": nvcc_version(cmds), "commit": git_commit(root),
                                         "date": datetime.date.today().isoformat(), "kernels": ours,
                                         "loops": loops, "lse_fast_budget": budget_note, "problems": problems},
                                        indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(arch, cmds, table, loops, problems, root, budget_note))
    if args.instructions:
        print("\n".join(loop_table(loops)))
        print()
        print("\n".join(entry_table(loops)))
    if problems:
        print(f"cuda_resource_check: FAILED, {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    worst = max(ours, key=lambda r: r["registers"] or 0)
    print(f"cuda_resource_check: ok: no spills beyond ALLOWED_SPILLS, registers within the launch bounds "
          f"(most: {worst['registers']} in {worst['kernel'][:100]})")
    return 0


def template_args(name: str, kernel: str) -> list[str]:
    """The top-level template arguments of the function named `kernel` in a demangled name."""
    at = name.find(kernel)
    lt = name.find("<", at) if at >= 0 else -1
    if lt < 0:
        return []
    args, depth, cur = [], 0, ""
    for ch in name[lt + 1:]:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return args + [cur.strip()] if cur.strip() else args


def lse_fast_kernels(records: list[dict]) -> list[dict]:
    """The lse_fast kernels, each with dtype, cost and d (the template argument that varies most
    across the float sqeuclidean instantiations; None when nothing varies)."""
    out = []
    for r in records:
        m = re.search(r"\b(\w*lse_fast\w*)<", r["kernel"])
        if not m:
            continue
        args = template_args(r["kernel"], m.group(1))
        dtype = next((a for a in args if a in ("float", "double")), None)
        cost = next((int(c.group(1)) for a in args if (c := re.match(r"^\(otcal::CostKind\)(\d+)$", a))), 0)
        ints = [int(re.sub(r"[uUlL]+$", "", a)) if re.match(r"^-?\d+[uUlL]*$", a) else None for a in args]
        out.append({"record": r, "dtype": dtype, "cost": cost, "ints": ints})
    f32 = [k for k in out if k["dtype"] == "float" and k["cost"] == 0]
    positions = {len(k["ints"]) for k in f32}
    d_pos = None
    if len(positions) == 1:
        width = positions.pop()
        spread = [len({k["ints"][i] for k in f32 if k["ints"][i] is not None}) for i in range(width)]
        if spread and max(spread) > 1:
            d_pos = spread.index(max(spread))
    for k in out:
        k["d"] = k["ints"][d_pos] if d_pos is not None and d_pos < len(k["ints"]) else None
        k["label"] = f"lse_fast {k['dtype'] or '?'} {COSTS[k['cost']] if k['cost'] < len(COSTS) else k['cost']}" + \
            (f" D={k['d']}" if k["d"] is not None else "")
    return out


def lse_fast_budget(records, ptx, sass, root: Path) -> tuple[list[str], str]:
    """The issue-13 acceptance check: the float32 sqeuclidean lse_fast kernel used for d = 3 issues
    at most LSE_FAST_D3_BUDGET instructions per cost entry (SASS; PTX without a disassembler)."""
    kernels = [k for k in lse_fast_kernels(records) if k["dtype"] == "float" and k["cost"] == 0]
    if not kernels:
        return [], "lse_fast budget: skipped, no lse_fast kernel (cuda/lse_fast.cuh) in this build"
    if any(k["d"] is not None for k in kernels):
        kernels = [k for k in kernels if k["d"] == 3]
        if not kernels:
            return [f"lse_fast: no float32 sqeuclidean instantiation with D = 3"], ""
    problems, lines = [], []
    for k in kernels:
        r = k["record"]
        listing = sass_as_listing(sass[r["mangled"]]) if r["mangled"] in sass else None
        kind = "SASS" if listing else "PTX"
        listing = listing or ptx_listing(ptx.get(r["mangled"], {}).get("body", ""))
        model = per_entry_model(r["kernel"], listing, (3,), root)
        static, hot = model["per_entry"].get(3), model.get("hot_per_entry", {}).get(3)
        if static is None or hot is None:
            problems.append(f"lse_fast: cannot count {r['kernel'][:120]}: {model['model']}")
            continue
        v = hot if LSE_FAST_BUDGET_ON == "hot" else static
        lines.append(f"{k['label']}: {hot} {kind} instructions per entry at d = 3 on the hot path "
                     f"({model['hot_path']} / {model['entries_per_chunk']} entries), {static} static upper bound "
                     f"(chunk loop {model['chunk_loop']}, cold path included; entries: {model['entries_basis']}); "
                     f"checked: {LSE_FAST_BUDGET_ON} <= {LSE_FAST_D3_BUDGET}")
        if v > LSE_FAST_D3_BUDGET:
            problems.append(f"{r['kernel']} ({r['source']}): {v} {kind} instructions per entry at d = 3 "
                            f"({LSE_FAST_BUDGET_ON}) > {LSE_FAST_D3_BUDGET} (issue 13 target)")
    return problems, "lse_fast budget: " + "; ".join(lines) if lines else ""


def instruction_table(records, ptx, sass, root: Path) -> list[dict]:
    fast = {k["record"]["mangled"]: k for k in lse_fast_kernels(records)}
    out = []
    for r in records:
        label = r.get("hot") or (fast[r["mangled"]]["label"] if r["mangled"] in fast else None)
        if label is None:
            continue
        listings = {"ptx": ptx_listing(ptx.get(r["mangled"], {}).get("body", ""))}
        if r["mangled"] in sass:
            listings["sass"] = sass_as_listing(sass[r["mangled"]])
        row = {"kernel": label, "registers": r["registers"], "spill_bytes": r["spill_stores"] + r["spill_loads"]}
        for key in ("ptx", "sass"):
            loop = innermost_hot_loop(listings[key]) if key in listings else None
            row[f"{key}_loop"] = loop["instructions"] if loop else None
            row[f"{key}_total"] = loop["total"] if loop else None
        # The innermost loop alone: the row engine's is one coordinate step over kChunk columns.
        row["entries_per_iteration"] = ROW_CHUNK if label.startswith(("lse", "apply")) else 1
        for key in ("ptx", "sass"):
            v = row[f"{key}_loop"]
            row[f"{key}_per_entry"] = round(v / row["entries_per_iteration"], 2) if v else None
        # Per cost entry, the whole chunk iteration (row LSE and apply kernels); an lse_fast kernel
        # with D as a template parameter counts for its own D only.
        own_d = fast[r["mangled"]]["d"] if r["mangled"] in fast else None
        d_values = (own_d,) if own_d is not None else (3, 64)
        for key in ("ptx", "sass"):
            model = per_entry_model(r["kernel"], listings[key], d_values, root) if key in listings else None
            if model and model["model"]:
                row["model"] = model["model"]
                row["entries_per_chunk"] = model["entries_per_chunk"]
                row["entries_basis"] = model.get("entries_basis")
                row[f"{key}_chunk_loop"] = model["chunk_loop"]
                row[f"{key}_coordinate_loop"] = model.get("coordinate_loop")
                for d, v in model["per_entry"].items():
                    row[f"{key}_per_entry_d{d}"] = v
                for d, v in model.get("hot_per_entry", {}).items():
                    row[f"{key}_hot_per_entry_d{d}"] = v
        out.append(row)
    return out


def loop_table(loops: list[dict]) -> list[str]:
    lines = ["| kernel | dtype | cost | registers | spill B | PTX loop instr | entries/iter | PTX instr/entry/coord "
             "| SASS loop instr | SASS instr/entry/coord |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in loops:
        kind, dtype, cost = split_label(r["kernel"])
        lines.append(f"| {kind} | {dtype} | {cost} | {r['registers']} | {r['spill_bytes']} | {r['ptx_loop']} | "
                     f"{r['entries_per_iteration']} | {r['ptx_per_entry']} | {r['sass_loop'] or 'n/a'} | "
                     f"{r['sass_per_entry'] or 'n/a'} |")
    return lines


def split_label(label: str) -> tuple[str, str, str]:
    parts = label.split()
    if parts[0] in ("lse", "apply", "lse_fast"):
        return parts[0], parts[1] if len(parts) > 1 else "", " ".join(parts[2:])
    return label, "", ""


def entry_table(loops: list[dict]) -> list[str]:
    """Issued instructions per cost entry of the row kernels: the chunk loop's static count (every
    basic block once, rarely taken ones included: an upper bound) with the nested loops times
    their trips at that d, over the entries one chunk iteration processes."""
    lines = ["| kernel | dtype | cost | chunk loop PTX | chunk loop SASS | coord loop SASS | entries/chunk "
             "| PTX/entry d=3 | SASS/entry d=3 | PTX/entry d=64 | SASS/entry d=64 | PTX/entry hot path (lse_fast) "
             "| SASS/entry hot path (lse_fast) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    na = lambda v: "n/a" if v is None else v  # noqa: E731
    for r in loops:
        if not r.get("model"):
            continue
        kind, dtype, cost = split_label(r["kernel"])
        lines.append(f"| {kind} | {dtype} | {cost} | {na(r.get('ptx_chunk_loop'))} | {na(r.get('sass_chunk_loop'))} | "
                     f"{na(r.get('sass_coordinate_loop'))} | {r['entries_per_chunk']} | "
                     f"{na(r.get('ptx_per_entry_d3'))} | {na(r.get('sass_per_entry_d3'))} | "
                     f"{na(r.get('ptx_per_entry_d64'))} | {na(r.get('sass_per_entry_d64'))} | "
                     f"{na(next((v for k, v in r.items() if k.startswith('ptx_hot_per_entry_d')), None))} | "
                     f"{na(next((v for k, v in r.items() if k.startswith('sass_hot_per_entry_d')), None))} |")
    return lines


def nvcc_version(cmds) -> str:
    nvcc = next(a for a in next(iter(cmds.values())) if Path(a).name == "nvcc")
    res = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    return res.stdout.strip().splitlines()[-1] if res.stdout else "unknown"


COMMIT_OVERRIDE: list[str] = []


def git_commit(root: Path) -> str:
    if COMMIT_OVERRIDE:
        return COMMIT_OVERRIDE[0]
    res = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return res.stdout.strip() or "unknown"


def markdown(arch, cmds, table, loops, problems, root: Path, budget_note: str) -> str:
    head = [f"# CUDA resource report ({arch})", "",
            f"nvcc: {nvcc_version(cmds)}; sources of commit {git_commit(root)}; "
            f"{datetime.date.today().isoformat()}; from `scripts/cuda_resource_check.py --instructions` "
            "(compiler output only, no GPU).", ""]
    if problems:
        head += ["Problems:", ""] + [f"- {p}" for p in problems] + [""]
    if budget_note:
        head += [budget_note, ""]
    body = ["## Kernels", ""] + table + [""]
    if loops:
        body += ["## Issued instructions per cost entry (row kernels)", "",
                 "The chunk loop's instructions, every basic block counted once per iteration (rarely taken "
                 "branches included, so a static upper bound), plus each nested loop times its trips at that d "
                 "(row engine: the coordinate loop d times over ceil(d/16) slabs, the coordinate staging "
                 "4 times per slab), over the entries one chunk iteration processes (row engine: 32 per thread; "
                 "lse_fast: R x C). `n/a`: no disassembler, PTX only.", ""]
        body += entry_table(loops) + [""]
        body += ["## Innermost loops", ""] + loop_table(loops) + [""]
    return "\n".join(head + body)


if __name__ == "__main__":
    sys.exit(main())
