"""Momentum, Anderson and the Gaussian initializer against OTT-JAX itself (docs/sinkhorn.md §7-8):
the same options give the same iterations and the same potentials in float64; the Gaussian
initializer's f equals OTT's; OTT's own objects are accepted; bad values are refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import otcal

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
pytest.importorskip("ott")
import jax.numpy as jnp  # noqa: E402
from ott.geometry import pointcloud as ott_pointcloud  # noqa: E402
from ott.initializers.linear import initializers as ott_init  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import acceleration as ott_acc  # noqa: E402
from ott.solvers.linear import sinkhorn as ott_sinkhorn  # noqa: E402

EPSILON = 0.05
THRESHOLD = 1e-8
MAX_ITERATIONS = 5000


def clouds(rng, n=70, m=55, d=3):
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * 0.8 + 0.5
    a = rng.uniform(0.2, 1.0, size=n)
    a[rng.choice(n, 3, replace=False)] = 0.0  # zero weights: -inf potentials
    b = rng.uniform(0.2, 1.0, size=m)
    return x, y, a / a.sum(), b / b.sum()


def ott_solve(x, y, a, b, tau, **solver_kw):
    geom = ott_pointcloud.PointCloud(jnp.asarray(x), jnp.asarray(y), epsilon=EPSILON, scale_cost=1.0)
    prob = linear_problem.LinearProblem(geom, a=jnp.asarray(a), b=jnp.asarray(b), tau_a=tau, tau_b=tau)
    out = ott_sinkhorn.Sinkhorn(threshold=THRESHOLD, max_iterations=MAX_ITERATIONS, **solver_kw)(prob)
    return out


def otcal_solve(x, y, a, b, tau, **kw):
    geom = otcal.PointCloud(x, y, epsilon=EPSILON, scale_cost=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otcal.OtcalWarning)
        return otcal.sinkhorn(geom, a, b, tau_a=tau, tau_b=tau, threshold=THRESHOLD, max_iterations=MAX_ITERATIONS,
                              progress=False, **kw)


def assert_potentials_close(out, ref, what):
    for mine, theirs, name in ((out.f, ref.f, "f"), (out.g, ref.g, "g")):
        mine, theirs = np.asarray(mine), np.asarray(theirs)
        assert np.array_equal(np.isneginf(mine), np.isneginf(theirs)), f"{what}: -inf entries of {name} differ"
        finite = np.isfinite(theirs)
        gap = np.max(np.abs(mine[finite] - theirs[finite]))
        assert gap <= 1e-6 * (1 + np.max(np.abs(theirs[finite]))), f"{what}: {name} differs by {gap:.3g}"


CASES = {
    "fixed momentum": (dict(momentum=otcal.Momentum(value=1.3)), dict(momentum=ott_acc.Momentum(value=1.3))),
    "adaptive momentum": (dict(momentum=otcal.Momentum(start=30)), dict(momentum=ott_acc.Momentum(start=30))),
    "adaptive with threshold": (dict(momentum=otcal.Momentum(start=20, error_threshold=1e-2, value=1.1)),
                                dict(momentum=ott_acc.Momentum(start=20, error_threshold=1e-2, value=1.1))),
    "anderson": (dict(anderson=otcal.AndersonAcceleration(memory=3)),
                 dict(anderson=ott_acc.AndersonAcceleration(memory=3))),
    "anderson refresh": (dict(anderson=otcal.AndersonAcceleration(memory=4, refresh_every=2, ridge_identity=1e-3)),
                         dict(anderson=ott_acc.AndersonAcceleration(memory=4, refresh_every=2, ridge_identity=1e-3))),
    "gaussian": (dict(initializer="gaussian"), dict(initializer=ott_init.GaussianInitializer())),
    "gaussian + momentum": (dict(initializer="gaussian", momentum=otcal.Momentum(start=20)),
                            dict(initializer=ott_init.GaussianInitializer(), momentum=ott_acc.Momentum(start=20))),
}


@pytest.mark.parametrize("tau", [1.0, 0.8])
@pytest.mark.parametrize("case", list(CASES))
def test_acceleration_matches_ott(rng, case, tau):
    x, y, a, b = clouds(rng)
    mine_kw, ott_kw = CASES[case]
    ref = ott_solve(x, y, a, b, tau, **ott_kw)
    out = otcal_solve(x, y, a, b, tau, **mine_kw)
    # Some draws stall short of the threshold from the Gaussian start, in OTT and in otcal alike
    # (seed 3457811571: the error stays at 1.27e-4 for 5000 iterations in both, while the zero
    # start converges in 3660). What must hold is that otcal does what OTT does: the same
    # outcome, the same iteration count when both converge, and the same potentials either way.
    assert bool(ref.converged) == bool(out.converged), f"{case}: converged {out.converged}, OTT {bool(ref.converged)}"
    if out.converged:
        assert abs(out.n_iters - int(ref.n_iters)) <= 10, f"{case}: {out.n_iters} vs OTT {int(ref.n_iters)} iterations"
    assert_potentials_close(out, ref, case)


def test_ott_objects_are_accepted_as_is(rng):
    x, y, a, b = clouds(rng)
    mine = otcal_solve(x, y, a, b, 1.0, momentum=otcal.Momentum(start=20), initializer="gaussian")
    theirs = otcal_solve(x, y, a, b, 1.0, momentum=ott_acc.Momentum(start=20),
                         initializer=ott_init.GaussianInitializer())
    assert mine.n_iters == theirs.n_iters
    np.testing.assert_array_equal(np.asarray(mine.f), np.asarray(theirs.f))
    an = otcal_solve(x, y, a, b, 1.0, anderson=ott_acc.AndersonAcceleration(memory=3))
    an2 = otcal_solve(x, y, a, b, 1.0, anderson=otcal.AndersonAcceleration(memory=3))
    np.testing.assert_array_equal(np.asarray(an.f), np.asarray(an2.f))


def test_gaussian_initializer_equals_otts(rng):
    x, y, a, b = clouds(rng, n=80, m=64, d=4)
    geom = ott_pointcloud.PointCloud(jnp.asarray(x), jnp.asarray(y), epsilon=EPSILON)
    prob = linear_problem.LinearProblem(geom, a=jnp.asarray(a), b=jnp.asarray(b))
    f_ott, g_ott = ott_init.GaussianInitializer()(prob, lse_mode=True)
    f, g = otcal.initial_potentials(otcal.PointCloud(x, y, epsilon=EPSILON, scale_cost=1.0), a, b,
                                    initializer="gaussian")
    f_ott, g_ott = np.asarray(f_ott), np.asarray(g_ott)
    assert np.array_equal(np.isneginf(f), np.isneginf(f_ott))
    finite = np.isfinite(f_ott)
    np.testing.assert_allclose(f[finite], f_ott[finite], rtol=0, atol=1e-10 * (1 + np.abs(f_ott[finite]).max()))
    np.testing.assert_array_equal(g, g_ott)


def test_acceleration_needs_fewer_iterations(rng):
    x = rng.normal(size=(90, 2))
    y = rng.normal(size=(80, 2)) + 0.3
    kw = dict(max_iterations=50_000, progress=False)
    # Momentum at a small epsilon.
    geom = otcal.PointCloud(x, y, epsilon=2e-3, scale_cost="mean")
    plain = otcal.sinkhorn(geom, threshold=1e-6, **kw)
    assert plain.converged and plain.n_iters > 200
    adaptive = otcal.sinkhorn(geom, momentum=otcal.Momentum(start=20), threshold=1e-6, **kw)
    assert adaptive.converged and adaptive.n_iters < plain.n_iters / 2
    # Anderson at a moderate epsilon to a tight threshold (at a tiny one it overshoots, in OTT too).
    geom = otcal.PointCloud(x, y, epsilon=5e-2, scale_cost="mean")
    plain = otcal.sinkhorn(geom, threshold=1e-8, **kw)
    anderson = otcal.sinkhorn(geom, anderson=otcal.AndersonAcceleration(memory=8, ridge_identity=1e-4),
                              threshold=1e-8, **kw)
    assert plain.converged and anderson.converged and anderson.n_iters < plain.n_iters


@pytest.mark.parametrize("kw,needle", [
    (dict(momentum=otcal.Momentum(value=2.0)), "momentum value"),
    (dict(momentum=0.0), "momentum value"),
    (dict(momentum=otcal.Momentum(start=5)), "momentum start"),
    (dict(anderson=otcal.AndersonAcceleration(memory=0)), "anderson memory"),
    (dict(anderson=otcal.AndersonAcceleration(ridge_identity=0.0)), "anderson ridge_identity"),
    (dict(initializer="sorting"), "initializer"),
    (dict(initializer=ott_init.SortingInitializer()), "initializer"),
    (dict(momentum="fast"), "momentum"),
])
def test_bad_values_are_refused(rng, kw, needle):
    x, y, a, b = clouds(rng, n=20, m=15)
    with pytest.raises(otcal.InvalidArgument, match=needle):
        otcal.sinkhorn(otcal.PointCloud(x, y), a, b, progress=False, **kw)


def test_gaussian_refused_for_other_costs(rng):
    x, y, a, b = clouds(rng, n=20, m=15)
    with pytest.raises(otcal.InvalidArgument, match="initializer gaussian"):
        otcal.sinkhorn(otcal.PointCloud(x, y, cost_fn="cosine"), a, b, initializer="gaussian", progress=False)
