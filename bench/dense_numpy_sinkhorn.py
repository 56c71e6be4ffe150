#!/usr/bin/python3
"""Dense numpy log-domain Sinkhorn, float64: the baseline otcal is compared with.

The full n x m cost matrix is built once (outside the timing, which favours numpy) and each
iteration is the OTT-JAX order otcal uses: g-update from f, then f-update from g, with uniform
weights and cost scale 1:

    g_j = eps log b_j - eps LSE_i((f_i - C_ij) / eps)
    f_i = eps log a_i - eps LSE_j((g_j - C_ij) / eps)

LSE is scipy.special.logsumexp when scipy imports, else a hand-written max-shift LSE (--lse).
Inputs: the clouds otcal-bench-sinkhorn wrote with --dump-clouds DIR (so both run on the same
points), or seeded numpy Gaussians. With --dump-clouds input and the same iteration count, the
final f is compared with otcal's (max |f_numpy - f_otcal|) as a cross-check that both did the same
work. Prints one line `DENSE_NUMPY {json}`.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def lse_manual(z, axis):
    zmax = np.max(z, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(z - zmax), axis=axis, keepdims=True)) + zmax
    return np.squeeze(out, axis=axis)


def pick_lse(kind):
    if kind in ("auto", "scipy"):
        try:
            from scipy.special import logsumexp

            return "scipy.special.logsumexp", lambda z, axis: logsumexp(z, axis=axis)
        except ImportError:
            if kind == "scipy":
                sys.exit("dense_numpy_sinkhorn: scipy is not importable; use --lse manual")
    return "max-shift numpy LSE", lse_manual


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--m", type=int, default=0)
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--epsilon", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--clouds", default="", help="folder with x.f64, y.f64 (and f.f64) from otcal-bench-sinkhorn")
    ap.add_argument("--lse", choices=["auto", "scipy", "manual"], default="auto")
    args = ap.parse_args()
    n, m, d = args.n, args.m or args.n, args.d
    if args.clouds:
        x = np.fromfile(os.path.join(args.clouds, "x.f64"), dtype="<f8").reshape(n, d)
        y = np.fromfile(os.path.join(args.clouds, "y.f64"), dtype="<f8").reshape(m, d)
    else:
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((n, d))
        y = rng.standard_normal((m, d)) + 0.5
    lse_name, lse = pick_lse(args.lse)
    eps = args.epsilon
    # sqeuclidean cost, dense: the n*m*8 bytes otcal never allocates.
    cost = np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T, 0.0)
    log_a = np.full(n, -np.log(n))
    log_b = np.full(m, -np.log(m))

    def solve(iterations):
        f = np.zeros(n)
        g = np.zeros(m)
        for _ in range(iterations):
            g = eps * log_b - eps * lse((f[:, None] - cost) / eps, axis=0)
            f = eps * log_a - eps * lse((g[None, :] - cost) / eps, axis=1)
        return f, g

    for _ in range(args.warmup):
        solve(args.iterations)
    times = []
    cpu = []
    f = None
    for _ in range(args.repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        f, _g = solve(args.iterations)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    rec = {
        "bench": "dense_numpy_sinkhorn",
        "n": n, "m": m, "d": d, "iters": args.iterations, "epsilon": eps,
        "lse": lse_name, "numpy": np.__version__,
        "time_s": med, "time_min_s": min(times), "time_max_s": max(times), "times_s": times,
        "time_per_iter_s": med / args.iterations,
        "cpu_time_s": statistics.median(cpu),
        "cpu_time_per_iter_s": statistics.median(cpu) / args.iterations,
        "dense_cost_bytes": int(cost.nbytes),
    }
    fpath = os.path.join(args.clouds, "f.f64") if args.clouds else ""
    if fpath and os.path.exists(fpath):
        f_otcal = np.fromfile(fpath, dtype="<f8")
        if f_otcal.size == n:
            rec["max_abs_diff_f_vs_otcal"] = float(np.max(np.abs(f - f_otcal)))
    print("DENSE_NUMPY " + json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
