"""otcal.sparsify on potentials computed by OTT-JAX (a "foreign" solution, as moscot hands over),
against OTT's own dense plan filtered by each rule, re-implemented naively in numpy here.

The sparse plan must have the same pattern as the filtered dense plan and the same values to
~1e-12 relative (both evaluate exp((f + g - C) / eps) from the same potentials; only the rounding
of the cost differs). Thresholds are placed between two well separated plan values, so that the
rounding cannot move an entry across them.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse

import otcal

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
from ott.geometry import costs as ott_costs  # noqa: E402
from ott.geometry import geometry as ott_geometry  # noqa: E402
from ott.geometry import pointcloud as ott_pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn as ott_sinkhorn  # noqa: E402

N, M, D = 41, 33, 4
VALUE_RTOL = 1e-12
OTT_COSTS = {
    "sqeuclidean": ott_costs.SqEuclidean,
    "euclidean": ott_costs.Euclidean,
    "cosine": ott_costs.Cosine,
    "pnorm:1.5": lambda: ott_costs.PNormP(1.5),
    "sq_pnorm:1.5": lambda: ott_costs.SqPNorm(1.5),
}


@functools.partial(jax.jit, static_argnames=("tau_a",))
def _ott_solve_dense(cost_matrix, epsilon, tau_a):
    geom = ott_geometry.Geometry(cost_matrix=cost_matrix, epsilon=epsilon)
    out = ott_sinkhorn.Sinkhorn(threshold=1e-10, max_iterations=20_000)(
        linear_problem.LinearProblem(geom, tau_a=tau_a))
    return out.f, out.g, out.matrix


class OttSolution:
    """OTT-JAX potentials and plan on its PointCloud's scaled cost, with the scale and epsilon."""

    def __init__(self, rng, cost="sqeuclidean", scale="mean", tau_a=1.0, eps_factor=0.05):
        self.x = rng.normal(size=(N, D))
        self.y = rng.normal(size=(M, D)) + 0.4
        self.cost_fn = OTT_COSTS[cost]()
        pc = ott_pointcloud.PointCloud(self.x, self.y, cost_fn=self.cost_fn, scale_cost=scale)
        c = pc.cost_matrix
        self.scale = float(1.0 / pc.inv_scale_cost)
        self.epsilon = eps_factor * float(np.mean(c))
        f, g, plan = _ott_solve_dense(c, self.epsilon, float(tau_a))
        self.f, self.g, self.plan = f, g, np.asarray(plan)  # f, g stay JAX arrays, as OTT hands them over

    def sparsify(self, **kw):
        return otcal.sparsify(self.x, self.y, self.f, self.g, epsilon=self.epsilon, scale_cost=self.scale,
                              cost_fn=self.cost_fn, **kw)


def separated_threshold(plan: np.ndarray, q: float) -> float:
    """A threshold near the q-quantile of the plan, between two values at least 1e-6 apart relatively."""
    values = np.unique(plan[plan > 0])
    k = int(q * (values.size - 1))
    while values[k + 1] <= values[k] * (1 + 1e-6):
        k += 1
    return float(np.sqrt(values[k] * values[k + 1]))


def assert_same_sparse(sparse, expected: np.ndarray):
    assert isinstance(sparse, scipy.sparse.csr_array)
    assert sparse.shape == expected.shape
    dense = sparse.toarray()
    np.testing.assert_array_equal(dense != 0, expected != 0)
    kept = expected != 0
    rel = np.abs(dense[kept] - expected[kept]) / expected[kept]
    assert rel.max(initial=0.0) < VALUE_RTOL, f"values differ by {rel.max():.3g} relative"
    # CSR hygiene: sorted columns, no explicit zeros.
    assert sparse.has_sorted_indices and np.all(sparse.data != 0)


def naive_mass(plan: np.ndarray, value: float, max_k=None) -> np.ndarray:
    out = np.zeros_like(plan)
    for i, row in enumerate(plan):
        positive = np.flatnonzero(row > 0)
        if positive.size == 0:
            continue
        order = positive[np.lexsort((positive, -row[positive]))]  # largest first, ties by column
        if value >= 1:
            k = order.size
        else:
            cumulative = np.cumsum(row[order])
            k = int(np.argmax(cumulative >= value * row.sum())) + 1
        if max_k is not None:
            k = min(k, max_k)
        out[i, order[:k]] = row[order[:k]]
    return out


@pytest.mark.parametrize("tau_a", [1.0, 0.8])
@pytest.mark.parametrize("cost", list(OTT_COSTS))
def test_threshold_matches_ott_plan(rng, cost, tau_a):
    sol = OttSolution(rng, cost=cost, tau_a=tau_a)
    thr = separated_threshold(sol.plan, rng.uniform(0.3, 0.9))
    sparse = sol.sparsify(mode="threshold", value=thr)
    assert_same_sparse(sparse, np.where(sol.plan >= thr, sol.plan, 0.0))
    assert 0 < sparse.nnz < N * M


def test_threshold_zero_reproduces_ott_plan(rng):
    sol = OttSolution(rng, cost="euclidean")
    assert_same_sparse(sol.sparsify(mode="threshold", value=0.0), sol.plan)


@pytest.mark.parametrize("method", ["sampled", "exact"])
def test_percentile_matches_naive_percentile(rng, method):
    sol = OttSolution(rng, cost="cosine")
    total = N * M
    k = int(rng.integers(total // 4, 3 * total // 4))
    value = 100.0 * (k + 0.5) / (total - 1)  # halfway between two order statistics
    thr = np.percentile(sol.plan.ravel(), value)  # numpy's linear rule; every row has mass
    sparse, report = sol.sparsify(mode="percentile", value=value, n_samples=N, percentile_method=method,
                                  return_report=True)
    assert report["threshold"] == pytest.approx(thr, rel=1e-10)
    assert_same_sparse(sparse, np.where(sol.plan >= thr, sol.plan, 0.0))


def test_min_row_matches_naive(rng):
    sol = OttSolution(rng, cost="pnorm:1.5", eps_factor=0.02)
    thr = sol.plan.max(axis=1).min()
    sparse = sol.sparsify(mode="min_row")
    assert_same_sparse(sparse, np.where(sol.plan >= thr, sol.plan, 0.0))
    assert np.all(np.diff(sparse.indptr) >= 1)  # every row keeps at least its largest entry


@pytest.mark.parametrize("value,max_k", [(0.7, None), (0.95, 4), (1.0, None)])
def test_mass_matches_naive(rng, value, max_k):
    sol = OttSolution(rng, cost="sq_pnorm:1.5", scale="max_cost")
    sparse = sol.sparsify(mode="mass", value=value, max_k=max_k)
    assert_same_sparse(sparse, naive_mass(sol.plan, value, max_k))


def test_worked_example_with_an_ott_pointcloud_solution(rng):
    """docs/python-ot.md's example: OTT's out.f, out.g, out.geom.epsilon and resolved scale."""
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    geom = ott_pointcloud.PointCloud(x, y, scale_cost="mean", epsilon=1e-2)
    out = ott_sinkhorn.Sinkhorn()(linear_problem.LinearProblem(geom))
    plan = np.asarray(out.matrix)
    thr = separated_threshold(plan, 0.8)
    sparse = otcal.sparsify(np.asarray(out.geom.x), np.asarray(out.geom.y), out.f, out.g,
                            epsilon=float(out.geom.epsilon),
                            scale_cost=float(1.0 / out.geom.inv_scale_cost), cost_fn=out.geom.cost_fn,
                            mode="threshold", value=thr)
    assert_same_sparse(sparse, np.where(plan >= thr, plan, 0.0))
    # The scale given by name is resolved again from the clouds: the same plan.
    by_name = otcal.sparsify(x, y, out.f, out.g, epsilon=float(out.geom.epsilon), scale_cost="mean",
                             mode="threshold", value=thr)
    assert_same_sparse(by_name, np.where(plan >= thr, plan, 0.0))


def test_foreign_sparsify_in_float32(rng):
    sol = OttSolution(rng)
    thr = separated_threshold(sol.plan, 0.5)
    sparse = otcal.sparsify(sol.x.astype(np.float32), sol.y.astype(np.float32), sol.f, sol.g,
                            epsilon=sol.epsilon, scale_cost=sol.scale, mode="threshold", value=thr)
    assert sparse.dtype == np.float32
    expected = np.where(sol.plan >= thr, sol.plan, 0.0)
    dense = sparse.toarray()
    both = (dense != 0) & (expected != 0)
    assert both.sum() >= 0.95 * (expected != 0).sum()  # float32 cost rounding may move a few entries
    assert np.max(np.abs(dense[both] - expected[both]) / expected[both]) < 1e-3


def test_output_sparsify_equals_filtered_transport_matrix(rng):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    out = otcal.sinkhorn(otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.03), threshold=1e-8, progress=False)
    plan = out.transport_matrix()
    thr = separated_threshold(plan, 0.6)
    np.testing.assert_array_equal(out.sparsify(value=thr).toarray(), np.where(plan >= thr, plan, 0.0))
    np.testing.assert_array_equal(out.sparsify("mass", value=0.8, max_k=3).toarray(), naive_mass(plan, 0.8, 3))
    np.testing.assert_array_equal(out.sparsify("min_row").toarray(),
                                  np.where(plan >= plan.max(axis=1).min(), plan, 0.0))


def test_foreign_sparsify_on_a_pointcloud_reuses_its_clouds(rng):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    geom = otcal.PointCloud(x, y, scale_cost="median", epsilon=0.05)
    out = otcal.sinkhorn(geom, threshold=1e-8, progress=False)
    ctx = out.context
    uploads = ctx.cloud_uploads
    sparse = otcal.sparsify(geom, None, out.f, out.g, epsilon=out.epsilon, mode="threshold", value=0.0)
    assert ctx.cloud_uploads == uploads
    np.testing.assert_array_equal(sparse.toarray(), out.transport_matrix())
