"""Bad input from Python: the documented exception class and a message naming the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import otcal


@pytest.fixture
def problem(rng):
    n, k = 80, 3
    X = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.gamma(2.0, 5.0, n)])
    d = rng.uniform(5, 15, n)
    targets = X.T @ (d * rng.uniform(0.9, 1.1, n))
    assert X.shape == (n, k)
    return X, d, targets


def calibration(problem, **kw):
    X, d, t = problem
    args = dict(weights=d, targets=t, target_names=["a", "b", "c"], estimate_matrix=X, epochs=3, progress=False)
    args.update(kw)
    return otcal.Calibration(**args)


CASES = {
    # name: (call, exception, message fragment)
    "nan_targets": (lambda p: otcal.calibrate(p[0], p[1], np.r_[p[2][:-1], np.nan]), otcal.InvalidArgument,
                    "targets: contains NaN"),
    "inf_targets": (lambda p: calibration(p, targets=np.r_[np.inf, p[2][1:]]), otcal.InvalidArgument,
                    "targets: contains infinite"),
    "negative_weights": (lambda p: otcal.calibrate(p[0], -p[1], p[2]), otcal.InvalidArgument,
                         "weights: must be non-negative"),
    "sparse_negative_weights": (lambda p: calibration(p, weights=sp.csr_matrix(np.r_[p[1][:-1], -1.0])),
                                otcal.InvalidArgument, "weights: must be non-negative"),
    "sparse_matrix_as_weights": (lambda p: otcal.calibrate(p[0], sp.csr_matrix(np.outer(p[1], [1.0, -1.0])), p[2]),
                                 otcal.InvalidArgument, "weights: expected a vector"),
    "weights_length": (lambda p: otcal.calibrate(p[0], p[1][:-1], p[2]), otcal.InvalidArgument,
                       "weights: expected one weight per record (80), got 79"),
    "targets_length": (lambda p: calibration(p, targets=p[2][:2]), otcal.InvalidArgument,
                       "targets: expected one target per column"),
    "x_3d": (lambda p: otcal.calibrate(p[0][:, :, None], p[1], p[2]), otcal.InvalidArgument,
             "X: expected a 2-D matrix (records x targets), got 3 dimensions"),
    "matrix_3d": (lambda p: calibration(p, estimate_matrix=p[0][None]), otcal.InvalidArgument, "estimate_matrix:"),
    "x_with_nan": (lambda p: otcal.calibrate(np.where(p[0] > 20, np.nan, p[0]), p[1], p[2]), otcal.InvalidArgument,
                   "X: contains NaN"),
    "weights_list_of_strings": (lambda p: otcal.calibrate(p[0], ["1.0"] * len(p[1]), p[2]), otcal.InvalidArgument,
                                "weights: expected numbers"),
    "unknown_method": (lambda p: otcal.calibrate(p[0], p[1], p[2], method="ipf"), otcal.InvalidArgument,
                       "method: expected one of 'linear', 'raking', 'logit', 'truncated', got 'ipf'"),
    "logit_without_bounds": (lambda p: otcal.calibrate(p[0], p[1], p[2], method="logit"), otcal.InvalidArgument,
                             "bounds: method='logit' needs finite bounds"),
    "logit_infinite_bound": (lambda p: otcal.calibrate(p[0], p[1], p[2], method="logit", bounds=(0.5, np.inf)),
                             otcal.InvalidArgument, "bounds: method='logit' needs finite bounds"),
    "truncated_without_bounds": (lambda p: otcal.calibrate(p[0], p[1], p[2], method="truncated"),
                                 otcal.InvalidArgument, "bounds: method='truncated'"),
    "bounds_reversed": (lambda p: otcal.calibrate(p[0], p[1], p[2], method="raking", bounds=(2.0, 0.5)),
                        otcal.InvalidArgument, "bounds: lower (2) is above upper (0.5)"),
    "bounds_exclude_one": (lambda p: otcal.calibrate(p[0], p[1], p[2], bounds=(1.2, 3.0)), otcal.InvalidArgument,
                           "lower <= 1 <= upper"),
    "trim_reversed": (lambda p: otcal.calibrate(p[0], p[1], p[2], trim=(3.0, 0.5)), otcal.InvalidArgument,
                      "trim: lower (3) is above upper (0.5)"),
    "max_iter_zero": (lambda p: otcal.calibrate(p[0], p[1], p[2], max_iter=0), otcal.InvalidArgument,
                      "max_iter: must be >= 1"),
    "variance_length": (lambda p: otcal.calibrate(p[0], p[1], p[2], variance=np.ones(5)), otcal.InvalidArgument,
                        "variance: expected one value per record (80) or one per target (3), got 5"),
    "names_length": (lambda p: otcal.calibrate(p[0], p[1], p[2], names=["a"]), otcal.InvalidArgument,
                     "names: expected 3 names"),
    "excluded_unknown": (lambda p: calibration(p, excluded_targets=["a", "nope"]), otcal.InvalidArgument,
                         "excluded_targets: 'nope' not among the target names"),
    "excluded_all": (lambda p: calibration(p, excluded_targets=["a", "b", "c"]), otcal.InvalidArgument,
                     "excluded_targets: every target is excluded"),
    "dtype_int": (lambda p: calibration(p, dtype=np.int64), otcal.InvalidArgument,
                  "dtype: expected numpy.float32 or numpy.float64"),
    "dtype_nonsense": (lambda p: calibration(p, dtype="float128x"), otcal.InvalidArgument, "dtype:"),
    "dropout_rate": (lambda p: calibration(p, dropout_rate=1.5), otcal.InvalidArgument,
                     "dropout_rate: must lie in [0, 1]"),
    "epochs_negative": (lambda p: calibration(p, epochs=-1), otcal.InvalidArgument, "epochs: must be >= 0"),
    "batch_size_zero": (lambda p: calibration(p, batch_size=0), otcal.InvalidArgument, "batch_size: must be >= 1"),
    "csv_path": (lambda p: calibration(p, csv_path="log.txt"), otcal.InvalidArgument, "csv_path: must be a path ending"),
    "estimate_function_only": (lambda p: calibration(p, estimate_matrix=None, estimate_function=lambda w: w),
                               otcal.InvalidArgument, "estimate_function: otcal calibrates with an explicit"),
    "no_matrix": (lambda p: calibration(p, estimate_matrix=None), otcal.InvalidArgument, "estimate_matrix:"),
    "normalization_length": (lambda p: calibration(p, normalization_factor=np.ones(7)).calibrate(),
                             otcal.InvalidArgument, "normalization_factor: expected one value per calibrated target"),
    "weights_shape_2d": (lambda p: calibration(p, weights=np.ones((80, 2))), otcal.InvalidArgument,
                         "weights: expected a 1-D array"),
    "rake_without_margins": (lambda p: otcal.rake(otcal.build_constraints({"x": p[0][:, 2]}, continuous={"x": 1.0})),
                             otcal.InvalidArgument, "data: the constraint system has no marginal targets"),
    "rake_table_without_margins": (lambda p: otcal.rake({"x": p[0][:, 1]}), otcal.InvalidArgument, "marginal:"),
    "build_not_a_table": (lambda p: otcal.build_constraints(p[0], marginal={"x": {1: 1.0}}), otcal.InvalidArgument,
                          "df: expected a pandas DataFrame or a dict of columns"),
    "build_missing_column": (lambda p: otcal.build_constraints({"x": p[0][:, 1]}, marginal={"y": {0: 1.0}}),
                             otcal.InvalidArgument, "Margin variable 'y' not in data columns"),
    "budget_too_small": (lambda p: otcal.calibrate(p[0], p[1], p[2], method="raking", memory_budget=256),
                         otcal.BudgetTooSmall, "budget"),
    "memory_budget_text": (lambda p: otcal.calibrate(p[0], p[1], p[2], memory_budget="lots"), otcal.InvalidArgument,
                           "memory_budget: 'lots' is not a size"),
    "progress_type": (lambda p: otcal.calibrate(p[0], p[1], p[2], progress="yes"), otcal.InvalidArgument,
                      "progress: expected None, True, False or a callable"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(problem, case):
    call, exception, fragment = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otcal.OtcalWarning)
        with pytest.raises(exception) as info:
            call(problem)
    assert fragment in str(info.value)
    if exception is otcal.InvalidArgument:
        assert isinstance(info.value, ValueError)


def test_budget_too_small_says_what_suffices(problem):
    X, d, t = problem
    with pytest.raises(otcal.BudgetTooSmall) as info:
        otcal.calibrate(X, d, t, method="raking", memory_budget=256)
    assert isinstance(info.value, MemoryError) and info.value.required_bytes > 256
    result = otcal.calibrate(X, d, t, method="raking", memory_budget=info.value.required_bytes, progress=False)
    assert result.converged


def test_inconsistent_targets_fail_unless_forced(problem):
    X, d, t = problem
    bad = t.copy()
    bad[1] = 1.5 * t[0]  # a subgroup larger than the whole population: no positive solution
    with pytest.raises(otcal.CalibrationFailed, match="Calibration failed") as info:
        otcal.calibrate(X, d, bad, method="raking", max_iter=8, progress=False)
    assert isinstance(info.value, RuntimeError)
    with pytest.warns(otcal.OtcalWarning, match="Calibration failed"):
        result = otcal.calibrate(X, d, bad, method="raking", max_iter=8, force=True, progress=False)
    assert not result.converged and result.max_ratio > 1e-7 and result.worst_targets
