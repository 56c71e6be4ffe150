"""Memory: inputs used in place (no copy of contiguous float arrays), budgets that refuse before
allocating and name a budget that works, the dense plan counted against the budget."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import otcal
from otcal import _otcal

N_BIG, M_SMALL, D = 40_000, 16, 10  # x is 3.2 MB in float64; each iteration is cheap (m is small)


def traced_peak_of(fn) -> int:
    """Peak of the allocations tracemalloc sees while fn runs: Python's and numpy's, not the library's."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()


def solve(x, y):
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=1.0)
    otcal.sinkhorn(geom, threshold=1.0, max_iterations=10, progress=False, device="cpu")


def test_contiguous_input_is_used_without_a_copy(rng):
    x, y = rng.normal(size=(N_BIG, D)), rng.normal(size=(M_SMALL, D))
    solve(x, y)  # first use: imports, caches
    peak = traced_peak_of(lambda: solve(x, y))
    assert peak < x.nbytes // 8, f"{peak} bytes traced for a {x.nbytes}-byte input"


def test_fortran_order_input_is_copied_once(rng):
    """The counterpart: the same check sees the copy a Fortran-order input needs."""
    x, y = rng.normal(size=(N_BIG, D)), rng.normal(size=(M_SMALL, D))
    x_fortran = np.asfortranarray(x)
    solve(x, y)
    peak = traced_peak_of(lambda: solve(x_fortran, y))
    assert x.nbytes <= peak < 3 * x.nbytes


def test_float32_and_float64_inputs_are_viewed_in_place(rng):
    for dtype in (np.float64, np.float32):
        x = rng.normal(size=(50, 3)).astype(dtype)
        geom = otcal.PointCloud(x, epsilon=0.5)
        assert geom.x is x and geom.dtype == np.dtype(dtype).name
        assert _otcal.data_address(geom.x) == x.__array_interface__["data"][0]
    ints = rng.integers(1, 9, size=(50, 3))
    geom = otcal.PointCloud(ints)
    assert geom.x is not ints and geom.x.dtype == np.float64  # other dtypes: one float64 copy
    sliced = rng.normal(size=(50, 6))[:, ::2]
    assert otcal.PointCloud(sliced).x.flags.c_contiguous  # strided views: one contiguous copy


def test_budget_too_small_names_a_budget_that_works(rng):
    x, y = rng.normal(size=(300, D)), rng.normal(size=(200, D))
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.5)
    with pytest.raises(otcal.BudgetTooSmall, match="memory_budget") as info:
        otcal.sinkhorn(geom, memory_budget=4096, progress=False)
    required = info.value.required_bytes
    assert required > 4096 and isinstance(info.value, MemoryError)
    with pytest.raises(otcal.BudgetTooSmall):
        otcal.sinkhorn(geom, memory_budget=required - 1, progress=False)
    out = otcal.sinkhorn(geom, memory_budget=required, progress=False)
    assert out.memory["budget_bytes"] == required
    assert out.memory["peak_bytes"] <= out.memory["planned_peak_bytes"]


def test_budget_for_the_solve_after_the_upload(rng):
    """The clouds fit but the solve does not: the minimum still covers the whole call."""
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(30, 2))
    geom = otcal.PointCloud(x, y, epsilon=0.5, batch_size=2000)
    with pytest.raises(otcal.BudgetTooSmall, match="batch_size") as info:
        otcal.sinkhorn(geom, memory_budget="100KiB", progress=False)
    otcal.sinkhorn(geom, memory_budget=info.value.required_bytes, threshold=1e-2, progress=False)


def test_dense_plan_beyond_the_budget_is_refused(rng):
    n, m = 400, 300  # a dense float64 plan of 960 000 bytes
    x, y = rng.normal(size=(n, D)), rng.normal(size=(m, D))
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.2)
    out = otcal.sinkhorn(geom, memory_budget="256KiB", threshold=1e-4, progress=False)
    with pytest.raises(otcal.BudgetTooSmall, match="transport_matrix.*400 x 300") as info:
        out.transport_matrix()
    required = info.value.required_bytes
    assert required > n * m * 8
    sparse = out.sparsify("min_row")  # the sparse route still works in the small budget
    assert sparse.shape == (n, m)
    with pytest.raises(otcal.BudgetTooSmall):
        otcal.sinkhorn(geom, memory_budget=required - 1, threshold=1e-4, progress=False).transport_matrix()
    big = otcal.sinkhorn(geom, memory_budget=required, threshold=1e-4, progress=False)
    plan = big.transport_matrix()
    assert plan.shape == (n, m)
    # Another budget, another tile size, the same bits (docs/host-layer.md §6).
    kept = sparse.toarray() != 0
    np.testing.assert_array_equal(plan[kept], sparse.toarray()[kept])
