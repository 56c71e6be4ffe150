"""Ctrl-C during a calibration: KeyboardInterrupt within one epoch, nothing half-written, and the
next calibration works.

The interrupt is simulated with _thread.interrupt_main() (what a SIGINT handler sees) from the
progress callback, which the library calls once per epoch with the GIL released in between.
"""

from __future__ import annotations

import _thread
import time

import numpy as np
import pytest
import scipy.sparse as sp

import otcal


def survey(rng, n=2000, k=8):
    X = sp.random_array((n, k), density=0.3, random_state=rng, format="csc") * 10.0
    d = rng.uniform(1, 10, n)
    targets = X.T @ (d * rng.uniform(0.8, 1.2, n))
    return X, d, targets


def test_ctrl_c_stops_gradient_calibration_within_one_epoch(rng, tmp_path):
    X, d, targets = survey(rng)
    interrupt_at = int(rng.integers(3, 8))
    seen = []

    def progress(info):
        seen.append(info["epoch"])
        if info["epoch"] == interrupt_at:
            _thread.interrupt_main()

    path = tmp_path / "out" / "perf.csv"
    cal = otcal.Calibration(weights=d, targets=targets, estimate_matrix=X, epochs=1_000_000, csv_path=str(path),
                            progress=progress)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        cal.calibrate()
    assert time.perf_counter() - started < 30
    assert max(seen) <= interrupt_at + 1  # within one epoch of the interrupt
    assert not path.exists()
    assert not path.parent.exists() or not any(path.parent.iterdir())  # no temporary file left behind
    assert cal.performance_df is None
    np.testing.assert_array_equal(cal.weights, d)  # the object is unchanged

    # the same object and a fresh one calibrate normally afterwards
    cal.epochs = 5
    cal.progress = False
    log = cal.calibrate()
    assert path.exists() and sorted(set(log["epoch"])) == list(range(5))
    again = otcal.Calibration(weights=d, targets=targets, estimate_matrix=X, epochs=5, progress=False)
    again.calibrate()
    np.testing.assert_array_equal(again.weights, cal.weights)


def test_ctrl_c_stops_exact_calibration_within_one_newton_step(rng):
    X, d, targets = survey(rng, n=500, k=5)
    seen = []

    def progress(info):
        seen.append(info["epoch"])
        _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        otcal.calibrate(X, d, targets, method="raking", progress=progress)
    assert seen == [1]
    result = otcal.calibrate(X, d, targets, method="raking", progress=False)
    assert result.converged


def test_callback_exception_propagates_and_progress_reports_steps(rng):
    X, d, targets = survey(rng, n=400, k=4)
    steps = []
    result = otcal.calibrate(X, d, targets, method="logit", bounds=(0.3, 3.0), progress=steps.append)
    assert [s["epoch"] for s in steps] == list(range(1, result.n_iterations + 1))
    assert all(s["stage"] == "newton" for s in steps) and steps[-1]["loss"] == result.max_ratio

    class Stop(Exception):
        pass

    def stop(info):
        raise Stop(info)

    with pytest.raises(Stop):
        otcal.Calibration(weights=d, targets=targets, estimate_matrix=X, epochs=50, progress=stop).calibrate()


def test_progress_true_reports_without_a_terminal(rng, capsys):
    X, d, targets = survey(rng, n=300, k=4)
    otcal.calibrate(X, d, targets, method="raking", progress=True)
    otcal.Calibration(weights=d, targets=targets, estimate_matrix=X, epochs=4, progress=True).calibrate()
    otcal.calibrate(X, d, targets, method="raking", progress=False)
    assert capsys.readouterr().out == ""  # reports go to stderr, never stdout
