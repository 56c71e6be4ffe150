"""Operations on a solution: apply and marginal (OTT-JAX's axis conventions), the dense plan,
batch-size invariance, and reuse of the resident clouds across calls."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import otcal

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
from ott.geometry import geometry as ott_geometry  # noqa: E402
from ott.geometry import pointcloud as ott_pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn as ott_sinkhorn  # noqa: E402

N, M, D, K = 43, 31, 3, 4


@jax.jit
def _ott_apply_and_marginals(cost_matrix, a, b, epsilon, v_rows, v_cols):
    geom = ott_geometry.Geometry(cost_matrix=cost_matrix, epsilon=epsilon)
    out = ott_sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=50_000)(linear_problem.LinearProblem(geom, a, b))
    return (out.apply(v_rows, axis=0), out.apply(v_cols, axis=1), out.apply(v_rows[0], axis=0),
            out.marginal(0), out.marginal(1), out.matrix)


def problem(rng):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D)) + 0.2
    a, b = rng.uniform(0.3, 1.0, N), rng.uniform(0.3, 1.0, M)
    return x, y, a / a.sum(), b / b.sum()


def test_apply_and_marginal_match_ott(rng):
    x, y, a, b = problem(rng)
    eps = 0.05
    out = otcal.sinkhorn(otcal.PointCloud(x, y, scale_cost="mean", epsilon=eps), a=a, b=b, threshold=1e-12,
                         max_iterations=50_000, progress=False)
    c = ott_pointcloud.PointCloud(x, y, scale_cost="mean").cost_matrix
    v_rows, v_cols = rng.normal(size=(K, N)), rng.normal(size=(K, M))  # signed inputs
    ott_push, ott_pull, ott_push1, ott_m0, ott_m1, ott_plan = map(
        np.asarray, _ott_apply_and_marginals(c, a, b, eps, v_rows, v_cols))

    push, pull = out.apply(v_rows, axis=0), out.apply(v_cols, axis=1)
    assert push.shape == (K, M) and pull.shape == (K, N)  # OTT: a batch is [k, n] -> [k, m]
    np.testing.assert_allclose(push, ott_push, rtol=0, atol=1e-9 * np.abs(ott_push).max())
    np.testing.assert_allclose(pull, ott_pull, rtol=0, atol=1e-9 * np.abs(ott_pull).max())
    np.testing.assert_allclose(out.apply(v_rows[0], axis=0), ott_push1, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(out.marginal(0), ott_m0, rtol=1e-8)
    np.testing.assert_allclose(out.marginal(1), ott_m1, rtol=1e-8)
    # And against otcal's own dense plan, to rounding.
    plan = out.transport_matrix()
    np.testing.assert_allclose(push, (plan.T @ v_rows.T).T, rtol=0, atol=1e-13 * np.abs(push).max() + 1e-16)
    np.testing.assert_allclose(pull, (plan @ v_cols.T).T, rtol=0, atol=1e-13 * np.abs(pull).max() + 1e-16)
    np.testing.assert_allclose(out.marginal(0), plan.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out.marginal(1), plan.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(out.marginal(1), a, rtol=1e-9)  # converged: P 1 = a
    np.testing.assert_allclose(out.marginal(0), b, rtol=1e-9)
    assert out.transport_mass == pytest.approx(plan.sum(), rel=1e-12)
    assert np.max(np.abs(plan - ott_plan) / ott_plan) < 1e-6


def test_results_do_not_depend_on_batch_size(rng):
    x, y, a, b = problem(rng)
    v = rng.normal(size=(K, N))
    runs = []
    for batch_size in (None, 1, 7, N, N + 5):
        geom = otcal.PointCloud(x, y, cost_fn="pnorm:1.5", scale_cost="median", epsilon=0.05, batch_size=batch_size)
        with pytest.warns(otcal.OtcalWarning, match="clamped") if batch_size == N + 5 else _no_warning():
            out = otcal.sinkhorn(geom, a=a, b=b, tau_b=0.9, threshold=1e-9, progress=False)
        runs.append((out.f, out.g, out.errors, out.reg_ot_cost, out.apply(v, axis=0), out.marginal(1),
                     out.sparsify("mass", value=0.9).toarray(), out.sparsify("min_row", batch_size=3).toarray(),
                     out.transport_matrix(batch_size=5)))
    for other in runs[1:]:
        for mine, theirs in zip(runs[0], other):
            np.testing.assert_array_equal(mine, theirs)  # bitwise


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_resident_clouds_are_reused_across_calls(rng):
    x, y, a, b = problem(rng)
    ctx = otcal.Context(device="cpu")
    geom = otcal.PointCloud(x, y, cost_fn="cosine", scale_cost="mean", epsilon=0.1)
    out = otcal.sinkhorn(geom, context=ctx, threshold=1e-6, progress=False)
    assert ctx.cloud_uploads == 2  # x and y, once
    out2 = otcal.sinkhorn(geom, a=a, b=b, context=ctx, threshold=1e-6, progress=False)  # other weights
    out3 = otcal.sinkhorn(geom, a=a, b=b, tau_a=0.5, context=ctx, threshold=1e-6, progress=False)
    for o in (out, out2, out3):
        o.apply(rng.normal(size=N), axis=0)
        o.marginal(0)
        o.sparsify("percentile", value=50)
        o.transport_matrix()
    otcal.sparsify(geom, None, out2.f, out2.g, epsilon=out2.epsilon, mode="min_row", context=ctx)
    assert ctx.cloud_uploads == 2
    # The weights of each solve are its own: a later solve with other weights does not change them.
    np.testing.assert_allclose(out.marginal(1), np.full(N, 1.0 / N), rtol=1e-5)
    np.testing.assert_allclose(out2.marginal(1), a, rtol=1e-5)
    np.testing.assert_array_equal(out.a, np.full(N, 1.0 / N))
    np.testing.assert_array_equal(out2.a, a)
    # A second geometry on the same arrays uploads its own copy.
    otcal.sinkhorn(otcal.PointCloud(x, None, epsilon=0.5), context=ctx, progress=False)
    assert ctx.cloud_uploads == 3  # y = x: one cloud


def test_same_cloud_and_weights_of_other_dtypes(rng):
    x = rng.normal(size=(N, D))
    a = rng.uniform(0.5, 1.0, N).astype(np.float32)
    out = otcal.sinkhorn(otcal.PointCloud(x.tolist(), epsilon=0.2, scale_cost="mean"), a=list(a), b=a,
                         threshold=1e-9, max_iterations=20_000, progress=False)
    assert out.shape == (N, N) and out.f.dtype == np.float64
    np.testing.assert_allclose(out.marginal(1), a.astype(np.float64), rtol=1e-6)


def test_sinkhorn_output_fields(rng):
    x, y, a, b = problem(rng)
    geom = otcal.PointCloud(x, y, scale_cost="max_cost", epsilon=0.1)
    out = otcal.sinkhorn(geom, a=a, b=b, threshold=1e-7, inner_iterations=5, progress=False)
    assert out.converged and not out.diverged
    assert out.n_iters % 5 == 0 and out.n_iters == 5 * int(np.sum(out.errors >= 0))
    assert out.errors.shape == (out.n_iters // 5,) and out.errors[-1] < 1e-7
    assert out.geom is geom and out.shape == (N, M) and out.precision == "float64"
    assert out.potentials[0] is out.f and out.inner_iterations == 5 and out.threshold == 1e-7
    mem = out.memory
    assert 0 < mem["peak_bytes"] <= mem["planned_peak_bytes"] <= mem["budget_bytes"]
    assert mem["resident_bytes"] > 0 and mem["tile_rows"] == out.batch_size
    assert "SinkhornOutput" in repr(out) and "PointCloud" in repr(geom)
    assert np.allclose(out.matrix, out.transport_matrix())


def test_non_convergence_is_a_warning(rng):
    x, y, _, _ = problem(rng)
    with pytest.warns(otcal.OtcalWarning, match="max_iterations"):
        out = otcal.sinkhorn(otcal.PointCloud(x, y, epsilon=1e-3, scale_cost="mean"), max_iterations=20,
                             progress=False)
    assert not out.converged


def test_from_anndata(rng):
    anndata = pytest.importorskip("anndata")
    import scipy.sparse

    early = anndata.AnnData(X=rng.normal(size=(N, 6)), obsm={"X_pca": rng.normal(size=(N, D))})
    late = anndata.AnnData(X=rng.normal(size=(M, 6)), obsm={"X_pca": rng.normal(size=(M, D))})
    early.obs_names = [f"early_{i}" for i in range(N)]
    late.obs_names = [f"late_{j}" for j in range(M)]
    geom = otcal.PointCloud.from_anndata(early, late, obsm_key="X_pca", scale_cost="mean", epsilon=0.1)
    assert geom.shape == (N, M)
    assert list(geom.obs_names_x) == list(early.obs_names) and list(geom.obs_names_y) == list(late.obs_names)
    np.testing.assert_array_equal(geom.x, early.obsm["X_pca"])
    out = otcal.sinkhorn(geom, progress=False)
    reference = otcal.sinkhorn(otcal.PointCloud(early.obsm["X_pca"], late.obsm["X_pca"], scale_cost="mean",
                                                epsilon=0.1), progress=False)
    np.testing.assert_array_equal(out.f, reference.f)

    on_x = otcal.PointCloud.from_anndata(early)  # .X, against itself
    assert on_x.shape == (N, N) and list(on_x.obs_names_y) == list(early.obs_names)
    counts = anndata.AnnData(X=scipy.sparse.random(N, 6, density=0.3, format="csr", random_state=rng))
    with pytest.raises(otcal.InvalidArgument, match="adata_x.*sparse.*obsm_key='X_pca'"):
        otcal.PointCloud.from_anndata(counts)
    with pytest.raises(otcal.InvalidArgument, match="obsm_key.*X_umap"):
        otcal.PointCloud.from_anndata(early, late, obsm_key="X_umap")


def test_ott_cost_objects_are_recognised():
    from ott.geometry import costs

    x = np.arange(12.0).reshape(4, 3)
    for cost, name in [(costs.SqEuclidean(), "sqeuclidean"), (costs.Euclidean(), "euclidean"),
                       (costs.Cosine(), "cosine"), (costs.PNormP(1.5), "pnorm:1.5"),
                       (costs.SqPNorm(3.0), "sq_pnorm:3"), ("sq_euclidean", "sqeuclidean"),
                       ("pnorm_2.5", "pnorm:2.5")]:
        assert otcal.PointCloud(x, cost_fn=cost).cost_fn == name
    with pytest.raises(otcal.InvalidArgument, match="cost_fn.*ridge"):
        otcal.PointCloud(x, cost_fn=costs.Cosine(ridge=1e-3))
    with pytest.raises(otcal.InvalidArgument, match="cost_fn"):
        otcal.PointCloud(x, cost_fn=costs.NegDotProduct())
