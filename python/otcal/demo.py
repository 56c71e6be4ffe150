"""The embedded demo (``python -m otcal demo``): small synthetic problems for both halves.

1. Optimal transport between two Gaussian mixtures, as two time points of a cell embedding:
   solve, check the marginals, push labels forward, sparsify the plan in bounded memory.
2. Survey calibration: a synthetic survey with categorical and continuous targets, built into a
   sparse constraint system, calibrated exactly (raking, as R ``survey``) and by gradient
   descent (as microcalibrate).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

__all__ = ["run_demo"]


def _mixture(rng: np.random.Generator, n: int, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    component = rng.choice(len(weights), size=n, p=weights)
    return means[component] + sds[component, None] * rng.standard_normal((n, means.shape[1]))


def run_demo(device: str = "auto", n: int = 2000, n_records: int = 20000, seed: int = 0,
             out: Callable[[str], None] = print) -> None:
    """Runs both demos and prints what they found. Example: ``otcal.demo.run_demo(n=1000)``."""
    import otcal

    rng = np.random.default_rng(seed)
    # The mixtures of the command-line demo (`otcal demo`): three components each, shifted.
    x = _mixture(rng, n, np.array([[0.0, 0, 0], [3, 0, 1], [0, 3, -1]]), np.array([0.6, 0.8, 0.5]),
                 np.array([0.5, 0.3, 0.2]))
    y = _mixture(rng, n + n // 2, np.array([[1.0, 1, 0], [4, 2, 1], [-1, 2, 2]]), np.array([0.7, 0.5, 0.9]),
                 np.array([0.4, 0.4, 0.2]))
    dim = x.shape[1]

    out(f"otcal {otcal.__version__} demo (seed {seed})")
    out("")
    out(f"1. Entropic OT between two {dim}-D Gaussian mixtures ({x.shape[0]} -> {y.shape[0]} points)")
    geom = otcal.PointCloud(x, y, cost_fn="sqeuclidean", scale_cost="mean")
    t0 = time.perf_counter()
    sol = otcal.sinkhorn(geom, threshold=1e-3, device=device, progress=False)
    t_solve = time.perf_counter() - t0
    out(f"   device        {sol.device}")
    out(f"   epsilon       {sol.epsilon:.6g} (0.05 * std of the cost scaled by its mean, s = {sol.scale:.6g})")
    out(f"   iterations    {sol.n_iters}, {'converged' if sol.converged else 'NOT converged'} in {t_solve:.2f} s")
    out(f"   reg_ot_cost   {sol.reg_ot_cost:.10g}")
    row_sums = sol.marginal(axis=1)
    col_sums = sol.marginal(axis=0)
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    out(f"   marginals     max |P 1 - a| = {np.abs(row_sums - a).max():.2e}, "
        f"max |P^T 1 - b| = {np.abs(col_sums - b).max():.2e}")
    labels = np.eye(3)[rng.choice(3, size=x.shape[0])].T  # [k, n]: OTT's layout for apply
    pushed = sol.apply(labels, axis=0)
    out(f"   push labels   P^T of {labels.shape[0]} one-hot rows -> {pushed.shape}, total mass {pushed.sum():.6f}")
    t0 = time.perf_counter()
    plan = sol.sparsify(mode="mass", value=0.95, max_k=50, batch_size=256)
    t_sparse = time.perf_counter() - t0
    dense_bytes = x.shape[0] * y.shape[0] * 8
    out(f"   sparsify      mass 0.95 (max_k 50): {plan.nnz} entries of {x.shape[0] * y.shape[0]} "
        f"({plan.nnz / (x.shape[0] * y.shape[0]):.2%}), {plan.data.nbytes + plan.indices.nbytes} bytes "
        f"instead of {dense_bytes} dense, {t_sparse:.2f} s")

    out("")
    out(f"2. Survey calibration of {n_records} records")
    regions = np.array(["north", "south", "east", "west"])
    region = regions[rng.choice(4, size=n_records, p=[0.4, 0.3, 0.2, 0.1])]
    age = rng.integers(0, 6, size=n_records)
    income = rng.lognormal(mean=10.0, sigma=0.8, size=n_records)
    design = rng.uniform(0.5, 1.5, size=n_records)  # a sample that stands for itself, give or take
    truth = design * rng.lognormal(sigma=0.2, size=n_records)  # the population the targets describe
    table = {"region": region, "age": age, "income": income, "weight": design}
    marginal = {
        "region": {r: float(truth[region == r].sum()) for r in regions},
        "age": {str(k): float(truth[age == k].sum()) for k in range(6)},
    }
    A, targets, names = otcal.build_constraints(table, marginal=marginal,
                                                continuous={"income": float(truth @ income)})
    out(f"   constraints   {A.shape[0]} targets x {A.shape[1]} records, {A.nnz} non-zeros (CSR, O(nnz))")
    X = A.T.tocsr()
    t0 = time.perf_counter()
    result = otcal.calibrate(X, design, targets, method="raking", device=device, progress=False)
    t_rake = time.perf_counter() - t0
    rel = np.abs(X.T @ result.weights - targets) / targets
    out(f"   raking        {result.n_iterations} Newton steps, max relative error {rel.max():.2e}, "
        f"g in [{result.g.min():.3f}, {result.g.max():.3f}], {t_rake:.3f} s")
    cal = otcal.Calibration(design, targets, names, estimate_matrix=X, epochs=300, learning_rate=0.05,
                            noise_level=0.0, device=device, progress=False)
    t0 = time.perf_counter()
    cal.calibrate()
    t_grad = time.perf_counter() - t0
    rel = np.abs(cal.estimate() - targets) / targets
    out(f"   gradient      300 Adam epochs (microcalibrate's loss): max relative error {rel.max():.2e}, "
        f"{t_grad:.2f} s")
