"""otcal's Sinkhorn against two independent references: POT on a cost matrix built here in numpy
(log-domain solvers) and OTT-JAX (CPU, float64) on its own cost functions and scalings.

Every problem is solved to a tight threshold on all sides, so that all reach the same fixed point;
the dense plans must then agree to 1e-6 relative, entry by entry. OTT-JAX is run on a dense
Geometry made from its PointCloud's cost matrix inside one jitted function per (tau_a, tau_b), so
that the suite compiles a handful of programs rather than one per case.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import otcal

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
ot = pytest.importorskip("ot")
from ott.geometry import costs as ott_costs  # noqa: E402
from ott.geometry import geometry as ott_geometry  # noqa: E402
from ott.geometry import pointcloud as ott_pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn as ott_sinkhorn  # noqa: E402

# One shape for every OTT comparison: the jitted solve compiles once per (tau_a, tau_b).
N, M, D = 37, 29, 3
TIGHT = 1e-12
PLAN_RTOL = 1e-6
COSTS = ["sqeuclidean", "euclidean", "cosine", "pnorm:1.5", "sq_pnorm:1.5"]


def ott_cost(name: str):
    if name == "sqeuclidean":
        return ott_costs.SqEuclidean()
    if name == "euclidean":
        return ott_costs.Euclidean()
    if name == "cosine":
        return ott_costs.Cosine()
    kind, p = name.split(":")
    return ott_costs.PNormP(float(p)) if kind == "pnorm" else ott_costs.SqPNorm(float(p))


def naive_cost(x: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """The unscaled cost matrix, written from the definitions in float64 (POT's input)."""
    diff = x[:, None, :] - y[None, :, :]
    if name == "sqeuclidean":
        return (diff**2).sum(-1)
    if name == "euclidean":
        return np.sqrt((diff**2).sum(-1))
    if name == "cosine":
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
        return 1.0 - (x @ y.T) / (nx[:, None] * ny[None, :] + 1e-8)
    kind, p = name.split(":")
    p = float(p)
    s = (np.abs(diff) ** p).sum(-1)
    return s / p if kind == "pnorm" else 0.5 * s ** (2.0 / p)


def naive_scale(c: np.ndarray, x: np.ndarray, y: np.ndarray, scale) -> float:
    if not isinstance(scale, str):
        return float(scale)
    if scale == "mean":
        return float(c.mean())
    if scale == "max_cost":
        return float(np.abs(c).max())
    if scale == "median":
        return float(np.median(c))
    sx, sy = float((x**2).sum(1).max()), float((y**2).sum(1).max())
    if scale == "max_norm":
        return max(sx, sy)
    return sx + sy + 2.0 * np.sqrt(sx * sy)  # max_bound


@functools.partial(jax.jit, static_argnames=("tau_a", "tau_b"))
def _ott_solve_dense(cost_matrix, a, b, epsilon, tau_a, tau_b):
    geom = ott_geometry.Geometry(cost_matrix=cost_matrix, epsilon=epsilon)
    solver = ott_sinkhorn.Sinkhorn(threshold=TIGHT, max_iterations=50_000)
    out = solver(linear_problem.LinearProblem(geom, a, b, tau_a=tau_a, tau_b=tau_b))
    return out.matrix, out.reg_ot_cost, out.converged, out.f, out.g


def ott_reference(x, y, a, b, cost, scale, epsilon, tau_a, tau_b):
    """OTT-JAX's plan and reg_ot_cost; the scaled cost comes from OTT's own PointCloud."""
    pc = ott_pointcloud.PointCloud(x, y, cost_fn=ott_cost(cost), scale_cost=scale)
    c = pc.cost_matrix
    plan, cost_value, converged, _, _ = _ott_solve_dense(c, a, b, epsilon, float(tau_a), float(tau_b))
    assert bool(converged)
    return np.asarray(plan), float(cost_value), float(1.0 / pc.inv_scale_cost)


def pot_reference(c_scaled, a, b, epsilon, tau_a, tau_b):
    """POT's plan. tau -> reg_m = eps tau / (1 - tau) with reg_type='entropy': the same objective
    <C, P> + eps sum P (log P - 1) + rho KL(P1 | a) + ... (docs/sinkhorn.md §2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tau_a == 1.0 and tau_b == 1.0:
            return ot.sinkhorn(a, b, c_scaled, epsilon, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000)
        rho = tuple(float("inf") if t == 1.0 else epsilon * t / (1.0 - t) for t in (tau_a, tau_b))
        return ot.unbalanced.sinkhorn_unbalanced(
            a, b, c_scaled, epsilon, rho, method="sinkhorn_stabilized", reg_type="entropy", stopThr=1e-15,
            numItermax=20_000,
        )


def max_rel(p, q):
    assert np.all(q > 0), "reference plan underflows; pick a larger epsilon"
    return float(np.max(np.abs(p - q) / q))


def make_problem(rng, kind):
    x = rng.normal(size=(N, D))
    y = rng.normal(size=(M, D)) * 0.8 + 0.3
    if kind == "uniform":
        a, b, taus = np.full(N, 1.0 / N), np.full(M, 1.0 / M), (1.0, 1.0)
    elif kind == "weighted":
        a, b = rng.uniform(0.2, 1.0, N), rng.uniform(0.2, 1.0, M)
        a, b, taus = a / a.sum(), b / b.sum(), (1.0, 1.0)
    else:  # unbalanced, unequal masses
        a, b = rng.uniform(0.2, 1.0, N), rng.uniform(0.2, 1.0, M)
        a, b, taus = a / a.sum(), 1.3 * b / b.sum(), (0.7, 0.85)
    return x, y, a, b, taus


def compare(rng, cost, kind, scale, record):
    x, y, a, b, (tau_a, tau_b) = make_problem(rng, kind)
    c = naive_cost(x, y, cost)
    s = naive_scale(c, x, y, scale)
    epsilon = 0.1 * float((c / s).mean())  # independent of otcal's epsilon rule (tested separately)

    geom = otcal.PointCloud(x, y, cost_fn=cost, scale_cost=scale, epsilon=epsilon)
    out = otcal.sinkhorn(geom, a=a, b=b, tau_a=tau_a, tau_b=tau_b, threshold=TIGHT, max_iterations=50_000,
                         progress=False)
    assert out.converged
    assert out.scale == pytest.approx(s, rel=1e-12)
    plan = out.transport_matrix()

    p_pot = pot_reference(c / s, a, b, epsilon, tau_a, tau_b)
    p_ott, cost_ott, s_ott = ott_reference(x, y, a, b, cost, scale, epsilon, tau_a, tau_b)
    assert out.scale == pytest.approx(s_ott, rel=1e-12)
    err_pot, err_ott = max_rel(plan, p_pot), max_rel(plan, p_ott)
    err_cost = abs(out.reg_ot_cost - cost_ott) / abs(cost_ott)
    record(cost, kind, scale, err_pot, err_ott, err_cost)
    assert err_pot < PLAN_RTOL, f"POT plan differs by {err_pot:.3g} relative"
    assert err_ott < PLAN_RTOL, f"OTT plan differs by {err_ott:.3g} relative"
    assert err_cost < PLAN_RTOL, f"reg_ot_cost differs from OTT's by {err_cost:.3g} relative"


@pytest.fixture
def record(request):
    def add(cost, kind, scale, err_pot, err_ott, err_cost):
        request.node.user_properties.append(
            ("agreement", dict(cost=cost, kind=kind, scale=scale, pot=err_pot, ott=err_ott, reg_ot_cost=err_cost))
        )
        print(f"[agreement] {cost:13s} {kind:10s} scale={scale!s:9s} POT {err_pot:.2e}  OTT {err_ott:.2e}  "
              f"reg_ot_cost {err_cost:.2e}")

    return add


@pytest.mark.parametrize("kind", ["uniform", "weighted", "unbalanced"])
@pytest.mark.parametrize("cost", COSTS)
def test_plans_agree_with_pot_and_ott(rng, cost, kind, record):
    compare(rng, cost, kind, "mean", record)


@pytest.mark.parametrize(
    "cost,scale",
    [(c, s) for c in COSTS for s in (1.0, "max_cost", "median")]
    + [("sqeuclidean", "max_norm"), ("sqeuclidean", "max_bound")],
)
def test_scale_cost_variants_agree(rng, cost, scale, record):
    compare(rng, cost, "weighted", scale, record)


@pytest.mark.parametrize("cost", ["sqeuclidean", "cosine", "pnorm:1.5"])
def test_unbalanced_scale_variant_agrees(rng, cost, record):
    compare(rng, cost, "unbalanced", "max_cost", record)


@pytest.mark.parametrize("relative_epsilon,epsilon", [(None, None), ("mean", 0.07), ("std", None), ("mean", None)])
@pytest.mark.parametrize("cost", ["sqeuclidean", "euclidean", "cosine"])
def test_epsilon_rule_matches_ott(rng, cost, relative_epsilon, epsilon):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D)) + 0.5
    pc = ott_pointcloud.PointCloud(x, y, cost_fn=ott_cost(cost), scale_cost="mean", epsilon=epsilon,
                                   relative_epsilon=relative_epsilon)
    geom = otcal.PointCloud(x, y, cost_fn=cost, scale_cost="mean", epsilon=epsilon, relative_epsilon=relative_epsilon)
    out = otcal.sinkhorn(geom, max_iterations=10, threshold=10.0, progress=False)  # only the resolution matters
    assert out.epsilon == pytest.approx(float(pc.epsilon), rel=1e-10)
    assert out.scale == pytest.approx(float(1.0 / pc.inv_scale_cost), rel=1e-12)


def test_pointcloud_solution_matches_ott_pointcloud(rng):
    """The full OTT pipeline (PointCloud geometry, Sinkhorn) against otcal with the same options."""
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    a = rng.uniform(0.5, 1.0, N)
    a /= a.sum()
    geom_ott = ott_pointcloud.PointCloud(x, y, scale_cost="mean", epsilon=0.05)
    out_ott = ott_sinkhorn.Sinkhorn(threshold=TIGHT, max_iterations=50_000)(
        linear_problem.LinearProblem(geom_ott, a=a))
    geom = otcal.PointCloud(x, y, cost_fn=ott_costs.SqEuclidean(), scale_cost="mean", epsilon=0.05)
    out = otcal.sinkhorn(geom, a=a, threshold=TIGHT, max_iterations=50_000, progress=False)
    assert max_rel(out.transport_matrix(), np.asarray(out_ott.matrix)) < PLAN_RTOL
    assert out.reg_ot_cost == pytest.approx(float(out_ott.reg_ot_cost), rel=PLAN_RTOL)
    # Potentials are unique up to a constant shift in the balanced case; f + g is not.
    shift = float(np.mean(out.f - np.asarray(out_ott.f)))
    np.testing.assert_allclose(out.f - shift, np.asarray(out_ott.f), rtol=0, atol=1e-7)
    np.testing.assert_allclose(out.g + shift, np.asarray(out_ott.g), rtol=0, atol=1e-7)


def test_float32_solve_is_close_to_float64(rng):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    out64 = otcal.sinkhorn(otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.1), threshold=1e-9, progress=False)
    geom32 = otcal.PointCloud(x.astype(np.float32), y.astype(np.float32), scale_cost="mean", epsilon=0.1)
    out32 = otcal.sinkhorn(geom32, threshold=1e-5, progress=False)
    assert out32.precision == "float32" and out32.f.dtype == np.float32 and out32.g.dtype == np.float32
    p32, p64 = out32.transport_matrix(), out64.transport_matrix()
    assert p32.dtype == np.float32
    assert np.max(np.abs(p32 - p64)) / np.max(p64) < 1e-3
