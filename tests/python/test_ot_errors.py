"""Bad input from Python: each case raises the documented exception class, with a message that
starts by naming the offending argument."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import otcal

N, M, D = 24, 18, 3


@pytest.fixture
def data(rng):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.5)
    out = otcal.sinkhorn(geom, progress=False)
    return x, y, geom, out


def with_nan(a, rng):
    a = a.copy()
    a[rng.integers(a.shape[0]), rng.integers(a.shape[1])] = np.nan
    return a


def negative_entry(n, rng):
    w = rng.uniform(0.5, 1.0, n)
    w[rng.integers(n)] = -0.25
    return w


CASES = {
    # name: (call(x, y, geom, out, rng), exception class, message pattern naming the argument)
    "nan_in_x": (lambda x, y, g, o, r: otcal.sinkhorn(otcal.PointCloud(with_nan(x, r), y)),
                 otcal.InvalidArgument, r"^x holds nan at row \d+, column \d+"),
    "inf_in_y": (lambda x, y, g, o, r: otcal.sinkhorn(otcal.PointCloud(x, y * np.inf)),
                 otcal.InvalidArgument, r"^y holds -?inf"),
    "x_3d": (lambda x, y, g, o, r: otcal.PointCloud(x.reshape(N, D, 1)),
             otcal.InvalidArgument, r"^x: expected a 2-D array"),
    "x_1d": (lambda x, y, g, o, r: otcal.PointCloud(x[:, 0]),
             otcal.InvalidArgument, r"^x: expected a 2-D array.*reshape"),
    "y_other_dimension": (lambda x, y, g, o, r: otcal.PointCloud(x, y[:, :2]),
                          otcal.InvalidArgument, r"^y: has 2 columns but x has 3"),
    "x_strings": (lambda x, y, g, o, r: otcal.PointCloud([["a", "b"], ["c", "d"]]),
                  otcal.InvalidArgument, r"^x: expected numbers"),
    "x_objects": (lambda x, y, g, o, r: otcal.PointCloud(np.array([[1.0, None], [2.0, 3.0]], dtype=object)),
                  otcal.InvalidArgument, r"^x: expected an array of numbers, got objects"),
    "x_sparse": (lambda x, y, g, o, r: otcal.PointCloud(scipy.sparse.csr_matrix(x)),
                 otcal.InvalidArgument, r"^x: expected a dense array, got a sparse matrix"),
    "a_wrong_length": (lambda x, y, g, o, r: otcal.sinkhorn(g, a=np.full(N - 1, 1.0 / (N - 1))),
                       otcal.InvalidArgument, rf"^a: expected length {N}, got {N - 1}"),
    "a_negative": (lambda x, y, g, o, r: otcal.sinkhorn(g, a=negative_entry(N, r)),
                   otcal.InvalidArgument, r"^a\[\d+\] = -0.25: weights must be finite and >= 0"),
    "a_nan": (lambda x, y, g, o, r: otcal.sinkhorn(g, a=with_nan(np.ones((N, 1)), r)[:, 0]),
              otcal.InvalidArgument, r"^a\[\d+\] = nan"),
    "b_zero_mass": (lambda x, y, g, o, r: otcal.sinkhorn(g, b=np.zeros(M)),
                    otcal.InvalidArgument, r"^b sums to 0"),
    "unknown_cost": (lambda x, y, g, o, r: otcal.PointCloud(x, cost_fn="manhattan"),
                     otcal.InvalidArgument, r"^cost_fn: cost 'manhattan' is not one of"),
    "bad_pnorm_exponent": (lambda x, y, g, o, r: otcal.PointCloud(x, cost_fn="pnorm:0.5"),
                           otcal.InvalidArgument, r"^cost_fn: .*p must be a finite number >= 1"),
    "unknown_scale": (lambda x, y, g, o, r: otcal.PointCloud(x, scale_cost="std"),
                      otcal.InvalidArgument, r"^scale_cost: 'std' is not a number"),
    "negative_scale": (lambda x, y, g, o, r: otcal.PointCloud(x, scale_cost=-2.0),
                       otcal.InvalidArgument, r"^scale_cost: .*> 0"),
    "max_norm_needs_sqeuclidean": (lambda x, y, g, o, r: otcal.PointCloud(x, cost_fn="cosine", scale_cost="max_norm"),
                                   otcal.InvalidArgument, r"^scale_cost: 'max_norm' is defined for the sqeuclidean"),
    "negative_epsilon": (lambda x, y, g, o, r: otcal.PointCloud(x, epsilon=-0.1),
                         otcal.InvalidArgument, r"^epsilon: -0.1 must be a finite number > 0"),
    "bad_relative_epsilon": (lambda x, y, g, o, r: otcal.PointCloud(x, relative_epsilon="max"),
                             otcal.InvalidArgument, r"^relative_epsilon: expected None, 'mean' or 'std'"),
    "zero_batch_size": (lambda x, y, g, o, r: otcal.PointCloud(x, batch_size=0),
                        otcal.InvalidArgument, r"^batch_size: must be >= 1"),
    "tau_a_above_one": (lambda x, y, g, o, r: otcal.sinkhorn(g, tau_a=1.5),
                        otcal.InvalidArgument, r"^tau_a = 1.5 must be in \(0, 1\]"),
    "tau_b_zero": (lambda x, y, g, o, r: otcal.sinkhorn(g, tau_b=0.0),
                   otcal.InvalidArgument, r"^tau_b = 0 must be in \(0, 1\]"),
    "float_max_iterations": (lambda x, y, g, o, r: otcal.sinkhorn(g, max_iterations=1e3),
                             otcal.InvalidArgument, r"^max_iterations: expected an integer"),
    "negative_threshold": (lambda x, y, g, o, r: otcal.sinkhorn(g, threshold=-1.0),
                           otcal.InvalidArgument, r"^threshold = -1 must be a finite number >= 0"),
    "bad_on_divergence": (lambda x, y, g, o, r: otcal.sinkhorn(g, on_divergence="ignore"),
                          otcal.InvalidArgument, r"^on_divergence: expected 'error' or 'return'"),
    "bad_precision": (lambda x, y, g, o, r: otcal.sinkhorn(g, precision="float16"),
                      otcal.InvalidArgument, r"^precision: expected None, 'float32' or 'float64'"),
    "memory_budget_parsecs": (lambda x, y, g, o, r: otcal.sinkhorn(g, memory_budget="12 parsecs"),
                              otcal.InvalidArgument, r"^memory_budget: '12 parsecs' has an unknown unit 'parsecs'"),
    "memory_budget_too_small": (lambda x, y, g, o, r: otcal.sinkhorn(g, memory_budget=512),
                                otcal.BudgetTooSmall, r"^memory_budget: sinkhorn needs at least \d+ bytes"),
    "unknown_device": (lambda x, y, g, o, r: otcal.sinkhorn(g, device="tpu"),
                       otcal.InvalidArgument, r"^device 'tpu' is not one of"),
    "geom_not_a_pointcloud": (lambda x, y, g, o, r: otcal.sinkhorn(x),
                              otcal.InvalidArgument, r"^geom: expected an otcal.PointCloud, got ndarray"),
    "unknown_mode": (lambda x, y, g, o, r: o.sparsify(mode="topk", value=3),
                     otcal.InvalidArgument, r"^mode: unknown sparsify mode 'topk'"),
    "mass_value_above_one": (lambda x, y, g, o, r: o.sparsify(mode="mass", value=1.5),
                             otcal.InvalidArgument, r"^If mode='mass', value must be in \(0, 1\]"),
    "threshold_without_value": (lambda x, y, g, o, r: o.sparsify(mode="threshold"),
                                otcal.InvalidArgument, r"^If mode='threshold', value cannot be None"),
    "max_k_without_mass": (lambda x, y, g, o, r: o.sparsify(mode="min_row", max_k=3),
                           otcal.InvalidArgument, r"^max_k is only supported with mode='mass'"),
    "apply_bad_axis": (lambda x, y, g, o, r: o.apply(np.ones(N), axis=2),
                       otcal.InvalidArgument, r"^axis: expected 0 or 1, got 2"),
    "apply_wrong_length": (lambda x, y, g, o, r: o.apply(np.ones((2, M)), axis=0),
                           otcal.InvalidArgument, rf"^inputs: expected shape \[k, {N}\] for axis=0"),
    "foreign_f_wrong_length": (lambda x, y, g, o, r: otcal.sparsify(x, y, o.f[:-1], o.g, epsilon=0.5, value=0.0),
                               otcal.InvalidArgument, rf"^f: expected length {N}, got {N - 1}"),
    "foreign_g_is_2d": (lambda x, y, g, o, r: otcal.sparsify(x, y, o.f, o.g[:, None], epsilon=0.5, value=0.0),
                        otcal.InvalidArgument, r"^g: expected a 1-D array"),
    "foreign_negative_epsilon": (lambda x, y, g, o, r: otcal.sparsify(x, y, o.f, o.g, epsilon=-1.0, value=0.0),
                                 otcal.InvalidArgument, r"^epsilon: -1.0 must be a finite number > 0"),
    "foreign_epsilon_missing": (lambda x, y, g, o, r: otcal.sparsify(x, y, o.f, o.g, None, value=0.0),
                                otcal.InvalidArgument, r"^epsilon: required"),
    "foreign_unknown_mode": (lambda x, y, g, o, r: otcal.sparsify(x, y, o.f, o.g, 0.5, mode="top"),
                             otcal.InvalidArgument, r"^mode: unknown sparsify mode 'top'"),
    "foreign_y_with_pointcloud": (lambda x, y, g, o, r: otcal.sparsify(g, y, o.f, o.g, 0.5, value=0.0),
                                  otcal.InvalidArgument, r"^y: must be None when x is an otcal.PointCloud"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named(case, data, rng):
    call, exception, pattern = CASES[case]
    x, y, geom, out = data
    with pytest.raises(exception, match=pattern):
        call(x, y, geom, out, rng)


def test_invalid_argument_is_a_value_error(data):
    x, _, _, _ = data
    with pytest.raises(ValueError):
        otcal.PointCloud(x, cost_fn="nope")


def test_failed_calls_leave_the_geometry_usable(data, rng):
    x, y, geom, out = data
    with pytest.raises(otcal.InvalidArgument):
        otcal.sinkhorn(geom, a=negative_entry(N, rng))
    again = otcal.sinkhorn(geom, progress=False)
    np.testing.assert_array_equal(again.f, out.f)
