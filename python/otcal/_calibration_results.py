"""Turning the compiled core's calibration results into Python objects (private).

Reports are pandas DataFrames when pandas is installed and dicts of numpy arrays otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._progress import ProgressReporter

__all__ = ["CalibrationResult", "ProgressSink", "table", "write_csv_atomically", "pandas_or_none"]


def pandas_or_none() -> Any:
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def table(columns: dict[str, Any], index: Sequence[str] | None = None, index_name: str | None = None) -> Any:
    """A DataFrame of these columns (index optional), or the dict itself without pandas."""
    pd = pandas_or_none()
    if pd is None:
        out = dict(columns)
        if index is not None:
            out = {index_name or "index": list(index), **out}
        return out
    df = pd.DataFrame(columns)
    if index is not None:
        df.index = pd.Index(list(index), name=index_name)
    return df


def target_report(diagnostics: dict, names: Sequence[str]) -> Any:
    """The per-target table of docs/calibration.md §5, indexed by the caller's target names."""
    t = diagnostics["targets"]
    columns = {
        "target": t["target"],
        "estimate": t["estimate"],
        "error": t["error"],
        "abs_error": t["abs_error"],
        "rel_error": t["rel_error"],
        "rel_abs_error": t["rel_abs_error"],
        "within_tol": np.asarray(t["within_tol"], dtype=bool),
        "excluded": np.asarray(t["excluded"], dtype=bool),
        "support": t["support"],
        "support_fraction": t["support_fraction"],
    }
    return table(columns, index=names, index_name="name")


class CalibrationResult:
    """Calibrated weights and their diagnostics; unpacks as ``weights, report``.

    Attributes:
        weights: calibrated weights (numpy, one per record).
        report: per-target diagnostics (pandas DataFrame indexed by target name, or a dict of
            arrays without pandas): target, estimate, error, abs_error, rel_error,
            rel_abs_error, within_tol, excluded, support, support_fraction.
        g: ``weights / design weights`` (0 where the design weight is 0).
        converged, n_iterations, max_ratio: the calibrator's convergence (max_ratio: largest
            ``|misfit| / (1 + |target|)`` of the exact methods).
        worst_targets: with ``force=True`` after a failure, the targets with the largest ratios.
        dropped_constraints: all-zero constraints with target 0 that were dropped (R does the same).
        weight_stats: min, max, mean, std, cv, sum, n_zero, n_negative, n_eff (Kish), efficiency,
            deff, g_min, g_max, n_at_lower, n_at_upper, design_efficiency.
        pct_close, max_error, mean_error, rmse: aggregate errors (docs/calibration.md §5).
        history: one row per Newton step, sweep or tracked epoch (epoch, stage, loss).
        warnings: the library's warnings about this result.
        memory: planned and measured workspace bytes, and the budget.

    Example:
        >>> weights, report = otcal.calibrate(X, d, totals, method="raking")  # doctest: +SKIP
        >>> result = otcal.calibrate(X, d, totals)  # doctest: +SKIP
        >>> result.converged, result.weight_stats["deff"]  # doctest: +SKIP
    """

    def __init__(self, raw: dict, names: Sequence[str], method: str):
        dg = raw["diagnostics"]
        self.method = method
        self.weights: np.ndarray = raw["weights"]
        self.g: np.ndarray = raw["g"]
        self.report = target_report(dg, names)
        self.converged: bool = bool(raw["converged"])
        self.n_iterations: int = int(raw["n_iterations"])
        self.max_ratio: float = float(raw["max_ratio"])
        index_of = {str(x): j for j, x in enumerate(dg["targets"]["name"])}
        self.worst_targets: list[str] = [names[index_of[x]] if x in index_of else x for x in raw["worst_targets"]]
        self.dropped_constraints: list[str] = [
            names[index_of[x]] if x in index_of else x for x in raw["dropped_constraints"]
        ]
        self.weight_stats: dict[str, float] = dict(dg["weights"])
        self.pct_close: float = float(dg["pct_close"])
        self.max_error: float = float(dg["max_error"])
        self.mean_error: float = float(dg["mean_error"])
        self.rmse: float = float(dg["rmse"])
        self.loss: float = float(dg["loss"])
        self.warnings: list[str] = list(dg["warnings"])
        rows = raw["history"]
        self.history = table(
            {
                "epoch": np.array([r["epoch"] for r in rows], dtype=np.int64),
                "stage": [r["stage"] for r in rows],
                "loss": np.array([r["loss"] for r in rows], dtype=np.float64),
            }
        )
        self.memory: dict[str, int] = {
            "planned_peak_bytes": int(raw["planned_peak_bytes"]),
            "peak_bytes": int(raw["peak_bytes"]),
            "budget_bytes": int(raw["budget_bytes"]),
        }

    def __iter__(self):
        yield self.weights
        yield self.report

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Any:
        return (self.weights, self.report)[i]

    def __repr__(self) -> str:
        return (
            f"CalibrationResult(method={self.method!r}, n_records={self.weights.shape[0]}, "
            f"n_targets={_n_rows(self.report)}, converged={self.converged}, "
            f"n_iterations={self.n_iterations}, max_ratio={self.max_ratio:.3g}, "
            f"g=[{self.weight_stats['g_min']:.4g}, {self.weight_stats['g_max']:.4g}])"
        )


def _n_rows(report: Any) -> int:
    return len(report) if not isinstance(report, dict) else len(report["target"])


class ProgressSink:
    """The callback the compiled core calls once per step: (stage, step, total, loss).

    Steps of every stage are laid end to end on one bar: ``offsets`` gives each stage's first
    position and whether its steps count from 0 (epochs) or 1 (Newton steps, sweeps). Stages not
    in ``offsets`` (the repeated dense epochs of a CUDA run with L0) only let Ctrl-C through.
    """

    def __init__(self, progress: Any, total: int, desc: str, unit: str, offsets: dict[str, tuple[int, int]]):
        self.reporter = ProgressReporter(progress, total, desc, unit)
        self.offsets = offsets

    @property
    def callback(self) -> Callable[[str, int, int, float], None] | None:
        return self if self.reporter.active else None

    def __call__(self, stage: str, step: int, total: int, loss: float) -> None:
        where = self.offsets.get(stage)
        if where is None:
            return
        first, zero_based = where
        self.reporter.update(first + step + (1 if zero_based else 0), {"stage": stage, "epoch": step, "loss": loss})

    def close(self) -> None:
        self.reporter.close()

    def __enter__(self) -> "ProgressSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_csv_atomically(df: Any, path: str | os.PathLike, index: bool = True) -> None:
    """Write to a temporary file beside ``path`` and rename it: a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=index)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
