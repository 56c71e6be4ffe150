#!/usr/bin/python3
"""Strong scaling of Sinkhorn over MPI ranks on the CPU (docs/distributed.md §8).

Runs otcal-bench-sinkhorn under mpirun with 1 and 2 ranks of one thread each, beside one rank with
two threads (the shared-memory baseline), on the same seeded clouds. The configurations are
interleaved round by round (mpirun --bind-to none, so a rank's OpenMP threads may use every core), so drift on a shared machine hits all of them alike; per configuration
the median over rounds of each run's median time is reported, with the time rank 0 spent in
collectives (waiting for the other rank included) and every rank's peak.

Writes bench/results/mpi-scaling-cpu-<date>.json. Standard library only; run with /usr/bin/python3:
  python3 bench/run_mpi_scaling.py --bench build/bench/otcal-bench-sinkhorn [--n 8000] [--rounds 5]
"""
import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIGS = [  # (name, ranks, threads per rank)
    ("1 rank x 1 thread", 1, 1),
    ("2 ranks x 1 thread", 2, 1),
    ("1 rank x 2 threads", 1, 2),
]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(bench, mpiexec, ranks, threads, args):
    # --bind-to none: OpenMPI binds each rank to one core by default with up to two ranks, which
    # would put a rank's two OpenMP threads on one core.
    cmd = [mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(ranks), bench,
           "--device", "cpu",
           "--threads", str(threads)] + args
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    for line in out.splitlines():
        if line.startswith("OTCAL_BENCH "):
            return json.loads(line[len("OTCAL_BENCH "):])
    raise RuntimeError("no OTCAL_BENCH line from " + " ".join(cmd))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "otcal-bench-sinkhorn"))
    p.add_argument("--mpiexec", default=shutil.which("mpirun") or "mpirun")
    p.add_argument("--n", type=int, default=8000)
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precision", default="float64")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    args = ["--n", str(a.n), "--d", str(a.d), "--iterations", str(a.iterations), "--precision", a.precision,
            "--warmup", "1", "--repeats", str(a.repeats)]
    runs = {name: [] for name, _, _ in CONFIGS}
    for r in range(a.rounds):
        for name, ranks, threads in CONFIGS:
            rec = run(a.bench, a.mpiexec, ranks, threads, args)
            runs[name].append(rec)
            print(f"round {r + 1}: {name:>20}: {rec['time_s']:.4f} s per run "
                  f"(collectives {rec.get('communication_s_per_run', 0):.4f} s)", flush=True)

    base = statistics.median(x["time_s"] for x in runs[CONFIGS[0][0]])
    summary = []
    for name, ranks, threads in CONFIGS:
        recs = runs[name]
        med = statistics.median(x["time_s"] for x in recs)
        comm = statistics.median(x.get("communication_s_per_run", 0.0) for x in recs)
        summary.append({
            "config": name, "ranks": ranks, "threads_per_rank": threads,
            "median_s_per_run": med, "median_s_per_iteration": med / a.iterations,
            "speedup_vs_1x1": base / med,
            "communication_s_per_run_rank0": comm,
            "communication_fraction": comm / med if med > 0 else 0.0,
            "peak_bytes_per_rank": recs[-1].get("distributed", {}).get("peak_bytes_per_rank"),
            "round_medians_s": [x["time_s"] for x in recs],
        })
    first = runs[CONFIGS[0][0]][0]
    result = {
        "bench": "mpi-scaling", "device": "cpu", "machine": {
            "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "kernel": platform.release(),
            "note": "shared 2-core development VM; timings are medians of interleaved rounds"},
        "commit": first.get("commit"), "date": dt.date.today().isoformat(),
        "mpiexec": a.mpiexec, "n": a.n, "m": a.n, "d": a.d, "iterations": a.iterations, "precision": a.precision,
        "rounds": a.rounds, "repeats_per_run": a.repeats, "summary": summary,
        "records": runs,
    }
    out = a.out or os.path.join(HERE, "results", f"mpi-scaling-cpu-{dt.date.today().strftime('%Y%m%d')}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    for s in summary:
        print(f"{s['config']:>20}: {s['median_s_per_iteration']:.4f} s/iteration, speedup {s['speedup_vs_1x1']:.2f}x, "
              f"collectives {100 * s['communication_fraction']:.1f} %")
    print("wrote", out)


if __name__ == "__main__":
    main()
