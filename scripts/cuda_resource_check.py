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
in the SASS when nvdisasm or cuobjdump is on PATH, e.g. on the GPU machines), divided by the
entries that loop processes (the row engine: kChunk = 32 cost terms per coordinate step), and an
estimate per plan entry for d = 3 and d = 64 (docs/testing.md, "GPU checks without a GPU").
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

# Kernels allowed to spill, with the most bytes (stores, loads) each may spill and why. A kernel
# here that spills more fails; one that no longer spills should be taken out. nvcc 13.0, sm_90:
# ptxas spills these at 64-96 registers whatever -maxrregcount or --register-usage-level says.
ALLOWED_SPILLS: dict[str, tuple[int, int, str]] = {
    # apply, float32 pnorm / sq_pnorm: one 32-bit value stored before the chunk loop and read once
    # after it (not in the loop).
    r"row_engine_kernel<\(otcal::CostKind\)[34], float, otcal::detail::cuda_engine::PlanEntry<"
    r"\(otcal::CostKind\)[34], float>, otcal::detail::cuda_engine::ApplyReduction<float>": (4, 4, "outside the loop"),
    # sparsify's dense plan rows, float32 sqeuclidean: ptxas parks a float64 exp coefficient pair on
    # the stack around each of the 32 unrolled plan entries (inside the chunk loop). To fix.
    r"row_engine_kernel<\(otcal::CostKind\)0, float, otcal::detail::cuda_engine::PlanEntry<"
    r"\(otcal::CostKind\)0, float>, otcal::detail::cuda_engine::EmitReduction<float>": (104, 104, "in the loop"),
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
    ("calibration spmv", r"^otcal::calib::\(anonymous namespace\)::spmv_rows_kernel<"),
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
PTX_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
PTX_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")


def ptx_instructions(lines: list[str]) -> list[tuple[int, str]]:
    """(line index, text) of every PTX instruction (not labels, directives, braces, comments)."""
    out = []
    for i, raw in enumerate(lines):
        s = raw.split("//")[0].strip()
        if not s or s.endswith(":") or s.startswith((".", "{", "}", ")")) or not s.endswith(";"):
            continue
        out.append((i, s))
    return out


def innermost_loops(labels: dict[str, int], branches: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """[start, end] index ranges of the loops (a backward branch) that hold no other loop."""
    loops = sorted({(labels[t], i) for i, t in branches if t in labels and labels[t] <= i})
    return [(a, b) for a, b in loops if not any((c, d) != (a, b) and a <= c and d <= b for c, d in loops)]


def loop_of_ptx(body: str) -> dict | None:
    lines = body.splitlines()
    labels = {m.group(1): i for i, l in enumerate(lines) if (m := PTX_LABEL.match(l.strip()))}
    branches = [(i, m.group(1)) for i, l in enumerate(lines) if (m := PTX_BRANCH.search(l))]
    instrs = ptx_instructions(lines)
    loops = innermost_loops(labels, branches)
    if not loops:
        return None
    # The hot loop: the innermost loop with the most instructions (the unrolled one).
    best = max(loops, key=lambda ab: sum(1 for i, _ in instrs if ab[0] <= i <= ab[1]))
    body_instrs = [s for i, s in instrs if best[0] <= i <= best[1]]
    return {"instructions": len(body_instrs), "total": len(instrs), "body": body_instrs}


SASS_FUNC = re.compile(r"^\s*(?:\.text\.(\S+?):|Function : (\S+))\s*$")
SASS_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
SASS_INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def sass_listing(cubin: Path) -> dict[str, list[tuple[int, str, int | None]]] | None:
    """Kernel -> [(address, instruction, branch target address)] from nvdisasm or cuobjdump
    (the GPU machines' toolkits have them), None without either."""
    if tool := shutil.which("nvdisasm"):
        cmd = [tool, "-c", str(cubin)]
    elif tool := shutil.which("cuobjdump"):
        cmd = [tool, "-sass", str(cubin)]
    else:
        return None
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


def loop_of_sass(insns: list[tuple[int, str, int | None]]) -> dict | None:
    """The longest innermost backward-branch loop of a SASS listing."""
    index = {a: n for n, (a, _, _) in enumerate(insns)}
    loops = {(index[t], n) for n, (a, _, t) in enumerate(insns) if t is not None and t in index and t <= a}
    if not loops:
        return None
    inner = [(a, b) for a, b in loops if not any((c, d) != (a, b) and a <= c and d <= b for c, d in loops)]
    best = max(inner, key=lambda ab: ab[1] - ab[0])
    body = [t for _, t, _ in insns[best[0]:best[1] + 1] if not t.startswith("NOP")]
    return {"instructions": len(body), "total": len(insns), "body": body}


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

    loops = []
    if args.instructions:
        loops = instruction_table(records, ptx, cubins, names)
    if args.json:
        args.json.write_text(json.dumps({"arch": arch, "nvcc": nvcc_version(cmds), "commit": git_commit(),
                                         "date": datetime.date.today().isoformat(), "kernels": ours,
                                         "loops": loops, "problems": problems}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(arch, cmds, table, loops, problems))
    if args.instructions:
        print("\n".join(loop_table(loops)))
    if problems:
        print(f"cuda_resource_check: FAILED, {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    worst = max(ours, key=lambda r: r["registers"] or 0)
    print(f"cuda_resource_check: ok: no spills beyond ALLOWED_SPILLS, registers within the launch bounds "
          f"(most: {worst['registers']} in {worst['kernel'][:100]})")
    return 0


def instruction_table(records, ptx, cubins, names) -> list[dict]:
    sass: dict[str, list] = {}
    for cubin in cubins.values():
        listing = sass_listing(cubin)
        if listing:
            sass.update(listing)
    out = []
    for r in records:
        if "hot" not in r:
            continue
        body = ptx.get(r["mangled"], {}).get("body", "")
        loop = loop_of_ptx(body)
        row = {"kernel": r["hot"], "registers": r["registers"], "spill_bytes": r["spill_stores"] + r["spill_loads"],
               "ptx_loop": loop["instructions"] if loop else None, "ptx_total": loop["total"] if loop else None}
        s = loop_of_sass(sass[r["mangled"]]) if r["mangled"] in sass else None
        row["sass_loop"] = s["instructions"] if s else None
        if r["hot"].startswith(("lse", "apply")):
            # The innermost loop is one coordinate step over a chunk: kChunk cost terms.
            row["entries_per_iteration"] = ROW_CHUNK
        else:
            row["entries_per_iteration"] = 1  # one element (nonzero, entry) per iteration
        for key in ("ptx", "sass"):
            v = row[f"{key}_loop"]
            row[f"{key}_per_entry"] = round(v / row["entries_per_iteration"], 2) if v else None
        out.append(row)
    return out


def loop_table(loops: list[dict]) -> list[str]:
    lines = ["| kernel | dtype | cost | registers | spill B | PTX loop instr | entries/iter | PTX instr/entry/coord "
             "| SASS loop instr | SASS instr/entry/coord |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in loops:
        parts = r["kernel"].split()
        kind, dtype, cost = (parts + ["", ""])[:3] if parts[0] in ("lse", "apply") else (r["kernel"], "", "")
        lines.append(f"| {kind} | {dtype} | {cost} | {r['registers']} | {r['spill_bytes']} | {r['ptx_loop']} | "
                     f"{r['entries_per_iteration']} | {r['ptx_per_entry']} | {r['sass_loop'] or 'n/a'} | "
                     f"{r['sass_per_entry'] or 'n/a'} |")
    return lines


def nvcc_version(cmds) -> str:
    nvcc = next(a for a in next(iter(cmds.values())) if Path(a).name == "nvcc")
    res = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    return res.stdout.strip().splitlines()[-1] if res.stdout else "unknown"


def git_commit() -> str:
    res = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return res.stdout.strip() or "unknown"


def markdown(arch, cmds, table, loops, problems) -> str:
    head = [f"# CUDA resource report ({arch})", "",
            f"nvcc: {nvcc_version(cmds)}; commit {git_commit()}; {datetime.date.today().isoformat()}; "
            "from `scripts/cuda_resource_check.py --instructions` (compiler output only, no GPU).", ""]
    if problems:
        head += ["Problems:", ""] + [f"- {p}" for p in problems] + [""]
    body = ["## Kernels", ""] + table + [""]
    if loops:
        body += ["## Innermost loops", ""] + loop_table(loops) + [""]
    return "\n".join(head + body)


if __name__ == "__main__":
    sys.exit(main())
