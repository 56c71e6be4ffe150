"""otcal.Calibration against an independent float64 reimplementation of microcalibrate's update.

The reference below restates microcalibrate v0.22's reweight() in numpy (float64): log-weights,
loss mean(nf * ((S - t + 1) / (t + 1))^2) over the calibrated targets, PyTorch's Adam
(beta1 0.9, beta2 0.999, eps 1e-8) with one step per epoch, tracking every max(1, epochs // 10)
epochs and at the last one, weights exp(theta) after the final step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import otcal


def microcalibrate_reference(theta0, M, targets, epochs, lr, nf=None, active=None):
    """(weights, [(epoch, loss, estimates of all targets)]) of microcalibrate's dense loop."""
    k = M.shape[1]
    active = np.ones(k, dtype=bool) if active is None else active
    Ma, t = M[:, active], targets[active]
    nfa = np.ones(int(active.sum())) if nf is None else nf
    denominator = np.maximum(t + 1, 1e-12)
    theta = theta0.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    tracking = max(1, epochs // 10) if epochs > 10 else 1
    log = []
    for epoch in range(epochs):
        w = np.exp(theta)
        S = w @ Ma
        rel = (S - t + 1) / denominator
        loss = np.mean(nfa * rel**2)
        grad_S = 2 * nfa * rel / denominator / len(t)
        grad = w * (Ma @ grad_S)
        if epoch % tracking == 0 or epoch == epochs - 1:
            log.append((epoch, loss, w @ M))
        step = epoch + 1  # torch.optim.Adam, no weight decay, no amsgrad
        m = 0.9 * m + (1 - 0.9) * grad
        v = 0.999 * v + (1 - 0.999) * grad * grad
        bias1, bias2 = 1 - 0.9**step, 1 - 0.999**step
        theta = theta - (lr / bias1) * m / (np.sqrt(v) / np.sqrt(bias2) + 1e-8)
    return np.exp(theta), log


def survey(rng, n=300, k=6):
    """A records x targets estimate matrix (indicators and amounts), weights and reachable targets."""
    cols = []
    for j in range(k):
        if j % 2 == 0:
            cols.append((rng.random(n) < rng.uniform(0.2, 0.7)).astype(float))
        else:
            cols.append(rng.gamma(2.0, 5.0, n) * (rng.random(n) < 0.6))
    M = np.column_stack(cols)
    w0 = rng.uniform(5, 40, n)
    targets = M.T @ (w0 * rng.uniform(0.7, 1.4, n))
    return M, w0, targets


def max_rel(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


def test_matches_reference_without_noise(rng):
    M, w0, targets = survey(rng)
    names = [f"t{j}" for j in range(M.shape[1])]
    epochs, lr = 40, 0.05
    cal = otcal.Calibration(weights=w0, targets=targets, target_names=np.array(names), estimate_matrix=sp.csr_matrix(M),
                            epochs=epochs, learning_rate=lr, noise_level=0.0, progress=False)
    log = cal.calibrate()
    np.testing.assert_array_equal(cal.initial_log_weights, np.log(w0))
    ref_w, ref_log = microcalibrate_reference(np.log(w0), M, targets, epochs, lr)
    assert max_rel(cal.weights, ref_w) < 1e-10
    assert max_rel(cal.weights, w0) > 1e-2  # tens of epochs moved the weights
    # the log: pre-step loss and estimates of the tracked epochs
    tracked = sorted(set(log["epoch"]))
    assert tracked == [e for e, _, _ in ref_log]
    for epoch, loss, estimates in ref_log:
        rows = log[log["epoch"] == epoch]
        assert list(rows["target_name"]) == names
        assert abs(rows["loss"].iloc[0] - loss) <= 1e-10 * loss
        np.testing.assert_allclose(rows["estimate"], estimates, rtol=1e-10)


def test_matches_reference_from_drawn_noise(rng):
    M, w0, targets = survey(rng, n=250, k=5)
    epochs, lr, seed = 30, 0.03, int(rng.integers(0, 2**31))
    M_df = pd.DataFrame(M, columns=[f"c{j}" for j in range(M.shape[1])])
    cal = otcal.Calibration(weights=w0, targets=targets, estimate_matrix=M_df, epochs=epochs, learning_rate=lr,
                            noise_level=10.0, seed=seed, progress=False)
    cal.calibrate()
    theta0 = cal.initial_log_weights
    drawn = np.exp(theta0) - w0  # noise_level * U[0, 1)
    assert drawn.min() >= -1e-9 and drawn.max() < 10.0 and drawn.std() > 1.0
    np.testing.assert_array_equal(theta0, otcal._otcal.initial_log_weights(w0, seed, 10.0))
    ref_w, _ = microcalibrate_reference(theta0, M, targets, epochs, lr)
    assert max_rel(cal.weights, ref_w) < 1e-10
    # a different seed draws different noise
    other = otcal.Calibration(weights=w0, targets=targets, estimate_matrix=M_df, epochs=1, seed=seed + 1, progress=False)
    other.calibrate()
    assert not np.array_equal(other.initial_log_weights, theta0)


def test_matches_reference_with_excluded_targets_and_normalization(rng):
    M, w0, targets = survey(rng, n=200, k=6)
    names = [f"t{j}" for j in range(6)]
    excluded = [names[1], names[4]]
    active = np.array([x not in excluded for x in names])
    nf = rng.uniform(0.5, 2.0, int(active.sum()))  # microcalibrate: one per calibrated target
    epochs, lr = 35, 0.04
    cal = otcal.Calibration(weights=w0, targets=targets, target_names=names, estimate_matrix=M, epochs=epochs,
                            learning_rate=lr, noise_level=0.0, normalization_factor=nf, excluded_targets=excluded,
                            progress=False)
    log = cal.calibrate()
    ref_w, ref_log = microcalibrate_reference(np.log(w0), M, targets, epochs, lr, nf=nf, active=active)
    assert max_rel(cal.weights, ref_w) < 1e-10
    # calibrated targets first, then the excluded ones (re-estimated with the current weights)
    first = log[log["epoch"] == 0]
    assert list(first["target_name"]) == [x for x in names if x not in excluded] + excluded
    order = [names.index(x) for x in first["target_name"]]
    for epoch, loss, estimates in ref_log:
        rows = log[log["epoch"] == epoch]
        np.testing.assert_allclose(rows["estimate"], estimates[order], rtol=1e-10)
        assert abs(rows["loss"].iloc[0] - loss) <= 1e-10 * loss
    assert list(cal.target_names) == [x for x in names if x not in excluded]
    np.testing.assert_allclose(cal.estimate().to_numpy(), (cal.weights @ M)[active], rtol=1e-12)
    # microcalibrate's own logging of excluded targets (their starting estimate) on request
    frozen = otcal.Calibration(weights=w0, targets=targets, target_names=names, estimate_matrix=M, epochs=epochs,
                               learning_rate=lr, noise_level=0.0, normalization_factor=nf, excluded_targets=excluded,
                               excluded_log_initial=True, progress=False)
    flog = frozen.calibrate()
    start = w0 @ M
    for name in excluded:
        np.testing.assert_allclose(flog.loc[flog["target_name"] == name, "estimate"], start[names.index(name)],
                                   rtol=1e-12)


def test_batch_size_does_not_change_results(rng):
    M, w0, targets = survey(rng, n=333, k=5)
    X = sp.csc_matrix(M)
    runs = []
    for batch_size in (None, 1, 7, 64, 1000):
        cal = otcal.Calibration(weights=w0, targets=targets, estimate_matrix=X, epochs=20, learning_rate=0.02,
                                dropout_rate=0.2, seed=7, batch_size=batch_size, progress=False)
        log = cal.calibrate()
        runs.append((cal.weights, log))
    for weights, log in runs[1:]:
        np.testing.assert_array_equal(weights, runs[0][0])
        pd.testing.assert_frame_equal(log, runs[0][1])


@pytest.mark.parametrize("epochs", [7, 26])
def test_performance_log_columns_and_stride(rng, epochs, tmp_path):
    M, w0, targets = survey(rng, n=120, k=4)
    names = [f"x{j}" for j in range(4)]
    path = tmp_path / "logs" / "run.csv"
    cal = otcal.Calibration(weights=w0, targets=targets, target_names=names, estimate_matrix=M, epochs=epochs,
                            csv_path=str(path), progress=False)
    log = cal.calibrate()
    assert list(log.columns) == ["epoch", "loss", "target_name", "target", "estimate", "error", "abs_error",
                                 "rel_abs_error"]
    stride = max(1, epochs // 10) if epochs > 10 else 1
    expected = sorted(set(range(0, epochs, stride)) | {epochs - 1})
    assert sorted(set(log["epoch"])) == expected
    assert len(log) == len(expected) * len(names)
    np.testing.assert_allclose(log["error"], log["estimate"] - log["target"])
    np.testing.assert_allclose(log["rel_abs_error"], np.abs(log["error"]) / np.abs(log["target"]))
    written = pd.read_csv(path, index_col=0)
    pd.testing.assert_frame_equal(written, log, check_dtype=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.csv"]
    summary = cal.summary()
    assert list(summary.columns) == ["Metric", "Official target", "Final estimate", "Relative error"]
    assert list(summary["Metric"]) == names


def test_l0_stage_keeps_dense_weights_and_logs_both_stages(rng, tmp_path):
    M, w0, targets = survey(rng, n=150, k=4)
    common = dict(weights=w0, targets=targets, estimate_matrix=M, epochs=12, learning_rate=0.05, seed=3,
                  progress=False)
    dense = otcal.Calibration(**common)
    dense.calibrate()
    path = tmp_path / "l0.csv"
    sparse = otcal.Calibration(**common, regularize_with_l0=True, l0_lambda=1e-3, csv_path=str(path))
    sparse.calibrate()
    np.testing.assert_array_equal(sparse.weights, dense.weights)
    assert sparse.sparse_weights.shape == w0.shape and not np.array_equal(sparse.sparse_weights, dense.weights)
    assert dense.sparse_weights is None
    assert set(sparse.sparse_performance_df["epoch"]) <= set(range(24))
    assert path.exists() and (tmp_path / "l0_sparse.csv").exists()
    # result describes weights, sparse_result the L0 weights
    np.testing.assert_allclose(sparse.result.report["estimate"], sparse.weights @ M, rtol=1e-12)
    np.testing.assert_allclose(sparse.sparse_result.report["estimate"], sparse.sparse_weights @ M, rtol=1e-12)
    assert sparse.result.weight_stats["sum"] == pytest.approx(dense.result.weight_stats["sum"], rel=1e-14)


def test_float32_parity_mode(rng):
    M, w0, targets = survey(rng, n=100, k=3)
    kw = dict(weights=w0, targets=targets, estimate_matrix=M, epochs=15, learning_rate=0.02, progress=False)
    c64 = otcal.Calibration(**kw)
    c64.calibrate()
    c32 = otcal.Calibration(**kw, dtype=np.float32)
    c32.calibrate()
    assert c32.weights.dtype == np.float32 and c64.weights.dtype == np.float64
    np.testing.assert_allclose(c32.weights, c64.weights, rtol=1e-4)


def test_progress_callback_gets_every_epoch(rng):
    M, w0, targets = survey(rng, n=80, k=3)
    seen = []
    cal = otcal.Calibration(weights=w0, targets=targets, estimate_matrix=M, epochs=9, progress=seen.append)
    log = cal.calibrate()
    assert [s["epoch"] for s in seen] == list(range(9))
    assert {s["stage"] for s in seen} == {"dense"}
    np.testing.assert_allclose([s["loss"] for s in seen], log.groupby("epoch")["loss"].first().to_numpy())


def microcalibrate_reference_float32(theta0, M, targets, epochs, lr):
    """microcalibrate_reference in float32 throughout, as torch computes it (sums included)."""
    f = np.float32
    M32, t = M.astype(f), targets.astype(f)
    denominator = np.maximum(t + f(1), f(1e-12))
    theta = theta0.astype(f)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for epoch in range(epochs):
        w = np.exp(theta)
        S = w @ M32
        rel = (S - t + f(1)) / denominator
        grad = w * (M32 @ (f(2) * rel / denominator / f(len(t))))
        step = epoch + 1
        m = f(0.9) * m + (f(1) - f(0.9)) * grad
        v = f(0.999) * v + (f(1) - f(0.999)) * grad * grad
        bias1, bias2 = f(1) - f(0.9) ** step, f(1) - f(0.999) ** step
        theta = theta - (f(lr) / bias1) * m / (np.sqrt(v) / np.sqrt(bias2) + f(1e-8))
    return np.exp(theta).astype(np.float64)


def test_precision_float32_matches_a_float32_reference(rng):
    # precision="float32" (docs/calibration.md §3.9): float32 state and Adam, sums in float64
    # rounded to float32. Against torch-like all-float32 arithmetic the runs differ only by the
    # rounding of the sums (a few float32 ulps per epoch carried through 30 epochs): rtol 1e-4,
    # far below the float32-to-float64 reference distance checked to be non-zero.
    M, w0, targets = survey(rng, n=200, k=4)
    epochs, lr = 30, 0.03
    kw = dict(weights=w0, targets=targets, estimate_matrix=sp.csr_matrix(M), epochs=epochs, learning_rate=lr,
              noise_level=0.0, progress=False)
    c32 = otcal.Calibration(**kw, precision="float32")
    c32.calibrate()
    w = np.asarray(c32.weights, dtype=np.float64)
    np.testing.assert_array_equal(w, w.astype(np.float32).astype(np.float64))
    ref32 = microcalibrate_reference_float32(np.log(w0), M, targets, epochs, lr)
    ref64, _ = microcalibrate_reference(np.log(w0), M, targets, epochs, lr)
    assert max_rel(w, ref32) < 1e-4
    assert max_rel(w, ref64) < 1e-4 and max_rel(w, ref64) > 0
    with pytest.raises(otcal.InvalidArgument, match="precision"):
        otcal.Calibration(**kw, precision="float16")
