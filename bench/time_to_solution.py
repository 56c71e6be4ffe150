#!/usr/bin/env python3
"""Time to solution: seconds and iterations each Sinkhorn variant needs to reach one marginal error.

Every solver sees the same clouds (two Gaussian mixtures in d = 3, 5-10 components each, drawn from
one recorded seed), the same cost (squared Euclidean divided by its mean over all pairs) and the
same epsilon (0.1, 0.01, 0.001 of that mean cost, i.e. POT's ``reg`` on the mean-scaled cost), and
stops on the same error: the L2 norm of the column marginal error ``||P^T 1 - b||_2`` (the weights
are uniform and sum to 1), checked every 10 iterations. That is POT's ``sinkhorn_log`` stopping
error and otcal's with ``norm_error=2, inner_iterations=10`` for a balanced problem with
Gauss-Seidel updates (docs/sinkhorn.md §5). POT's ``sinkhorn_epsilon_scaling`` stops on
``||P^T 1 - b||^2 + ||P 1 - a||^2``, so it gets the squared threshold. Every result is then checked
independently: both marginals are recomputed here in float64 from the returned potentials, in row
blocks, and reported beside the time (``err_b``: the stopping quantity; ``err_a``: the row side,
which plain Sinkhorn sets exactly but momentum and Anderson do not).

Methods:
  plain                 otcal.sinkhorn, no acceleration
  momentum              adaptive momentum (OTT-JAX's Momentum(start=50): Lehmann et al.'s weight
                        from the error ratio of the two blocks before `start`)
  anderson              Anderson acceleration of f (memory 5)
  eps_sched             OTT-JAX's epsilon scheduler, eps_t = max(init * decay^t, 1) * eps, starting
                        from 0.1 of the mean cost (init = 0.1 / eps, decay 0.95; none at eps = 0.1)
  gaussian              the Gaussian initializer (Brenier potential between the fitted Gaussians)
  gauss+mom             Gaussian initializer and adaptive momentum
  gauss+and             Gaussian initializer and Anderson
  sched+mom             epsilon scheduler and adaptive momentum from iteration 100 (the variant the
                        acceptance ratios single out: at eps = 0.1 it is plain Sinkhorn)
  pot_log               POT ot.bregman.sinkhorn_log on the dense cost (cost build timed apart)
  pot_eps_scaling       POT ot.bregman.sinkhorn_epsilon_scaling (its defaults, squared threshold)

The accelerated otcal variants need otcal.Momentum / otcal.AndersonAcceleration / the
``initializer`` argument; a build without them marks those rows "unavailable". POT rows are
"unavailable" when ``ot`` does not import.

Caps: every run has an iteration cap and a wall-time cap (otcal: a progress callback that stops the
solve; POT: a forked child process that is killed). A capped run is reported as capped, with the
last error the solver itself printed, never as converged. Runs below --repeat-below seconds are
repeated (--repeats) and the median is reported.

Threads: otcal uses OpenMP (--threads, exported as OMP_NUM_THREADS before otcal is imported). POT
runs numpy: its exp and logsumexp are single-threaded; BLAS (used by sinkhorn_epsilon_scaling's
matrix-vector products and by the cost build) follows OMP_NUM_THREADS too.

    PYTHONPATH=build/python-pkg python bench/time_to_solution.py --quick
    PYTHONPATH=build/python-pkg python bench/time_to_solution.py \\
        --out bench/results/time-to-solution-cpu-DATE.json

Writes one JSON file (machine, commit, versions, seed, every run) and prints a table (rows: n x eps,
columns: methods, median seconds / iterations) and the time ratio of each accelerated variant to
plain otcal per eps. A bench, not a test: it asserts nothing.
"""
import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

INNER = 10  # iterations per error check, for every solver
np = None  # numpy, imported by main() once OMP_NUM_THREADS is set

# The otcal variants: name -> keyword arguments of otcal.sinkhorn, built per epsilon (the scheduler
# starts from 0.1 of the mean cost). "needs" names the API a variant uses, to mark it unavailable.
# Picked from iteration counts at n = m = 1000 (eps 0.01 and 0.001, one seed): adaptive momentum from
# iteration 100 diverged at eps = 0.001 without the scheduler but not after it; from 50 it converged.
MOMENTUM_START = 50  # adaptive weight from the error ratio of the blocks ending at iterations 40 and 50
SCHEDULED_MOMENTUM_START = 100  # after the scheduler has reached the target (90 iterations from 100 eps)
ANDERSON_MEMORY = 5
SCHEDULE_START = 0.1  # epsilon scheduler: first epsilon, as a fraction of the mean cost
SCHEDULE_DECAY = 0.95

OTCAL_METHODS = ["plain", "momentum", "anderson", "eps_sched", "gaussian", "gauss+mom", "gauss+and", "sched+mom"]
POT_METHODS = ["pot_log", "pot_eps_scaling"]
ACCELERATED = "sched+mom"  # the variant the acceptance ratios single out (every one is printed)


def otcal_variant(otcal, name, eps):
    """(keyword arguments for otcal.sinkhorn, description), or None when this build lacks the API."""
    kw, parts = {}, []
    if "mom" in name:
        if not hasattr(otcal, "Momentum"):
            return None
        start = SCHEDULED_MOMENTUM_START if "sched" in name else MOMENTUM_START
        kw["momentum"] = otcal.Momentum(start=start)
        parts.append("Momentum(start=%d)" % start)
    if "and" in name:
        if not hasattr(otcal, "AndersonAcceleration"):
            return None
        kw["anderson"] = otcal.AndersonAcceleration(memory=ANDERSON_MEMORY)
        parts.append("AndersonAcceleration(memory=%d)" % ANDERSON_MEMORY)
    if "gauss" in name:
        if not hasattr(otcal, "Momentum"):  # the initializer argument lands with the accelerations
            return None
        kw["initializer"] = "gaussian"
        parts.append('initializer="gaussian"')
    if "sched" in name:
        init = max(1.0, SCHEDULE_START / eps)
        kw["epsilon_init"], kw["epsilon_decay"] = init, (SCHEDULE_DECAY if init > 1 else 1.0)
        parts.append("epsilon_init=%g, epsilon_decay=%g" % (kw["epsilon_init"], kw["epsilon_decay"]))
    return kw, (", ".join(parts) or "no acceleration")


# ---------------------------------------------------------------------------------------------
# Inputs and the independent check


def gaussian_mixture(rng, n, d):
    """n points of a mixture of 5-10 isotropic Gaussians (means N(0, 2^2 I), std U(0.2, 0.6))."""
    k = int(rng.integers(5, 11))
    means = rng.normal(scale=2.0, size=(k, d))
    stds = rng.uniform(0.2, 0.6, size=k)
    weights = rng.dirichlet(np.ones(k))
    comp = rng.choice(k, size=n, p=weights)
    return means[comp] + stds[comp, None] * rng.normal(size=(n, d)), k


def marginal_errors(x, y, f, g, scale, eps):
    """(||P^T 1 - b||_2, ||P 1 - a||_2) for P_ij = exp((f_i + g_j - |x_i - y_j|^2 / scale) / eps), uniform
    a and b, computed in float64 in row blocks of about 2^24 entries, the cost from differences."""
    n, m = len(x), len(y)
    rows = max(1, (1 << 24) // m)
    col = np.zeros(m)
    row_err2 = 0.0
    f, g = np.asarray(f, dtype=np.float64), np.asarray(g, dtype=np.float64)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        cost = np.zeros((hi - lo, m))
        for k in range(x.shape[1]):
            diff = x[lo:hi, k, None] - y[None, :, k]
            cost += diff * diff
        block = np.exp((f[lo:hi, None] + g[None, :] - cost / scale) / eps)
        col += block.sum(axis=0)
        row_err2 += float(np.sum((block.sum(axis=1) - 1.0 / n) ** 2))
    return float(np.linalg.norm(col - 1.0 / m)), math.sqrt(row_err2)


# ---------------------------------------------------------------------------------------------
# Solvers: each returns a run record


class _TimeCap(Exception):
    pass


def run_otcal(otcal, x, y, eps, kw, args, time_cap):
    state = {"iteration": 0, "error": None}
    t0 = time.perf_counter()

    def watch(info):
        state["iteration"], state["error"] = int(info["iteration"]), float(info["error"])
        if time.perf_counter() - t0 > time_cap:
            raise _TimeCap()

    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=eps)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported by the status
            out = otcal.sinkhorn(geom, threshold=args.threshold, norm_error=2, inner_iterations=INNER,
                                 max_iterations=args.max_iterations, device="cpu", progress=watch,
                                 on_divergence="return", **kw)
    except _TimeCap:
        geom.release()
        return {"status": "capped_time", "time_s": time.perf_counter() - t0, "iterations": state["iteration"],
                "solver_error": state["error"]}
    seconds = time.perf_counter() - t0
    status = "converged" if out.converged else ("diverged" if out.diverged else "capped_iterations")
    errors = [e for e in np.asarray(out.errors, dtype=float) if math.isfinite(e)]
    rec = {"status": status, "time_s": seconds, "library_elapsed_s": out.elapsed_s, "iterations": out.n_iters,
           "solver_error": errors[-1] if errors else None, "scale": out.scale, "epsilon": out.epsilon}
    rec["err_b"], rec["err_a"] = marginal_errors(x, y, out.f, out.g, out.scale, out.epsilon)
    geom.release()
    return rec


def _pot_child(name, M, reg, threshold, max_iterations, conn, log_path):
    """Runs one POT solve in a forked process; its verbose lines go to log_path (read on a kill)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(fd, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    import ot
    import ot.bregman._sinkhorn as impl

    n, m = M.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    inner_counts = []
    if name == "pot_eps_scaling":  # count the inner iterations of each stabilised solve
        stabilized = impl.sinkhorn_stabilized

        def counted(*a_, **kw_):
            out = stabilized(*a_, **kw_)
            inner_counts.append(int(out[1]["n_iter"]) + 1)
            print("inner %d" % sum(inner_counts))
            return out

        impl.sinkhorn_stabilized = counted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        if name == "pot_log":
            _, log = ot.bregman.sinkhorn_log(a, b, M, reg, numItermax=max_iterations, stopThr=threshold,
                                             verbose=True, log=True, warn=False)
            seconds = time.perf_counter() - t0
            f, g = reg * log["log_u"], reg * log["log_v"]
            iterations, outer = int(log["niter"]) + 1, None
            errs = log["err"]
        else:
            # POT's defaults: 100 outer solves of at most 100 iterations; the threshold is also the
            # inner solves' (POT passes it on), which then run their 100 iterations.
            _, log = ot.bregman.sinkhorn_epsilon_scaling(a, b, M, reg, numItermax=100, numInnerItermax=100,
                                                         stopThr=threshold ** 2, verbose=True, log=True,
                                                         warn=False)
            seconds = time.perf_counter() - t0
            f, g = log["alpha"], log["beta"]
            iterations, outer = sum(inner_counts), int(log["niter"]) + 1
            errs = [math.sqrt(max(0.0, float(e))) for e in log["err"]]
    conn.send({"time_s": seconds, "iterations": iterations, "outer_iterations": outer,
               "solver_error": float(errs[-1]) if len(errs) else None, "f": np.asarray(f), "g": np.asarray(g)})
    conn.close()


def _last_verbose(log_path, name):
    """(iterations, error) from the last lines POT printed before it was stopped."""
    iterations, error, inner = None, None, None
    try:
        with open(log_path) as fh:
            for line in fh:
                parts = line.strip().strip("|").split("|")
                if line.startswith("inner "):
                    inner = int(line.split()[1])
                elif len(parts) == 2:
                    try:
                        iterations, error = int(parts[0]) + 1, float(parts[1])
                    except ValueError:
                        pass
    except OSError:
        pass
    if name == "pot_eps_scaling":
        return inner, (math.sqrt(error) if error is not None else None)
    return iterations, error


def run_pot(name, x, y, M, scale, eps, args, time_cap):
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the child shares the dense cost copy-on-write
    recv, send = ctx.Pipe(duplex=False)
    fd, log_path = tempfile.mkstemp(prefix="otcal-tts-pot-")
    os.close(fd)
    proc = ctx.Process(target=_pot_child, args=(name, M, eps, args.threshold, args.max_iterations, send, log_path))
    t0 = time.perf_counter()
    proc.start()
    send.close()
    try:
        if recv.poll(time_cap + 5.0):
            res = recv.recv()
        else:
            res = None
    except EOFError:
        res = None
    if res is None:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        iterations, error = _last_verbose(log_path, name)
        os.unlink(log_path)
        status = "capped_time" if time.perf_counter() - t0 >= time_cap else "failed (exit %s)" % proc.exitcode
        return {"status": status, "time_s": min(time.perf_counter() - t0, time_cap), "iterations": iterations,
                "solver_error": error}
    proc.join()
    os.unlink(log_path)
    rec = {k: v for k, v in res.items() if k not in ("f", "g")}
    cap_iters = args.max_iterations if name == "pot_log" else None
    converged = res["solver_error"] is not None and res["solver_error"] < args.threshold
    rec["status"] = "converged" if converged else ("capped_iterations" if cap_iters else "not_converged")
    rec["scale"], rec["epsilon"] = scale, eps
    rec["err_b"], rec["err_a"] = marginal_errors(x, y, res["f"], res["g"], scale, eps)
    return rec


# ---------------------------------------------------------------------------------------------
# Bookkeeping


def summarise(runs):
    """One cell from the repeats: the median time; capped when any repeat was."""
    statuses = {r["status"] for r in runs}
    cell = {"status": runs[0]["status"] if len(statuses) == 1 else "mixed:" + ",".join(sorted(statuses)),
            "repeats": len(runs), "time_s": statistics.median(r["time_s"] for r in runs),
            "times_s": [r["time_s"] for r in runs]}
    iters = [r["iterations"] for r in runs if r.get("iterations") is not None]
    cell["iterations"] = int(statistics.median(iters)) if iters else None
    for key in ("solver_error", "err_b", "err_a"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        cell[key] = max(vals) if vals else None
    return cell


def cell_text(cell):
    if cell is None:
        return "-"
    if cell["status"] in ("unavailable", "skipped"):
        return cell["status"][:5]
    mark = "" if cell["status"] == "converged" else ("*" if "capped" in cell["status"] else "!")
    if cell.get("verified_below_threshold") is False:
        mark += "~"
    it = "?" if cell.get("iterations") is None else str(cell["iterations"])
    return "%s%.3gs/%s" % (">" if mark == "*" else "", cell["time_s"], it) + mark


def ratio_text(acc, plain):
    """acc/plain time, with a bound marker when either side was capped."""
    if acc is None or plain is None or "time_s" not in acc or "time_s" not in plain:
        return "-"
    r = acc["time_s"] / plain["time_s"]
    acc_ok, plain_ok = acc["status"] == "converged", plain["status"] == "converged"
    if acc_ok and plain_ok:
        return "%.2f" % r
    if acc_ok and not plain_ok:
        return "<%.2f" % r
    if plain_ok and not acc_ok:
        return ">%.2f" % r
    return "?"


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git(*argv):
    try:
        return subprocess.run(["git", "-C", ROOT, *argv], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None


def mem_available_bytes():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 4000, eps 0.1 and 0.01 only (a few minutes)")
    ap.add_argument("--sizes", default="4000,20000", help="n = m values")
    ap.add_argument("--eps", default="0.1,0.01,0.001", help="epsilon as a fraction of the mean cost")
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--methods", default=",".join(OTCAL_METHODS + POT_METHODS))
    ap.add_argument("--large-methods", default="plain,momentum,gauss+mom,sched+mom,pot_log",
                    help="methods run at n > --large-from (the rest are skipped there)")
    ap.add_argument("--large-from", type=int, default=10000)
    ap.add_argument("--threshold", type=float, default=1e-4,
                    help="stop when ||P^T 1 - b||_2 falls below it (weights sum to 1)")
    ap.add_argument("--max-iterations", type=int, default=20000)
    ap.add_argument("--time-cap", type=float, default=120.0, help="seconds per run at n <= --large-from")
    ap.add_argument("--time-cap-large", type=float, default=90.0, help="seconds per run above --large-from")
    ap.add_argument("--pot-time-cap", type=float, default=60.0, help="seconds per POT run")
    ap.add_argument("--pot-large-eps", type=float, default=0.1,
                    help="POT above --large-from only for eps >= this (it needs the dense n x m cost)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats at n <= --large-from (median reported)")
    ap.add_argument("--repeat-below", type=float, default=30.0, help="repeat only runs shorter than this (s)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for otcal (and BLAS)")
    ap.add_argument("--seed", type=int, default=None, help="clouds' seed (default: fresh, recorded)")
    ap.add_argument("--note", default="", help="free text stored in the results (e.g. machine load)")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/time-to-solution-cpu-DATE.json)")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.eps = "4000", "0.1,0.01"

    # Before numpy and otcal load: OpenBLAS and OpenMP read the thread count once, at load time.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    global np
    import numpy as np
    import otcal

    try:
        import ot
        pot_version = ot.__version__
    except ImportError:
        ot, pot_version = None, None

    sizes = [int(s) for s in args.sizes.split(",") if s]
    epsilons = [float(e) for e in args.eps.split(",") if e]
    methods = [m for m in args.methods.split(",") if m]
    large_methods = set(m for m in args.large_methods.split(",") if m)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    date = dt.datetime.now().strftime("%Y%m%d")
    out_path = args.out or os.path.join(HERE, "results", "time-to-solution-cpu-%s.json" % date)

    meta = {
        "bench": "time_to_solution", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"), "worktree_dirty": bool(git("status", "--porcelain")),
        "machine": {"cpu_model": lscpu_model(), "nproc": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "mem_available_bytes": mem_available_bytes()},
        "versions": {"otcal": getattr(otcal, "__version__", None), "pot": pot_version, "numpy": np.__version__},
        "threads": {"otcal_openmp": args.threads,
                    "pot": "numpy exp/logsumexp single-threaded; BLAS (epsilon scaling's products, the cost "
                           "build) with OMP_NUM_THREADS=%d" % args.threads},
        "accelerated_api": hasattr(otcal, "Momentum"),
        "seed": seed, "d": args.d, "threshold": args.threshold, "inner_iterations": INNER,
        "error": "||P^T 1 - b||_2 (uniform weights summing to 1), every 10 iterations; POT epsilon scaling: "
                 "||P^T 1 - b||^2 + ||P 1 - a||^2 against threshold^2; err_b/err_a recomputed here in float64",
        "cost": "squared Euclidean / its mean over all pairs (otcal scale_cost='mean'; POT: ot.dist / mean)",
        "epsilon": "absolute on the mean-scaled cost = fraction of the mean cost (POT reg, otcal epsilon)",
        "caps": {"max_iterations": args.max_iterations, "time_cap_s": args.time_cap,
                 "time_cap_large_s": args.time_cap_large, "pot_time_cap_s": args.pot_time_cap,
                 "large_from": args.large_from, "pot_large_eps": args.pot_large_eps},
        "variants": {"momentum_start": MOMENTUM_START, "scheduled_momentum_start": SCHEDULED_MOMENTUM_START,
                     "anderson_memory": ANDERSON_MEMORY,
                     "schedule": "epsilon_init = max(1, %g / eps), epsilon_decay = %g"
                                 % (SCHEDULE_START, SCHEDULE_DECAY)},
        "load_average_start": list(os.getloadavg()), "note": args.note, "args": vars(args),
    }
    print("otcal %s, POT %s, numpy %s; %s, %d CPUs, load %s; seed %d; accelerated API: %s"
          % (meta["versions"]["otcal"], pot_version, np.__version__, meta["machine"]["cpu_model"], os.cpu_count(),
             " ".join("%.1f" % v for v in meta["load_average_start"]), seed, meta["accelerated_api"]), flush=True)

    rng = np.random.default_rng(seed)
    cells, runs_out = {}, []
    for n in sizes:
        x, kx = gaussian_mixture(rng, n, args.d)
        y, ky = gaussian_mixture(rng, n, args.d)
        meta.setdefault("clouds", {})[str(n)] = {"components_x": kx, "components_y": ky}
        large = n > args.large_from
        cap = args.time_cap_large if large else args.time_cap
        repeats = 1 if large else args.repeats
        M = None
        for eps in epsilons:
            # (key, name, desc, runner, runs) of this eps, summarised after the rounds; each runner
            # binds its own name/kw (a default argument), since it is called after the loop moved on.
            pending = []
            for name in methods:
                key = "%d/%g/%s" % (n, eps, name)
                if large and name not in large_methods:
                    cells[key] = {"status": "skipped", "reason": "not in --large-methods"}
                    continue
                if name in POT_METHODS:
                    if ot is None:
                        cells[key] = {"status": "unavailable", "reason": "POT (ot) does not import"}
                        continue
                    if large and eps < args.pot_large_eps:
                        cells[key] = {"status": "skipped", "reason": "POT above --large-from only for eps >= %g"
                                      % args.pot_large_eps}
                        continue
                    if M is None:
                        need = 4 * n * n * 8  # the cost, -M/reg, one broadcast sum, logsumexp's exp
                        avail = mem_available_bytes()
                        if avail is not None and avail < need:
                            cells[key] = {"status": "skipped", "reason": "dense cost needs ~%.1f GB, %.1f GB available"
                                          % (need / 1e9, avail / 1e9)}
                            continue
                        t0 = time.perf_counter()
                        M = ot.dist(x, y)
                        pot_scale = float(M.mean())
                        M /= pot_scale
                        meta.setdefault("pot_cost_build_s", {})[str(n)] = time.perf_counter() - t0
                    runner = lambda name=name: run_pot(name, x, y, M, pot_scale, eps, args, args.pot_time_cap)  # noqa: E731
                    desc = name
                else:
                    variant = otcal_variant(otcal, name, eps)
                    if variant is None:
                        cells[key] = {"status": "unavailable", "reason": "this otcal build has no otcal.Momentum"}
                        continue
                    kw, desc = variant
                    runner = lambda kw=kw: run_otcal(otcal, x, y, eps, kw, args, cap)  # noqa: E731
                pending.append((key, name, desc, runner, [runner()]))
            # Repeats go round-robin over the cheap cells of this eps (method A, B, ..., A, B, ...),
            # so that a drift of the machine (clock, another process) is shared by every method
            # instead of landing on whichever ran its repeats last.
            cheap = [p for p in pending if p[4][0]["status"] == "converged" and p[4][0]["time_s"] < args.repeat_below]
            for _ in range(1, repeats):
                for p in cheap:
                    p[4].append(p[3]())
            for key, name, desc, runner, runs in pending:
                for r in runs:
                    runs_out.append(dict(r, n=n, eps=eps, method=name, config=desc, load_average=list(os.getloadavg())))
                cell = summarise(runs)
                cell["config"] = desc
                if cell.get("err_b") is not None:
                    cell["verified_below_threshold"] = bool(cell["err_b"] < args.threshold * (1 + 1e-9))
                cells[key] = cell
                print("  n=%-6d eps=%-6g %-16s %-12s %s err_b=%s err_a=%s" % (
                    n, eps, name, cell["status"], cell_text(cell),
                    "%.3g" % cell["err_b"] if cell.get("err_b") is not None else "-",
                    "%.3g" % cell["err_a"] if cell.get("err_a") is not None else "-"), flush=True)
        M = None

    # Side-by-side table and the ratios to plain otcal.
    width = 15
    print("\nseconds/iterations (median of repeats; >T/...* capped at T, ! not converged, ~ recomputed err_b "
          "above the threshold, unava = API missing, skipp = not run at this size)")
    print("%-16s" % "n, eps" + "".join("%*s" % (width, m[:width - 1]) for m in methods))
    ratios = {}
    for n in sizes:
        for eps in epsilons:
            print("%-16s" % ("%d, %g" % (n, eps)) + "".join("%*s" % (width, cell_text(cells.get("%d/%g/%s" % (n, eps, m))))
                                            for m in methods))
    print("\ntime ratio to plain otcal (< / >: a bound, one side capped)")
    acc_methods = [m for m in methods if m != "plain"]
    print("%-16s" % "n, eps" + "".join("%*s" % (width, m[:width - 1]) for m in acc_methods))
    for n in sizes:
        for eps in epsilons:
            plain = cells.get("%d/%g/plain" % (n, eps))
            texts = []
            for m in acc_methods:
                t = ratio_text(cells.get("%d/%g/%s" % (n, eps, m)), plain)
                ratios["%d/%g/%s" % (n, eps, m)] = t
                texts.append(t)
            print("%-16s" % ("%d, %g" % (n, eps)) + "".join("%*s" % (width, t) for t in texts))
    print("\nacceptance (%s vs plain): <= 1/3 of plain's time at eps = 0.001, at most 5%% slower at eps = 0.1"
          % ACCELERATED)
    for n in sizes:
        for eps in epsilons:
            print("  n=%d eps=%g: %s" % (n, eps, ratios.get("%d/%g/%s" % (n, eps, ACCELERATED), "-")))

    meta["load_average_end"] = list(os.getloadavg())
    result = {"meta": meta, "cells": cells, "ratios_to_plain": ratios, "accelerated": ACCELERATED, "runs": runs_out}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1, default=float)
    print("\nwrote %s" % out_path)


if __name__ == "__main__":
    main()
