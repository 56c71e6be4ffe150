"""otcal.build_constraints against a naive dense construction (microplex's stacked rows)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import otcal


def random_table(rng, n):
    regions = np.array(["north", "south", "east", "west", "centre"])
    return pd.DataFrame(
        {
            "region": rng.choice(regions, n),                         # strings
            "age": rng.integers(0, 4, n),                             # integers
            "size": rng.choice([0.5, 1.0, 2.5], n),                    # float categories
            "owner": rng.random(n) < 0.4,                              # booleans
            "tenure": pd.Categorical(rng.choice(["own", "rent"], n)),  # pandas categorical
            "income": rng.gamma(2.0, 10.0, n) * (rng.random(n) < 0.7),
            "hours": rng.integers(0, 50, n).astype(float),
            "weight": rng.uniform(1, 9, n),
        }
    )


def dense_reference(df, marginal, continuous, linear, total):
    """microplex's dense build: one stacked row per target, matching categories by value."""
    rows, targets, names = [], [], []
    for column, categories in marginal.items():
        values = df[column].to_numpy()
        for category, target in categories.items():
            if isinstance(category, str) and values.dtype.kind in "fiub":
                match = values == float(category)
            else:
                match = values == category
            rows.append(match.astype(float))
            targets.append(target)
            names.append(f"{column}={category}")
    for column, target in continuous.items():
        rows.append(df[column].to_numpy(dtype=float))
        targets.append(target)
        names.append(column)
    for c in linear:
        rows.append(np.asarray(c.coefficients, dtype=float))
        targets.append(c.target)
        names.append(c.name)
    if total is not None:
        rows.append(np.ones(len(df)))
        targets.append(total)
        names.append("total")
    return np.vstack(rows), np.array(targets, dtype=float), names


def spec(rng, df):
    t = lambda: float(rng.uniform(100, 1000))  # noqa: E731
    marginal = {
        "region": {r: t() for r in rng.permutation(["north", "south", "east", "west", "centre"])},
        "age": {0: t(), "1": t(), 2.0: t(), np.int64(3): t()},  # numeric keys match by value
        "size": {0.5: t(), 1.0: t(), "2.5": t()},
        "owner": {True: t(), False: t()},
        "tenure": {"own": t(), "rent": t()},
    }
    continuous = {"income": t(), "hours": t()}
    coef = rng.normal(size=len(df)) * (rng.random(len(df)) < 0.3)
    linear = [otcal.LinearConstraint("adult_income", coef, t()), ("zeros_and_ones", (coef > 0).astype(float), t())]
    return marginal, continuous, linear


def test_matches_dense_build(rng):
    n = int(rng.integers(150, 400))
    df = random_table(rng, n)
    marginal, continuous, linear = spec(rng, df)
    total = float(rng.uniform(1000, 5000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otcal.OtcalWarning)
        system = otcal.build_constraints(df, marginal=marginal, continuous=continuous, linear=linear, total=total)
    A, targets, names = system
    linear_objects = [c if isinstance(c, otcal.LinearConstraint) else otcal.LinearConstraint(*c) for c in linear]
    dense, ref_targets, ref_names = dense_reference(df, marginal, continuous, linear_objects, total)
    assert isinstance(A, sp.csr_array)
    assert A.shape == dense.shape
    np.testing.assert_array_equal(A.toarray(), dense)
    np.testing.assert_array_equal(targets, ref_targets)
    assert names == ref_names
    # O(nnz): only the non-zeros are stored, indices ascending within each row, 32-bit indices
    assert A.nnz == np.count_nonzero(dense)
    assert A.indices.dtype == np.int32
    assert all(np.all(np.diff(A.indices[A.indptr[r]:A.indptr[r + 1]]) > 0) for r in range(A.shape[0]))
    assert system.n_categorical == sum(len(c) for c in marginal.values())
    assert system.margin_offsets == list(np.cumsum([0] + [len(c) for c in marginal.values()]))
    np.testing.assert_array_equal(system.design_weights, df["weight"].to_numpy())
    np.testing.assert_array_equal(system.X.toarray(), dense.T)


def test_dict_of_columns_and_lists_of_strings(rng):
    n = 60
    sex = list(rng.choice(["f", "m"], n))
    age = rng.integers(18, 21, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otcal.OtcalWarning)
        system = otcal.build_constraints({"sex": sex, "age": list(age)},
                                         marginal={"sex": {"f": 30, "m": 30}, "age": {18: 20, 19: 20, 20: 20}})
    dense = np.vstack([np.array(sex) == "f", np.array(sex) == "m", age == 18, age == 19, age == 20]).astype(float)
    np.testing.assert_array_equal(system.A.toarray(), dense)
    np.testing.assert_array_equal(system.design_weights, np.ones(n))  # no weight column: ones


def test_empty_category_row_and_warnings(rng):
    df = pd.DataFrame({"g": rng.choice(["a", "b"], 50), "weight": np.full(50, 2.0)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        system = otcal.build_constraints(df, marginal={"g": {"a": 40.0, "b": 60.0, "c": 0.0}})
    messages = [str(w.message) for w in caught if issubclass(w.category, otcal.OtcalWarning)]
    assert any("zero support" in m and "g=c" in m for m in messages)
    assert any("zero estimate sum" in m for m in messages)
    assert system.A.shape == (3, 50) and system.A.indptr[3] - system.A.indptr[2] == 0
    assert any("zero support" in w for w in system.warnings)


def test_untargeted_and_missing_categories_are_refused(rng):
    df = pd.DataFrame({"g": ["a", "b", None, "c"], "x": [1.0, 2.0, 3.0, np.nan]})
    with pytest.raises(otcal.InvalidArgument, match=r"Data contains categories not in targets for 'g': \{c, nan\}"):
        otcal.build_constraints(df, marginal={"g": {"a": 1, "b": 1}})
    with pytest.raises(otcal.InvalidArgument, match="Margin variable 'zzz' not in data columns"):
        otcal.build_constraints(df, marginal={"zzz": {"a": 1}})
    with pytest.raises(otcal.InvalidArgument, match="Continuous variable 'x' has a non-finite value"):
        otcal.build_constraints(df, continuous={"x": 3.0})
    with pytest.raises(otcal.InvalidArgument, match="Continuous variable 'g' is not numeric"):
        otcal.build_constraints(df, continuous={"g": 3.0})
    with pytest.raises(otcal.InvalidArgument, match="LinearConstraint 'short' has 2 coefficients"):
        otcal.build_constraints(df, linear=[otcal.LinearConstraint("short", [1.0, 2.0], 1.0)])
    with pytest.raises(otcal.InvalidArgument, match="Target 'g=a' is not finite"):
        otcal.build_constraints(df.dropna(), marginal={"g": {"a": np.nan, "b": 1}})


def test_build_then_calibrate_equals_matrix_calibration(rng):
    n = 300
    df = random_table(rng, n)
    g_true = rng.uniform(0.8, 1.25, n)
    w = df["weight"].to_numpy() * g_true
    marginal = {"region": df.groupby("region")["weight"].sum().to_dict(),
                "age": {int(a): float(w[df["age"].to_numpy() == a].sum()) for a in range(4)}}
    marginal["region"] = {r: float(w[df["region"].to_numpy() == r].sum()) for r in marginal["region"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", otcal.OtcalWarning)
        system = otcal.build_constraints(df, marginal=marginal, continuous={"income": float(df["income"] @ w)})
    a = otcal.calibrate(system, method="raking", progress=False)
    b = otcal.calibrate(system.X, df["weight"].to_numpy(), system.targets, method="raking", names=system.names,
                        progress=False)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_allclose(system.A @ a.weights, system.targets, rtol=1e-7)
    assert list(a.report.index) == system.names


def test_reports_without_pandas(rng, monkeypatch):
    import otcal._calibration_results as results

    monkeypatch.setattr(results, "pandas_or_none", lambda: None)
    X = np.column_stack([np.ones(40), rng.integers(0, 2, 40)])
    d = rng.uniform(1, 3, 40)
    t = X.T @ (d * rng.uniform(0.9, 1.1, 40))
    weights, report = otcal.calibrate(X, d, t, names=["total", "flag"], progress=False)
    assert isinstance(report, dict) and report["name"] == ["total", "flag"]
    np.testing.assert_allclose(report["estimate"], t, rtol=1e-9)
    cal = otcal.Calibration(weights=d, targets=t, target_names=["total", "flag"], estimate_matrix=X, epochs=3,
                            progress=False)
    log = cal.calibrate()
    assert isinstance(log, dict) and len(log["epoch"]) == 3 * 2
    assert list(cal.summary()["Metric"]) == ["total", "flag"]
