"""otcal.calibrate and otcal.rake against R survey's calibrate() and rake().

The reference values were computed by R (fixtures/make_survey_reference.R; the JSON records the
R and survey versions and the date) and are stored with 17 significant digits. The documented
exactness target is 1e-9 relative on the g-weights (docs/calibration.md §4.7).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import otcal

FIXTURE = Path(__file__).parent / "fixtures" / "survey_reference.json"
REFERENCE = json.loads(FIXTURE.read_text())
TOLERANCE = 1e-9


def numbers(values) -> np.ndarray:
    return np.array([float(x) for x in values])  # "Infinity" / "-Infinity" for R's Inf


def max_rel(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("case", REFERENCE["calibrate"], ids=[c["name"] for c in REFERENCE["calibrate"]])
@pytest.mark.parametrize("layout", ["dense", "sparse", "dataframe"])
def test_calibrate_matches_r(case, layout):
    X = np.array(REFERENCE["model_matrix"])
    names = REFERENCE["columns"]
    if layout == "sparse":
        X = sp.csr_array(X)
    elif layout == "dataframe":
        X = pd.DataFrame(X, columns=names)
        names = None  # taken from the columns
    d = numbers(REFERENCE["design_weights"]) / float(case.get("design_divisor", 1))
    population = numbers(REFERENCE["population"])
    lower, upper = numbers(case["bounds"])
    kwargs = {}
    if math.isfinite(lower) or math.isfinite(upper):
        kwargs["bounds"] = (lower, upper)
    if "trim" in case:
        kwargs["trim"] = tuple(numbers(case["trim"]))
    if "variance" in case:
        kwargs["variance"] = numbers(case["variance"])
    method = case["calfun"]
    if method == "linear" and "bounds" in kwargs:
        method = "truncated"  # R: calfun = "linear" with bounds
    result = otcal.calibrate(X, d, population, method=method, names=names, progress=False, **kwargs)
    g_r = numbers(case["g"])
    assert result.converged
    assert max_rel(result.g, g_r) < TOLERANCE, f"{case['name']}: {max_rel(result.g, g_r):.3g}"
    np.testing.assert_allclose(result.weights, d * result.g, rtol=1e-15)
    if "trim" not in case:  # trimming moves the totals, by design (R's calibrate too)
        np.testing.assert_allclose(result.report["estimate"], population, rtol=1e-7)
    assert list(result.report.index) == REFERENCE["columns"]


def test_linear_with_bounds_equals_truncated():
    X = np.array(REFERENCE["model_matrix"])
    d = numbers(REFERENCE["design_weights"])
    population = numbers(REFERENCE["population"])
    bounds = tuple(numbers(next(c for c in REFERENCE["calibrate"] if c["name"] == "truncated")["bounds"]))
    a = otcal.calibrate(X, d, population, method="linear", bounds=bounds, progress=False)
    b = otcal.calibrate(X, d, population, method="truncated", bounds=bounds, progress=False)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.weight_stats["n_at_lower"] + a.weight_stats["n_at_upper"] > 0


def rake_data():
    d = numbers(REFERENCE["design_weights"])
    data = {name: values for name, values in REFERENCE["data"].items()}
    data["hhsize"] = numbers(data["hhsize"])
    data["hhsize_f"] = data["hhsize"]  # R's factor(hhsize): numeric categories, matched by value
    data["weight"] = d
    return data, d


@pytest.mark.parametrize("case", REFERENCE["rake"], ids=[c["name"] for c in REFERENCE["rake"]])
def test_rake_matches_r(case):
    data, d = rake_data()
    margins = {m: REFERENCE["rake_margins"][m] for m in case["margins"]}
    g_r = numbers(case["g"])
    with pytest.warns(otcal.OtcalWarning):  # the builder's magnitude check (totals vs unit sums)
        system = otcal.build_constraints(data, marginal=margins)
    if case["name"] == "rake_maxit":
        with pytest.warns(otcal.OtcalWarning, match="Raking did not converge after 2 iterations"):
            result = otcal.rake(system, max_iter=case["maxit"], epsilon=float(case["epsilon"]), progress=False)
        assert not result.converged
    else:
        result = otcal.rake(system, max_iter=case["maxit"], epsilon=float(case["epsilon"]), progress=False)
        assert result.converged
    assert max_rel(result.g, g_r) < TOLERANCE, f"{case['name']}: {max_rel(result.g, g_r):.3g}"
    assert result.n_iterations == len(result.history)


def test_rake_of_a_table_equals_rake_of_its_system():
    data, d = rake_data()
    margins = {m: REFERENCE["rake_margins"][m] for m in ("region", "sex")}
    with pytest.warns(otcal.OtcalWarning):
        a = otcal.rake(data, margins, epsilon=1e-10, max_iter=50, progress=False)
    with pytest.warns(otcal.OtcalWarning):
        system = otcal.build_constraints(data, marginal=margins)
    b = otcal.rake(system, epsilon=1e-10, max_iter=50, progress=False)
    np.testing.assert_array_equal(a.weights, b.weights)
    # tight raking reaches the raking calibration of the same margins
    c = otcal.calibrate(system, method="raking", progress=False)
    np.testing.assert_allclose(b.weights, c.weights, rtol=1e-8)


def test_fixture_records_its_provenance():
    for key in ("produced_by", "r_version", "survey_version", "date", "seed"):
        assert REFERENCE[key]
    assert REFERENCE["produced_by"].startswith("Rscript tests/python/fixtures/make_survey_reference.R")
