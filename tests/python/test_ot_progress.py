"""Progress reporting and Ctrl-C: the solve calls back into Python once per block of
inner_iterations, where pending signal handlers run, so an interrupt stops it within one block and
leaves the geometry's resident clouds usable."""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

import otcal

INNER = 10


def long_running(rng, **kw):
    """A geometry whose solve would run for a very long time (threshold 0 is never met)."""
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(150, 2))
    geom = otcal.PointCloud(x, y, scale_cost="mean", epsilon=0.01)
    options = dict(threshold=0.0, max_iterations=10**8, inner_iterations=INNER, **kw)
    return geom, options


def test_callable_sees_increasing_iterations(rng):
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(50, 2))
    seen = []
    out = otcal.sinkhorn(otcal.PointCloud(x, y, epsilon=0.05, scale_cost="mean"), threshold=1e-8,
                         inner_iterations=5, progress=seen.append)
    assert out.converged and len(seen) == out.n_iters // 5
    iterations = [info["iteration"] for info in seen]
    assert iterations == list(range(5, out.n_iters + 1, 5))
    errors = np.array([info["error"] for info in seen])
    np.testing.assert_array_equal(errors, out.errors[: len(seen)])
    assert errors[-1] < 1e-8 <= errors[0]


def test_progress_false_prints_nothing(rng, capfd):
    x = rng.normal(size=(40, 2))
    otcal.sinkhorn(otcal.PointCloud(x, epsilon=0.1, scale_cost="mean"), threshold=1e-4, progress=False)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_true_reports_on_stderr(rng, capfd):
    x = rng.normal(size=(40, 2))
    otcal.sinkhorn(otcal.PointCloud(x, epsilon=0.1, scale_cost="mean"), threshold=1e-4, progress=True)
    assert "sinkhorn" in capfd.readouterr().err


def test_a_raising_callback_stops_the_solve(rng):
    geom, options = long_running(rng)

    def stop(info):
        if info["iteration"] >= 30:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        otcal.sinkhorn(geom, progress=stop, **options)
    assert otcal.sinkhorn(geom, threshold=1e-3, progress=False).converged


def test_interrupt_from_the_callback_stops_within_one_block(rng):
    geom, options = long_running(rng)
    seen, interrupted_at = [], []

    def callback(info):
        seen.append(info["iteration"])
        if info["iteration"] >= 50 and not interrupted_at:
            interrupted_at.append(info["iteration"])
            _thread.interrupt_main()  # what Ctrl-C does

    # A context whose budget holds the clouds and one solve's workspace, and nothing more: solving
    # again after the interrupt shows the interrupted solve's workspace was freed as it unwound.
    with pytest.raises(otcal.BudgetTooSmall) as info:
        otcal.sinkhorn(geom, progress=False, memory_budget=1024, **options)
    ctx = otcal.Context(device="cpu", memory_budget=info.value.required_bytes)
    with pytest.raises(KeyboardInterrupt):
        otcal.sinkhorn(geom, progress=callback, context=ctx, **options)
    assert seen[-1] - interrupted_at[0] <= INNER
    uploads = ctx.cloud_uploads
    out = otcal.sinkhorn(geom, threshold=1e-3, context=ctx, progress=False)  # the geometry is still usable
    assert out.converged and ctx.cloud_uploads == uploads
    assert out.memory["peak_bytes"] <= out.memory["planned_peak_bytes"]


@pytest.mark.parametrize("with_callback", [True, False])
def test_interrupt_from_another_thread_stops_within_one_block(rng, with_callback):
    geom, options = long_running(rng)
    seen, interrupt_time, timers = [], [], []

    def fire():
        interrupt_time.append(time.monotonic())
        _thread.interrupt_main()

    def callback(info):
        seen.append((time.monotonic(), info["iteration"]))
        if not timers:  # armed once the solve runs, so the interrupt cannot land elsewhere
            timers.append(threading.Timer(0.2, fire))
            timers[0].start()

    if not with_callback:  # no progress sink: the solve still notices Ctrl-C
        timers.append(threading.Timer(0.5, fire))
        timers[0].start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        otcal.sinkhorn(geom, progress=callback if with_callback else False, **options)
    timers[0].join()
    assert time.monotonic() - start < 30
    if with_callback:
        after = [it for t, it in seen if t > interrupt_time[0]]
        before = [it for t, it in seen if t <= interrupt_time[0]]
        assert len(after) <= 1 and (not after or after[0] - before[-1] <= INNER)
    assert otcal.sinkhorn(geom, threshold=1e-3, progress=False).converged


def test_bad_progress_argument(rng):
    x = rng.normal(size=(20, 2))
    with pytest.raises(otcal.InvalidArgument, match="progress"):
        otcal.sinkhorn(otcal.PointCloud(x), progress="yes")


def test_interrupt_is_noticed_below_min_iterations(rng):
    # No error is computed before min_iterations, but the solve still calls back once per block.
    geom, options = long_running(rng)
    options.update(min_iterations=10**7)
    seen = []

    def callback(info):
        seen.append(info["iteration"])
        assert info["error"] == np.inf  # none computed yet
        if info["iteration"] == 40:
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        otcal.sinkhorn(geom, progress=callback, **options)
    assert seen == list(range(INNER, 50, INNER))
