#!/usr/bin/env python3
"""What the Python layer costs on top of the C++ library, measured side by side in one run.

Four measurements, each reported as min / median / max over the repeats:

  sinkhorn    the same fixed-length solve (same clouds, min = max = inner iterations, explicit
              epsilon, scale 1, float64, same memory budget) timed by the C++ bench binary
              `otcal-bench-sinkhorn` (its `OTCAL_BENCH` record's time, not process wall time) and by
              `otcal.sinkhorn` from Python. The binary's convenience overload uploads the clouds on
              every solve, so the like-for-like Python figure builds a fresh `PointCloud` per solve
              (`fresh`); a solve on one kept `PointCloud` (`resident`, nothing uploaded) is shown
              too. The clouds are the binary's own (`--dump-clouds`), and the final potentials are
              compared as a check that both sides did the same work.
  overhead    per-call wall time, in microseconds, on a tiny problem (n = m = 64, a few
              iterations): `otcal.sinkhorn`, `out.apply`, `out.marginal`, `out.sparsify`, with the
              C++ binaries' times for the solve and the sparsify as the library's own share.
  resident    `out.sparsify(mode="threshold")` on the resident problem vs the foreign-potentials
              path `otcal.sparsify(x, y, f, g, ...)`, which uploads the clouds on every call, with
              the `ctx.cloud_uploads` each makes (and `otcal-bench-sparsify` on the same plan).
  copies      `otcal.PointCloud(x, y)` + solve with a C-contiguous float64 `x` vs a Fortran-order
              `x` (the one documented copy), alternating, and the copy (`numpy.ascontiguousarray`)
              alone.

Both sides run with the same OpenMP thread count (`--threads`, exported as OMP_NUM_THREADS before
otcal is imported and passed to the binaries' environment). This is a bench, not a test: it asserts
nothing and writes one JSON file (device, commit, date, machine, load averages, every sample).

    OMP_NUM_THREADS=2 PYTHONPATH=build/python-pkg python bench/bench_python.py \\
        --bench-bin build/bench/otcal-bench-sinkhorn --out bench/results/python-overhead-cpu-DATE.json
"""
import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BUDGET = "1GiB"  # the bench binaries' default --memory-budget; Python gets the same
EPSILON = 0.5    # the binaries' default absolute epsilon (scale 1)


def stats(samples, scale=1.0):
    """min / median / max (and the samples) of a list of seconds, multiplied by scale."""
    s = [v * scale for v in samples]
    return {"min": min(s), "median": statistics.median(s), "max": max(s), "n": len(s), "samples": s}


def load_average():
    return list(os.getloadavg())


def machine_info():
    model = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = len(os.sched_getaffinity(0))
    return {"nproc": nproc, "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version()}


def git_commit():
    try:
        p = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
        return p.stdout.strip() or None
    except OSError:
        return None


def run_binary(binary, args, env, timeout=600):
    """One cold process of a bench binary; returns its parsed OTCAL_BENCH record."""
    cmd = [binary] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("OTCAL_BENCH "):
            rec = json.loads(line[len("OTCAL_BENCH "):])
            rec["command"] = cmd
            return rec
    raise RuntimeError("%s exited %d without an OTCAL_BENCH line: %s" % (cmd, p.returncode, p.stderr.strip()[-2000:]))


def cxx_record_summary(rec):
    keep = ["n", "m", "d", "iters", "tile_rows", "threads", "device", "commit", "time_s", "time_min_s",
            "time_max_s", "times_s", "cpu_time_s", "repeats", "warmup", "reg_ot_cost", "nnz", "command"]
    return {k: rec[k] for k in keep if k in rec}


def read_clouds(folder, n, d):
    import numpy as np
    x = np.fromfile(os.path.join(folder, "x.f64"), dtype=np.float64).reshape(n, d)
    y = np.fromfile(os.path.join(folder, "y.f64"), dtype=np.float64).reshape(n, d)
    f = np.fromfile(os.path.join(folder, "f.f64"), dtype=np.float64)
    return x, y, f


def timed(fn, repeats, warmup):
    """Wall seconds of each of `repeats` calls after `warmup` untimed ones; returns (samples, last)."""
    last = None
    for _ in range(warmup):
        last = fn()
    gc.collect()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = fn()
        samples.append(time.perf_counter() - t0)
    return samples, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-bin", required=True, help="path of otcal-bench-sinkhorn")
    ap.add_argument("--sparsify-bin", help="path of otcal-bench-sparsify (default: beside --bench-bin)")
    ap.add_argument("--out", required=True, help="results JSON to write")
    ap.add_argument("--threads", type=int, default=2, help="OpenMP threads for both sides (OMP_NUM_THREADS)")
    ap.add_argument("--sizes", default="2000,4000", help="n = m of the solve comparison")
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=5, help="fixed Sinkhorn iterations (min = max = inner)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of the solve / sparsify / copy cases")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved C++ / Python rounds of the solve and sparsify comparisons (repeats each)")
    ap.add_argument("--tiny-n", type=int, default=64)
    ap.add_argument("--tiny-iterations", type=int, default=4)
    ap.add_argument("--tiny-repeats", type=int, default=200, help="timed repeats of each per-call case")
    ap.add_argument("--resident-n", type=int, default=4000, help="n = m of the resident-reuse and copy cases")
    ap.add_argument("--threshold-factor", type=float, default=4.0,
                    help="sparsify keeps P_ij >= factor / (n m) (factor times the mean plan entry)")
    args = ap.parse_args()

    # Before otcal (and its OpenMP runtime) is loaded.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    env = dict(os.environ)
    import numpy as np
    import otcal
    from otcal.errors import OtcalWarning

    # threshold = 0 with min = max iterations (as the binary): every solve "does not converge";
    # the warning is re-issued each call, filtered here so the per-call figures do not print it.
    warnings.simplefilter("ignore", OtcalWarning)

    sparsify_bin = args.sparsify_bin or os.path.join(os.path.dirname(os.path.abspath(args.bench_bin)),
                                                     "otcal-bench-sparsify")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    R = args.repeats
    t_start = time.time()
    res = {
        "bench": "python-overhead",
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "omp_num_threads": args.threads,
        "numpy": np.__version__,
        "otcal_python": getattr(otcal, "__version__", None),
        "bench_bin": os.path.abspath(args.bench_bin),
        "memory_budget": BUDGET,
        "precision": "float64",
        "epsilon": EPSILON,
        "scale_cost": 1.0,
        "load_average_start": load_average(),
    }

    def solve(geom, iters):
        return otcal.sinkhorn(geom, min_iterations=iters, max_iterations=iters, inner_iterations=iters,
                              threshold=0.0, on_divergence="return", precision="float64", device="cpu",
                              memory_budget=BUDGET, progress=False)

    def cloud(x, y):
        return otcal.PointCloud(x, y, cost_fn="sqeuclidean", scale_cost=1.0, epsilon=EPSILON)

    common = ["--device", "cpu", "--precision", "float64", "--memory-budget", BUDGET, "--d", args.d,
              "--epsilon", EPSILON]

    clouds = {}  # n -> (x, y): the binaries' seeded clouds (the same for any iteration count)

    def clouds_for(n):
        if n not in clouds:
            with tempfile.TemporaryDirectory() as tmp:
                run_binary(args.bench_bin, common + ["--n", n, "--iterations", 1, "--warmup", 0, "--repeats", 1,
                                                     "--dump-clouds", tmp], env)
                clouds[n] = read_clouds(tmp, n, args.d)[:2]
        return clouds[n]

    ctx = otcal.get_context("cpu", BUDGET)  # the cached context every call below uses (device="cpu", same budget)

    # 1. Sinkhorn: C++ binary vs Python, same clouds and options, in interleaved rounds (the side that
    # goes first alternates) so that a change of load during the run hits both sides alike.
    sink = []
    for n in sizes:
        load0 = load_average()
        x, y = clouds_for(n)
        f_ref = None
        cxx_s, fresh_s, res_s, elapsed, rounds = [], [], [], [], []
        fresh_uploads = resident_uploads = 0
        for rnd in range(args.rounds):
            def cxx_side():
                nonlocal f_ref
                with tempfile.TemporaryDirectory() as tmp:
                    rec = run_binary(args.bench_bin, common + ["--n", n, "--iterations", args.iterations, "--warmup", 1,
                                                               "--repeats", R, "--dump-clouds", tmp], env)
                    xd, yd, f_ref = read_clouds(tmp, n, args.d)
                assert np.array_equal(xd, x) and np.array_equal(yd, y)
                return rec

            def python_side():
                nonlocal fresh_uploads, resident_uploads
                solve(cloud(x, y), args.iterations)  # warm-up
                up0 = ctx.cloud_uploads
                fs, out = timed(lambda: solve(cloud(x, y), args.iterations), R, 0)
                fresh_uploads += ctx.cloud_uploads - up0
                geom = cloud(x, y)
                solve(geom, args.iterations)  # warm-up; uploads the clouds once

                def resident_solve():
                    o = solve(geom, args.iterations)
                    elapsed.append(o.elapsed_s)
                    return o

                up1 = ctx.cloud_uploads
                rs, out_r = timed(resident_solve, R, 0)
                resident_uploads += ctx.cloud_uploads - up1
                return fs, rs, out, out_r

            if rnd % 2 == 0:
                rec = cxx_side()
                fs, rs, out, out_r = python_side()
            else:
                fs, rs, out, out_r = python_side()
                rec = cxx_side()
            cxx_s += rec["times_s"]
            fresh_s += fs
            res_s += rs
            rounds.append({"cxx_first": rnd % 2 == 0, "cxx_median_s": statistics.median(rec["times_s"]),
                           "python_fresh_median_s": statistics.median(fs),
                           "python_resident_median_s": statistics.median(rs),
                           "cxx_cpu_time_s": rec["cpu_time_s"], "cxx_threads": rec["threads"]})
        cxx = stats(cxx_s)
        entry = {
            "n": n, "m": n, "d": args.d, "iterations": args.iterations, "rounds": args.rounds,
            "repeats_per_round": R, "warmup_per_round": 1,
            "cxx": cxx_record_summary(rec), "cxx_time_s": cxx,
            "python_fresh_time_s": stats(fresh_s), "python_resident_time_s": stats(res_s),
            "python_resident_library_elapsed_s": stats(elapsed),
            "ratio_python_fresh_over_cxx": statistics.median(fresh_s) / cxx["median"],
            "ratio_python_resident_over_cxx": statistics.median(res_s) / cxx["median"],
            "per_round": rounds,
            "timed_calls": R * args.rounds, "cloud_uploads_fresh_timed": fresh_uploads,
            "cloud_uploads_resident_timed": resident_uploads,
            "check": {
                "python_n_iters": int(out.n_iters), "cxx_iters": rec["iters"],
                "python_batch_size": int(out.batch_size), "cxx_tile_rows": rec["tile_rows"],
                "max_abs_diff_f": float(np.max(np.abs(np.asarray(out.f) - f_ref))),
                "max_abs_diff_f_resident": float(np.max(np.abs(np.asarray(out_r.f) - f_ref))),
                "reg_ot_cost_python": float(out.reg_ot_cost), "reg_ot_cost_cxx": rec.get("reg_ot_cost"),
            },
            "load_average_before": load0, "load_average_after": load_average(),
        }
        sink.append(entry)
        del out, out_r
    res["sinkhorn"] = sink

    # 2. Per-call overhead on a tiny problem.
    n, it, TR = args.tiny_n, args.tiny_iterations, args.tiny_repeats
    value_tiny = args.threshold_factor / (n * n)
    load0 = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rec_s = run_binary(args.bench_bin, common + ["--n", n, "--iterations", it, "--warmup", 10,
                                                     "--repeats", TR, "--dump-clouds", tmp], env)
        x, y, _ = read_clouds(tmp, n, args.d)
    rec_p = run_binary(sparsify_bin, common + ["--n", n, "--iterations", it, "--mode", "threshold", "--value",
                                               repr(value_tiny), "--warmup", 10, "--repeats", TR], env)
    geom = cloud(x, y)
    out = solve(geom, it)
    v = np.full(n, 1.0 / n)
    cases = {
        "sinkhorn (resident PointCloud)": lambda: solve(geom, it),
        "PointCloud + sinkhorn": lambda: solve(cloud(x, y), it),
        "out.apply(v[n], axis=0)": lambda: out.apply(v, axis=0),
        "out.marginal(0)": lambda: out.marginal(0),
        "out.sparsify(threshold)": lambda: out.sparsify(mode="threshold", value=value_tiny),
    }
    tiny = {"n": n, "m": n, "d": args.d, "iterations": it, "repeats": TR, "warmup": 10,
            "sparsify_value": value_tiny, "python_us": {}}
    for name, fn in cases.items():
        samples, last = timed(fn, TR, 10)
        tiny["python_us"][name] = stats(samples, 1e6)
        del tiny["python_us"][name]["samples"]
    tiny["nnz_python"] = int(out.sparsify(mode="threshold", value=value_tiny).nnz)
    tiny["cxx_us"] = {
        "sinkhorn (upload + solve, otcal-bench-sinkhorn)": {**{k: v * 1e6 for k, v in
                                                              [("min", rec_s["time_min_s"]), ("median", rec_s["time_s"]),
                                                               ("max", rec_s["time_max_s"])]}, "n": TR},
        "sparsify(threshold) (resident, otcal-bench-sparsify)": {**{k: v * 1e6 for k, v in
                                                                   [("min", rec_p["time_min_s"]), ("median", rec_p["time_s"]),
                                                                    ("max", rec_p["time_max_s"])]}, "n": TR},
    }
    tiny["nnz_cxx"] = rec_p.get("nnz")
    py = tiny["python_us"]
    tiny["python_minus_cxx_median_us"] = {
        "sinkhorn (fresh PointCloud vs binary, both upload)": py["PointCloud + sinkhorn"]["median"] - rec_s["time_s"] * 1e6,
        "sparsify": py["out.sparsify(threshold)"]["median"] - rec_p["time_s"] * 1e6,
    }
    tiny["cxx_records"] = [cxx_record_summary(rec_s), cxx_record_summary(rec_p)]
    for r in tiny["cxx_records"]:
        r.pop("times_s", None)
    tiny["load_average_before"], tiny["load_average_after"] = load0, load_average()
    res["per_call_overhead"] = tiny
    del geom, out

    # 3. Resident reuse vs the foreign-potentials path (uploads the clouds each call).
    n = args.resident_n
    value = args.threshold_factor / (n * n)
    load0 = load_average()
    x, y = clouds_for(n)
    geom = cloud(x, y)
    out = solve(geom, args.iterations)
    assert out.context is ctx
    f, g = np.asarray(out.f), np.asarray(out.g)
    resident_call = lambda: out.sparsify(mode="threshold", value=value)
    foreign_call = lambda: otcal.sparsify(x, y, f, g, epsilon=out.epsilon, scale_cost=out.scale, mode="threshold",
                                          value=value, device="cpu", memory_budget=BUDGET)
    res_samples, for_samples, cxx_s = [], [], []
    uploads_res = uploads_for = 0
    for rnd in range(args.rounds):
        def cxx_side():
            return run_binary(sparsify_bin, common + ["--n", n, "--iterations", args.iterations, "--mode", "threshold",
                                                      "--value", repr(value), "--warmup", 1, "--repeats", R], env)

        def python_side():
            uploads = [0, 0]
            resident_call(), foreign_call()  # warm-up
            u0 = ctx.cloud_uploads
            rs, t_res = timed(resident_call, R, 0)
            uploads[0] = ctx.cloud_uploads - u0
            u1 = ctx.cloud_uploads
            fs, t_for = timed(foreign_call, R, 0)
            uploads[1] = ctx.cloud_uploads - u1
            return rs, fs, t_res, t_for, uploads

        if rnd % 2 == 0:
            rec_p = cxx_side()
            rs, fs, T_res, T_for, ups = python_side()
        else:
            rs, fs, T_res, T_for, ups = python_side()
            rec_p = cxx_side()
        res_samples += rs
        for_samples += fs
        cxx_s += rec_p["times_s"]
        uploads_res += ups[0]
        uploads_for += ups[1]
    same = T_res.nnz == T_for.nnz and bool(np.array_equal(T_res.indices, T_for.indices)) and \
        bool(np.allclose(T_res.data, T_for.data, rtol=1e-12, atol=0))
    cxx = stats(cxx_s)
    res["resident_reuse"] = {
        "n": n, "m": n, "d": args.d, "solve_iterations": args.iterations, "mode": "threshold", "value": value,
        "rounds": args.rounds, "repeats_per_round": R, "warmup_per_round": 1, "nnz": int(T_res.nnz),
        "resident_out_sparsify_s": stats(res_samples),
        "foreign_otcal_sparsify_s": stats(for_samples),
        "ratio_foreign_over_resident": statistics.median(for_samples) / statistics.median(res_samples),
        "cloud_uploads_resident": uploads_res, "cloud_uploads_foreign": uploads_for,
        "timed_calls_each": R * args.rounds,
        "cloud_uploads_note": "ctx.cloud_uploads counts each cloud (x and y) uploaded, over the timed calls",
        "same_plan": same,
        "cxx_sparsify_s": cxx, "cxx_nnz": rec_p.get("nnz"), "cxx": cxx_record_summary(rec_p),
        "ratio_resident_over_cxx": statistics.median(res_samples) / cxx["median"],
        "load_average_before": load0, "load_average_after": load_average(),
    }
    del out, T_res, T_for

    # 4. C-contiguous vs Fortran-order x: PointCloud + solve, alternating to share any drift.
    load0 = load_average()
    xc = np.ascontiguousarray(x)
    xf = np.asfortranarray(x)
    times = {"C": [], "F": []}
    in_place = {}
    for rep in range(R + 1):
        for key, arr in (("C", xc), ("F", xf)):
            t0 = time.perf_counter()
            gm = cloud(arr, y)
            o = solve(gm, args.iterations)
            t = time.perf_counter() - t0
            in_place[key] = gm.x is arr
            if rep > 0:  # the first round warms up
                times[key].append(t)
            del gm, o
    copy_s, _ = timed(lambda: np.ascontiguousarray(xf), 50, 5)
    ctor_c, _ = timed(lambda: cloud(xc, y), 50, 5)
    ctor_f, _ = timed(lambda: cloud(xf, y), 50, 5)
    res["input_copies"] = {
        "n": n, "m": n, "d": args.d, "iterations": args.iterations, "repeats": R, "warmup": 1,
        "c_contiguous_pointcloud_plus_solve_s": stats(times["C"]),
        "fortran_pointcloud_plus_solve_s": stats(times["F"]),
        "ratio_fortran_over_c": statistics.median(times["F"]) / statistics.median(times["C"]),
        "geom_x_is_input": in_place,
        "ascontiguousarray_copy_us": stats(copy_s, 1e6),
        "pointcloud_ctor_c_us": stats(ctor_c, 1e6),
        "pointcloud_ctor_fortran_us": stats(ctor_f, 1e6),
        "load_average_before": load0, "load_average_after": load_average(),
    }
    for k in ("ascontiguousarray_copy_us", "pointcloud_ctor_c_us", "pointcloud_ctor_fortran_us"):
        del res["input_copies"][k]["samples"]

    res["load_average_end"] = load_average()
    res["total_wall_s"] = time.time() - t_start
    res["device"] = sink[0]["cxx"].get("device") if sink else None
    res["cxx_binary_commit"] = sink[0]["cxx"].get("commit") if sink else None

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
        fh.write("\n")
    print_table(res)
    print("wrote %s (%.0f s)" % (args.out, res["total_wall_s"]))


def print_table(res):
    m = res["machine"]
    print("otcal Python vs C++ | %s | %s, nproc %d | OMP_NUM_THREADS=%d | commit %s" % (
        res["device"], m["cpu_model"], m["nproc"], res["omp_num_threads"], (res["commit"] or "?")[:10]))
    print("load average at start %s, end %s" % (
        " ".join("%.2f" % v for v in res["load_average_start"]), " ".join("%.2f" % v for v in res["load_average_end"])))
    fmt = lambda s, k=1.0: "%9.4f %9.4f %9.4f" % (s["min"] * k, s["median"] * k, s["max"] * k)
    print("\n1. Sinkhorn, float64, d=%d, fixed iterations; seconds min / median / max" % res["sinkhorn"][0]["d"])
    print("%-6s %-5s %-30s %-30s %-30s %7s %7s" % ("n", "iters", "C++ binary", "Python fresh PointCloud",
                                                 "Python resident", "fresh/C", "res/C"))
    for e in res["sinkhorn"]:
        print("%-6d %-5d %-30s %-30s %-30s %7.3f %7.3f" % (
            e["n"], e["iterations"], fmt(e["cxx_time_s"]), fmt(e["python_fresh_time_s"]),
            fmt(e["python_resident_time_s"]), e["ratio_python_fresh_over_cxx"], e["ratio_python_resident_over_cxx"]))
        print("       check: max|f_py - f_cpp| = %.2e, tile rows %d / %d, cloud_uploads over the timed solves: fresh +%d, resident +%d" % (
            e["check"]["max_abs_diff_f"], e["check"]["python_batch_size"], e["check"]["cxx_tile_rows"],
            e["cloud_uploads_fresh_timed"], e["cloud_uploads_resident_timed"]))
    t = res["per_call_overhead"]
    print("\n2. Per call, n = m = %d, %d iterations; microseconds min / median / max" % (t["n"], t["iterations"]))
    for name, s in t["python_us"].items():
        print("  Python %-36s %s" % (name, fmt(s)))
    for name, s in t["cxx_us"].items():
        print("  C++    %-36s %s" % (name[:36], fmt(s)))
    for name, v in t["python_minus_cxx_median_us"].items():
        print("  Python - C++ median, %s: %.1f us" % (name, v))
    r = res["resident_reuse"]
    print("\n3. Sparsify threshold %.3g, n = m = %d (nnz %d); seconds min / median / max" % (r["value"], r["n"], r["nnz"]))
    print("  out.sparsify (resident)       %s   cloud_uploads +%d over %d calls" % (
        fmt(r["resident_out_sparsify_s"]), r["cloud_uploads_resident"], r["timed_calls_each"]))
    print("  otcal.sparsify(x, y, f, g)    %s   cloud_uploads +%d over %d calls" % (
        fmt(r["foreign_otcal_sparsify_s"]), r["cloud_uploads_foreign"], r["timed_calls_each"]))
    print("  C++ otcal-bench-sparsify      %s" % fmt(r["cxx_sparsify_s"]))
    print("  foreign/resident %.3f, resident/C++ %.3f, same plan: %s" % (
        r["ratio_foreign_over_resident"], r["ratio_resident_over_cxx"], r["same_plan"]))
    c = res["input_copies"]
    print("\n4. PointCloud(x, y) + solve, n = m = %d, %d iterations; seconds min / median / max" % (c["n"], c["iterations"]))
    print("  C-contiguous x   %s   (geom.x is x: %s)" % (fmt(c["c_contiguous_pointcloud_plus_solve_s"]),
                                                         c["geom_x_is_input"]["C"]))
    print("  Fortran-order x  %s   (geom.x is x: %s)" % (fmt(c["fortran_pointcloud_plus_solve_s"]),
                                                         c["geom_x_is_input"]["F"]))
    print("  Fortran/C %.3f; the copy alone (ascontiguousarray) %.1f us median; PointCloud() %.1f us (C), %.1f us (F)" % (
        c["ratio_fortran_over_c"], c["ascontiguousarray_copy_us"]["median"], c["pointcloud_ctor_c_us"]["median"],
        c["pointcloud_ctor_fortran_us"]["median"]))


if __name__ == "__main__":
    sys.exit(main())
