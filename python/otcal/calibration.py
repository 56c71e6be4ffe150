"""Survey-weight calibration: microplex's constraint builder, R survey's calibrators, microcalibrate.

- :func:`build_constraints` builds the sparse targets x records system (microplex's
  ``_build_sparse_constraint_system``) in O(nnz) from a DataFrame or a dict of columns.
- :func:`calibrate` is R ``survey``'s ``calibrate()`` (calfun linear, raking, logit, and linear
  with bounds), Newton on the dual as ``grake`` does; :func:`rake` is R's iterative ``rake()``.
- :class:`Calibration` is microcalibrate's class (same constructor, ``calibrate()``,
  ``estimate()``, ``summary()``, performance log), backed by otcal's gradient calibrator.

Semantics: docs/calibration.md; the Python API and its differences from the originals:
docs/python-calibration.md.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import _otcal
from ._calibration_inputs import (
    as_names,
    as_targets,
    as_weights,
    check_bounds,
    check_integer,
    check_pair,
    check_positive,
    csr_from_arrays,
    records_by_targets,
    unique_internal_names,
)
from ._calibration_results import (
    CalibrationResult,
    ProgressSink,
    pandas_or_none,
    table,
    write_csv_atomically,
)
from ._context import get_context, library_call
from .errors import InvalidArgument, OtcalWarning

__all__ = [
    "LinearConstraint",
    "ConstraintSystem",
    "build_constraints",
    "calibrate",
    "rake",
    "CalibrationResult",
    "Calibration",
    "normalization_from_groups",
]

_METHODS = ("linear", "raking", "logit", "truncated")


# ------------------------------------------------------------------------------------------------
# Constraint systems


@dataclass(frozen=True)
class LinearConstraint:
    """An explicit calibration row: ``sum_i coefficients[i] * w_i = target`` (microplex's class).

    Example:
        >>> c = otcal.LinearConstraint("adults_income", income * (age >= 18), 1.2e9)  # doctest: +SKIP
        >>> otcal.build_constraints(df, linear=[c])  # doctest: +SKIP
    """

    name: str
    coefficients: Any
    target: float


class ConstraintSystem:
    """A calibration problem: ``A`` (targets x records, CSR), ``targets`` and ``names``.

    Unpacks as ``A, targets, names``. ``A @ w`` are the weighted totals; ``A.T`` is the records x
    targets estimate matrix that :func:`calibrate` and :class:`Calibration` take. It also keeps
    the margin structure (for :func:`rake`), the design weights read from the weight column and
    the builder's warnings.

    Attributes:
        A: ``scipy.sparse.csr_array`` of shape (n_constraints, n_records).
        targets: numpy float64, one per row.
        names: row names ("column=category", continuous column names, linear names, "total").
        n_categorical: number of marginal rows (they come first).
        margin_offsets: margin m owns rows ``margin_offsets[m]:margin_offsets[m+1]``.
        design_weights: the weight column, or ones when the data has none.
        warnings: zero/low support, negative targets, order-of-magnitude checks.

    Example:
        >>> A, targets, names = otcal.build_constraints(df, marginal={"sex": {"f": 510, "m": 490}})  # doctest: +SKIP
        >>> system = otcal.build_constraints(df, marginal={"sex": {"f": 510, "m": 490}})  # doctest: +SKIP
        >>> otcal.calibrate(system, method="raking").weights  # doctest: +SKIP
    """

    def __init__(
        self,
        A: Any,
        targets: np.ndarray,
        names: list[str],
        n_categorical: int = 0,
        margin_offsets: Sequence[int] = (0,),
        design_weights: np.ndarray | None = None,
        warnings: Sequence[str] = (),
    ):
        self.A = A
        self.targets = targets
        self.names = names
        self.n_categorical = int(n_categorical)
        self.margin_offsets = [int(x) for x in margin_offsets]
        self.design_weights = design_weights if design_weights is not None else np.ones(A.shape[1])
        self.warnings = list(warnings)

    @property
    def n_records(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_constraints(self) -> int:
        return int(self.A.shape[0])

    @property
    def X(self) -> Any:
        """The records x targets estimate matrix ``A.T`` (CSC, no copy)."""
        return self.A.T

    def __iter__(self):
        yield self.A
        yield self.targets
        yield self.names

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> Any:
        return (self.A, self.targets, self.names)[i]

    def __repr__(self) -> str:
        return (
            f"ConstraintSystem(n_constraints={self.n_constraints}, n_records={self.n_records}, "
            f"nnz={self.A.nnz}, n_categorical={self.n_categorical})"
        )

    def _arrays(self, design_weights: np.ndarray, targets: np.ndarray, names: list[str]) -> dict:
        A = self.A
        wide = A.shape[1] > 2**31 - 1
        return {
            "shape": (int(A.shape[0]), int(A.shape[1])),
            "indptr": np.ascontiguousarray(A.indptr, dtype=np.int64),
            "indices": np.ascontiguousarray(A.indices, dtype=np.int64 if wide else np.int32),
            "values": np.ascontiguousarray(A.data, dtype=np.float64),
            "targets": targets,
            "names": names,
            "design_weights": design_weights,
            "n_categorical": self.n_categorical,
            "margin_offsets": self.margin_offsets,
        }


def _is_dataframe(a: Any) -> bool:
    return type(a).__name__ == "DataFrame" and hasattr(a, "columns")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _table_column(values: Any, name: str) -> tuple[bool, Any]:
    """(numeric, values): float64 numbers with NaN for missing, or strings with "" for missing."""
    dtype = getattr(values, "dtype", None)
    if dtype is not None and type(dtype).__name__ == "CategoricalDtype":
        categories = np.asarray(dtype.categories)
        if categories.dtype.kind in "fiub":
            return True, np.asarray(values.astype(float), dtype=np.float64)
        values = values.astype(object)
    if hasattr(values, "to_numpy"):
        kind = getattr(getattr(values, "dtype", None), "kind", "O")
        if kind in "iufb":
            return True, np.ascontiguousarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
        arr = values.to_numpy(dtype=object)
    else:
        if isinstance(values, (str, bytes)):
            raise InvalidArgument(f"data['{name}']: expected a column of values, got a single string")
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise InvalidArgument(f"data['{name}']: expected a 1-D column, got shape {arr.shape}")
        if arr.dtype.kind in "iufb":
            return True, np.ascontiguousarray(arr, dtype=np.float64)
        arr = arr.astype(object)
    if all(isinstance(v, (numbers.Real, np.bool_)) and not isinstance(v, str) or _missing(v) for v in arr):
        # an object column of numbers (e.g. with None for missing) is numeric
        return True, np.array([np.nan if _missing(v) else float(v) for v in arr], dtype=np.float64)
    return False, ["" if _missing(v) else (v if isinstance(v, str) else str(v)) for v in arr]


def _category_key(category: Any) -> str:
    if isinstance(category, np.generic):
        category = category.item()
    return str(category)


def _linear_rows(linear: Any) -> list[tuple[str, Any, float]]:
    rows = []
    if linear is None:
        return rows
    if isinstance(linear, LinearConstraint) or hasattr(linear, "coefficients"):
        linear = [linear]
    for i, c in enumerate(linear):
        if hasattr(c, "coefficients") and hasattr(c, "name") and hasattr(c, "target"):
            name, coefficients, target = c.name, c.coefficients, c.target
        else:
            try:
                name, coefficients, target = c
            except (TypeError, ValueError):
                raise InvalidArgument(
                    f"linear[{i}]: expected a LinearConstraint(name, coefficients, target) or a tuple of the three"
                ) from None
        arg = f"linear[{i}] ('{name}').coefficients"
        try:
            coef = np.ascontiguousarray(np.asarray(coefficients, dtype=np.float64))
        except (TypeError, ValueError):
            raise InvalidArgument(f"{arg}: expected numbers") from None
        if coef.ndim != 1:
            raise InvalidArgument(f"{arg}: expected a 1-D array, got shape {coef.shape}")
        try:
            target = float(target)
        except (TypeError, ValueError):
            raise InvalidArgument(f"linear[{i}] ('{name}').target: expected a number, got {target!r}") from None
        rows.append((str(name), coef, target))
    return rows


def build_constraints(
    df: Any,
    marginal: Mapping[str, Mapping[Any, float]] | None = None,
    continuous: Mapping[str, float] | None = None,
    linear: Iterable[Any] | None = None,
    total: float | None = None,
    weight_column: str = "weight",
    *,
    memory_budget: Any = None,
    context: Any = None,
) -> ConstraintSystem:
    """The sparse calibration system of a record table, in O(nnz) (microplex's builder).

    Rows, in this order (docs/calibration.md §1):
    - ``marginal={column: {category: target}}``: one row per category, 1 where the record has it,
      named ``"column=category"``. Margins must be exhaustive: a record whose category has no
      target (a missing value included) is an error. In numeric columns keys match by value
      (``3``, ``"3"`` and ``3.0`` are the same category); in text columns verbatim.
    - ``continuous={column: total}``: one row of the column's values, named by the column.
    - ``linear=[LinearConstraint(name, coefficients, target), ...]`` (or ``(name, coefficients,
      target)`` tuples): explicit rows; exact zeros are not stored.
    - ``total``: a row of ones named ``"total"`` (otcal addition).

    Args:
        df: a pandas DataFrame, or a dict of equally long columns (numpy arrays, lists of numbers
            or of strings). Only the columns named in the spec and ``weight_column`` are read.
        weight_column: the design weights; all 1 when the data has no such column.
        memory_budget, context: the byte budget of the build's workspace (see otcal.Context).

    Returns:
        A :class:`ConstraintSystem`; it unpacks as ``A, targets, names`` with ``A`` a
        ``scipy.sparse.csr_array`` (targets x records).

    Raises:
        InvalidArgument: a missing column, untargeted categories, a non-numeric or non-finite
            continuous column, bad linear constraints, duplicate row names, non-finite targets.

    Warns:
        OtcalWarning: zero or low support, negative targets, targets an order of magnitude away
            from their unit-weight column sums.

    Example:
        >>> import pandas as pd, otcal
        >>> df = pd.DataFrame({"sex": ["f", "m", "f"], "age": [30, 41, 30], "income": [10.0, 0.0, 5.5],
        ...                    "weight": [1.0, 2.0, 1.5]})
        >>> A, targets, names = otcal.build_constraints(
        ...     df, marginal={"sex": {"f": 3, "m": 2}, "age": {30: 3, 41: 2}}, continuous={"income": 20})
        >>> names
        ['sex=f', 'sex=m', 'age=30', 'age=41', 'income']
        >>> A.toarray()[4]
        array([10. ,  0. ,  5.5])
    """
    if not _is_dataframe(df) and not isinstance(df, Mapping):
        raise InvalidArgument(f"df: expected a pandas DataFrame or a dict of columns, got {type(df).__name__}")
    marginal = dict(marginal or {})
    continuous = dict(continuous or {})
    if not isinstance(weight_column, str):
        raise InvalidArgument(f"weight_column: expected a column name, got {weight_column!r}")
    linear_rows = _linear_rows(linear)
    columns = list(df.columns) if _is_dataframe(df) else list(df.keys())
    wanted = [*marginal.keys(), *continuous.keys(), weight_column]
    numeric_columns, string_columns, seen = [], [], set()
    for name in wanted:
        if name in seen or name not in columns:
            continue
        seen.add(name)
        numeric, values = _table_column(df[name], str(name))
        (numeric_columns if numeric else string_columns).append((str(name), values))
    if _is_dataframe(df):
        n_records = len(df)
    elif numeric_columns or string_columns:
        first = (numeric_columns or string_columns)[0][1]
        n_records = len(first)
    elif columns:
        n_records = len(df[columns[0]])
    else:
        n_records = linear_rows[0][1].shape[0] if linear_rows else 0
    spec_marginal = []
    for column, categories in marginal.items():
        if not isinstance(categories, Mapping):
            raise InvalidArgument(
                f"marginal['{column}']: expected a dict {{category: target}}, got {type(categories).__name__}"
            )
        rows = []
        for category, target in categories.items():
            try:
                rows.append((_category_key(category), float(target)))
            except (TypeError, ValueError):
                raise InvalidArgument(f"marginal['{column}'][{category!r}]: expected a number, got {target!r}") from None
        spec_marginal.append((str(column), rows))
    spec_continuous = []
    for column, target in continuous.items():
        try:
            spec_continuous.append((str(column), float(target)))
        except (TypeError, ValueError):
            raise InvalidArgument(f"continuous['{column}']: expected a number, got {target!r}") from None
    if total is not None:
        try:
            total = float(total)
        except (TypeError, ValueError):
            raise InvalidArgument(f"total: expected a number, got {total!r}") from None
    ctx = get_context("cpu", memory_budget, context=context)
    with library_call(ctx):
        raw = _otcal.build_constraints(
            ctx, numeric_columns, string_columns, spec_marginal, spec_continuous, linear_rows, total,
            weight_column, int(n_records),
        )
    A = csr_from_arrays(raw)
    return ConstraintSystem(
        A, raw["targets"], list(raw["names"]), raw["n_categorical"], raw["margin_offsets"], raw["design_weights"],
        raw["warnings"],
    )


# ------------------------------------------------------------------------------------------------
# Exact calibrators (R survey)


def _problem(X: Any, weights: Any, targets: Any, names: Any) -> tuple[ConstraintSystem, np.ndarray, np.ndarray, list[str]]:
    """The system, design weights, targets and (caller's) names of a calibrate-style call."""
    if isinstance(X, ConstraintSystem):
        system = X
        n, k = system.n_records, system.n_constraints
        labels = system.names if names is None else as_names(names, k)
        w = system.design_weights if weights is None else as_weights(weights, "weights", n)
        t = system.targets if targets is None else as_targets(targets, "targets", k, labels)
        return system, np.ascontiguousarray(w, dtype=np.float64), t, labels
    arrays, n, k, columns = records_by_targets(X, "X")
    labels = as_names(names, k) if names is not None else (columns or [f"target_{j}" for j in range(k)])
    if weights is None:
        raise InvalidArgument("weights: the design weights are required (one per row of X)")
    if targets is None:
        raise InvalidArgument("targets: the population totals are required (one per column of X)")
    w = as_weights(weights, "weights", n)
    t = as_targets(targets, "targets", k, labels)
    return ConstraintSystem(csr_from_arrays(arrays), t, labels, design_weights=w), w, t, labels


def calibrate(
    X: Any,
    weights: Any = None,
    targets: Any = None,
    method: str = "linear",
    bounds: tuple[float, float] | None = None,
    max_iter: int = 50,
    epsilon: float = 1e-7,
    force: bool = False,
    variance: Any = None,
    trim: tuple[float, float] | None = None,
    names: Sequence[str] | None = None,
    device: str = "auto",
    memory_budget: Any = None,
    context: Any = None,
    progress: Any = None,
) -> CalibrationResult:
    """Calibrate design weights to population totals exactly, as R survey's ``calibrate()``.

    Minimises ``sum_i d_i G(w_i/d_i)`` subject to ``X.T @ w = targets`` by Newton on the dual
    (R's ``grake``); unbounded ``linear`` is the closed-form GREG (R's ``regcalibrate``).

    Args:
        X: records x targets (R's model matrix, microcalibrate's estimate matrix): a SciPy sparse
            matrix, a numpy array, a DataFrame (its columns name the targets) or a
            :class:`ConstraintSystem` (then ``weights`` and ``targets`` default to its own).
        weights: design weights ``d`` (non-negative), one per record.
        targets: population totals, one per column of ``X``.
        method: R's ``calfun``: ``"linear"`` (chi-square distance; with ``bounds`` it is the
            truncated linear method), ``"raking"`` (multiplicative), ``"logit"`` (needs finite
            bounds), or ``"truncated"`` (linear that requires ``bounds``).
        bounds: ``(lower, upper)`` on ``g = w/d``, with ``lower <= 1 <= upper`` (R's ``bounds``).
        max_iter: Newton steps at most (R's ``maxit``).
        epsilon: stop when ``max |misfit| / (1 + |target|) < epsilon`` (R's ``epsilon``).
        force: return the best iterate with a warning instead of raising CalibrationFailed.
        variance: ``sigma_i^2`` per record, or one value per target ``v`` with
            ``sigma_i^2 = x_i @ v`` (R's ``variance``).
        trim: ``(a, b)``: clip ``g`` after calibration and spread the trimmed mass over the other
            records in proportion to ``d`` (R's ``trim``; also applied on the GREG path).
        names: target names for the report (default: DataFrame columns, else ``target_j``).
        device, memory_budget, context: where to run and the workspace budget.
        progress: None (a bar on a terminal), False, True, or a callable receiving
            ``{"stage": "newton", "epoch": step, "loss": max_ratio}`` once per Newton step.

    Returns:
        A :class:`CalibrationResult`: ``weights, report = otcal.calibrate(...)`` unpacks it;
        it also has ``g``, ``converged``, ``n_iterations``, ``max_ratio``, ``weight_stats``.

    Raises:
        InvalidArgument: bad shapes, NaN, negative weights, unknown method, bad bounds.
        CalibrationFailed: no convergence within ``max_iter`` (unless ``force``).

    Example:
        >>> import numpy as np, otcal
        >>> rng = np.random.default_rng(1)
        >>> X = np.column_stack([np.ones(50), rng.integers(0, 2, 50), rng.gamma(2.0, 10.0, 50)])
        >>> d = np.full(50, 20.0)
        >>> totals = X.T @ (d * rng.uniform(0.9, 1.1, 50))
        >>> weights, report = otcal.calibrate(X, d, totals, method="raking")
        >>> bool(np.allclose(X.T @ weights, totals))
        True
    """
    if not isinstance(method, str) or method not in _METHODS:
        raise InvalidArgument(f"method: expected one of {', '.join(repr(m) for m in _METHODS)}, got {method!r}")
    lower, upper = (-math.inf, math.inf) if bounds is None else check_bounds(bounds)
    if method == "logit" and not (math.isfinite(lower) and math.isfinite(upper) and lower < 1 < upper):
        raise InvalidArgument(
            "bounds: method='logit' needs finite bounds with lower < 1 < upper on g = w/d, e.g. bounds=(0.5, 2.0)"
        )
    if method == "truncated" and not (math.isfinite(lower) or math.isfinite(upper)):
        raise InvalidArgument("bounds: method='truncated' is linear calibration with bounds; pass bounds=(lower, upper)")
    max_iter = check_integer(max_iter, "max_iter", 1)
    epsilon = check_positive(epsilon, "epsilon")
    if not isinstance(force, (bool, np.bool_)):
        raise InvalidArgument(f"force: expected True or False, got {force!r}")
    system, w, t, labels = _problem(X, weights, targets, names)
    n, k = system.n_records, system.n_constraints
    sigma2 = None
    if variance is not None:
        sigma2 = np.ascontiguousarray(
            as_targets(variance, "variance", None), dtype=np.float64
        )
        if sigma2.shape[0] not in (n, k):
            raise InvalidArgument(
                f"variance: expected one value per record ({n}) or one per target ({k}), got {sigma2.shape[0]}"
            )
    trim_pair = None if trim is None else check_pair(trim, "trim", "(0.5, 3.0)")
    calfun = "linear" if method == "truncated" else method
    ctx = get_context(device, memory_budget, context=context)
    internal = unique_internal_names(labels)
    sink = ProgressSink(progress, max_iter, f"calibrate ({method})", "step", {"newton": (0, False)})
    with sink, library_call(ctx):
        raw = _otcal.calibrate_exact(
            ctx, system._arrays(w, t, internal), calfun, lower, upper, max_iter, epsilon, bool(force), sigma2,
            trim_pair, sink.callback,
        )
    return CalibrationResult(raw, labels, method)


def rake(
    data: Any,
    marginal: Mapping[str, Mapping[Any, float]] | None = None,
    *,
    weights: Any = None,
    weight_column: str = "weight",
    max_iter: int = 10,
    epsilon: float = 1.0,
    device: str = "auto",
    memory_budget: Any = None,
    context: Any = None,
    progress: Any = None,
) -> CalibrationResult:
    """Iterative raking over categorical margins, as R survey's ``rake()``.

    Each sweep post-stratifies on every margin in turn; raking stops when the largest change of
    a cell total between sweeps is below ``epsilon`` (absolute when ``epsilon >= 1``, else
    relative to the sum of the design weights), or after ``max_iter`` sweeps with a warning.
    R's defaults (``control = list(maxit = 10, epsilon = 1)``) stop early; for the raking
    solution use a small ``epsilon`` or ``calibrate(..., method="raking")``.

    Args:
        data: a :class:`ConstraintSystem` from :func:`build_constraints` with marginal targets
            (its other rows are ignored), or a DataFrame / dict of columns together with
            ``marginal``.
        marginal: ``{column: {category: population count}}`` when ``data`` is a table.
        weights: design weights (default: the system's, i.e. ``weight_column`` or ones).
        max_iter, epsilon: R's ``control$maxit`` and ``control$epsilon``.
        progress: as in :func:`calibrate`; ``loss`` is the sweep's largest change.

    Example:
        >>> import pandas as pd, otcal
        >>> df = pd.DataFrame({"sex": ["f", "m", "m", "f"], "region": ["n", "n", "s", "s"], "weight": 25.0})
        >>> result = otcal.rake(df, {"sex": {"f": 60, "m": 40}, "region": {"n": 45, "s": 55}}, epsilon=1e-9,
        ...                     max_iter=100)
        >>> result.weights.sum().round(6)
        np.float64(100.0)
    """
    if isinstance(data, ConstraintSystem):
        if marginal is not None:
            raise InvalidArgument("marginal: the constraint system already holds the margins; pass one or the other")
        system = data
    else:
        if not marginal:
            raise InvalidArgument("marginal: rake() of a table needs the margins {column: {category: count}}")
        system = build_constraints(data, marginal=marginal, weight_column=weight_column, memory_budget=memory_budget,
                                   context=context)
    if system.n_categorical == 0:
        raise InvalidArgument("data: the constraint system has no marginal targets; build it with marginal=...")
    max_iter = check_integer(max_iter, "max_iter", 1)
    epsilon = check_positive(epsilon, "epsilon")
    w = system.design_weights if weights is None else as_weights(weights, "weights", system.n_records)
    ctx = get_context(device, memory_budget, context=context)
    internal = unique_internal_names(system.names)
    sink = ProgressSink(progress, max_iter, "rake", "sweep", {"rake": (0, False)})
    with sink, library_call(ctx):
        raw = _otcal.rake(ctx, system._arrays(np.ascontiguousarray(w, dtype=np.float64), system.targets, internal),
                          max_iter, epsilon, sink.callback)
    return CalibrationResult(raw, system.names, "rake")


def normalization_from_groups(groups: Sequence[Any]) -> np.ndarray:
    """Per-target loss factors that give every group the same total weight (docs §3.6).

    ``nf_j = 1 / |group of j|``, rescaled to mean 1; pass it as ``normalization_factor`` to
    :class:`Calibration` so that, e.g., one national target weighs as much as 50 state targets.

    Example:
        >>> import otcal
        >>> otcal.normalization_from_groups(["national", "state", "state", "state"]).round(3)
        array([2.   , 0.667, 0.667, 0.667])
    """
    if isinstance(groups, (str, bytes)):
        raise InvalidArgument("groups: expected one group label per target, got a single string")
    return np.asarray(_otcal.normalization_from_groups([str(g) for g in groups]), dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# microcalibrate's Calibration


def _device_name(device: Any) -> str:
    if device is None:
        return "auto"
    name = str(device)  # also a torch.device
    if name == "mps" or name.startswith("mps:"):
        warnings.warn("device: otcal has no MPS backend; running on the CPU", OtcalWarning, stacklevel=3)
        return "cpu"
    return name


def _real(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise InvalidArgument(f"{name}: expected a number, got {value!r}")
    if not (low <= value <= high):
        raise InvalidArgument(f"{name}: must lie in [{low:g}, {high:g}], got {value!r}")
    return float(value)


class Calibration:
    """microcalibrate's ``Calibration``, on otcal's gradient calibrator (change only the import).

    The constructor takes microcalibrate's parameters, in its order and with its defaults; the
    estimate matrix may also be a SciPy sparse matrix (records x targets), which keeps memory at
    O(nnz). The loss, the log-weight parametrisation, Adam (PyTorch's, one step per epoch),
    dropout in log space, normalization factors, excluded targets, the L0 stage and the
    performance log follow microcalibrate v0.22 (docs/calibration.md §3). Differences, all
    documented in docs/python-calibration.md: the noise and dropout draws come from Philox (the
    same numbers for every batch size and device, not numpy's), arithmetic is float64 (``dtype``
    rounds the inputs and outputs to float32 for parity), excluded targets are re-estimated in
    the log (``excluded_log_initial=True`` restores microcalibrate), unknown excluded names are
    an error, ``estimate_function`` alone is not accepted (otcal needs the matrix).

    Args (beyond microcalibrate's):
        dtype: numpy.float64 (default) or numpy.float32 (inputs and outputs rounded to float32).
        precision: "float64" (default) or "float32": the calibrator's own arithmetic, float32 as
            microcalibrate's torch (log-weights, weights, gradients, Adam state; sums in float64,
            docs/calibration.md §3.9). CPU devices only.
        memory_budget, context: workspace budget (``batch_size`` is then planned from it).
        progress: None (a bar on a terminal), False, True, or a callable receiving
            ``{"stage": "dense" | "l0", "epoch": i, "loss": loss}`` once per epoch.
        final_weights_last_dropout_draw, loss_relative, l0_init_dense_result,
        l0_penalty_per_record, excluded_log_initial, legacy_eval_gate: the switches of
        docs/calibration.md §3.8 (all False by default).

    Attributes (after ``calibrate()``):
        weights, sparse_weights, performance_df (and sparse_performance_df with L0),
        initial_log_weights (the starting log-weights drawn), result (a
        :class:`CalibrationResult` with the diagnostics of ``weights``) and, with L0,
        sparse_result (those of ``sparse_weights``).

    Example:
        >>> import numpy as np, pandas as pd, otcal
        >>> rng = np.random.default_rng(0)
        >>> M = pd.DataFrame({"pop": np.ones(200), "income": rng.gamma(2.0, 20.0, 200)})
        >>> cal = otcal.Calibration(weights=np.full(200, 10.0), targets=np.array([2200.0, 9.0e4]),
        ...                         estimate_matrix=M, epochs=200, learning_rate=0.01, progress=False)
        >>> log = cal.calibrate()
        >>> list(log.columns)
        ['epoch', 'loss', 'target_name', 'target', 'estimate', 'error', 'abs_error', 'rel_abs_error']
    """

    def __init__(
        self,
        weights: np.ndarray,
        targets: np.ndarray,
        target_names: np.ndarray | None = None,
        estimate_matrix: Any = None,
        estimate_function: Callable[[Any], Any] | None = None,
        epochs: int | None = 32,
        noise_level: float | None = 10.0,
        learning_rate: float | None = 1e-3,
        dropout_rate: float | None = 0,
        normalization_factor: Any = None,
        excluded_targets: list[str] | None = None,
        csv_path: str | None = None,
        device: str = "cpu",
        l0_lambda: float | None = 5e-6,
        init_mean: float | None = 0.999,
        temperature: float | None = 0.5,
        sparse_learning_rate: float | None = 0.2,
        regularize_with_l0: bool | None = False,
        seed: int | None = 42,
        batch_size: int | None = None,
        *,
        dtype: Any = np.float64,
        memory_budget: Any = None,
        progress: Any = None,
        context: Any = None,
        final_weights_last_dropout_draw: bool = False,
        loss_relative: bool = False,
        l0_init_dense_result: bool = False,
        l0_penalty_per_record: bool = False,
        excluded_log_initial: bool = False,
        legacy_eval_gate: bool = False,
        precision: str = "float64",
    ):
        self.logger = logging.getLogger(__name__)
        if precision not in ("float32", "float64"):
            raise InvalidArgument(f"precision: expected 'float32' or 'float64', got {precision!r}")
        self.precision = precision
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise InvalidArgument(f"dtype: expected numpy.float32 or numpy.float64, got {dtype!r}") from None
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise InvalidArgument(f"dtype: expected numpy.float32 or numpy.float64, got {self.dtype}")
        if estimate_matrix is None:
            if estimate_function is not None:
                raise InvalidArgument(
                    "estimate_function: otcal calibrates with an explicit estimate matrix; pass estimate_matrix= "
                    "(records x targets; a SciPy sparse matrix keeps memory at O(nnz))"
                )
            raise InvalidArgument("estimate_matrix: Either estimate_function or estimate_matrix must be provided")
        self.device = _device_name(device)
        self.memory_budget = memory_budget
        self.context = context
        self.progress = progress
        self.epochs = check_integer(32 if epochs is None else epochs, "epochs", 0)
        self.noise_level = _real(10.0 if noise_level is None else noise_level, "noise_level", 0.0, math.inf)
        self.learning_rate = _real(1e-3 if learning_rate is None else learning_rate, "learning_rate", 0.0, math.inf)
        self.dropout_rate = _real(0.0 if dropout_rate is None else dropout_rate, "dropout_rate", 0.0, 1.0)
        self.l0_lambda = _real(5e-6 if l0_lambda is None else l0_lambda, "l0_lambda", 0.0, math.inf)
        self.init_mean = _real(0.999 if init_mean is None else init_mean, "init_mean", 0.0, 1.0)
        if not (0 < self.init_mean < 1):
            raise InvalidArgument(f"init_mean: must lie strictly between 0 and 1, got {init_mean!r}")
        self.temperature = _real(0.5 if temperature is None else temperature, "temperature", 0.0, math.inf)
        if self.temperature <= 0:
            raise InvalidArgument(f"temperature: must be positive, got {temperature!r}")
        self.sparse_learning_rate = _real(
            0.2 if sparse_learning_rate is None else sparse_learning_rate, "sparse_learning_rate", 0.0, math.inf
        )
        self.regularize_with_l0 = bool(regularize_with_l0)
        if seed is not None:
            seed = check_integer(seed, "seed", 0)
        self.seed = seed
        self.batch_size = None if batch_size is None else check_integer(batch_size, "batch_size", 1)
        if csv_path is not None and not str(os.fspath(csv_path)).endswith(".csv"):
            raise InvalidArgument(f"csv_path: must be a path ending with .csv, got {csv_path!r}")
        self.csv_path = csv_path
        self.quirks = {
            "final_weights_last_dropout_draw": bool(final_weights_last_dropout_draw),
            "loss_relative": bool(loss_relative),
            "l0_init_dense_result": bool(l0_init_dense_result),
            "l0_penalty_per_record": bool(l0_penalty_per_record),
            "excluded_log_initial": bool(excluded_log_initial),
            "legacy_eval_gate": bool(legacy_eval_gate),
        }

        arrays, n, k, columns = records_by_targets(estimate_matrix, "estimate_matrix")
        if self.dtype == np.float32:  # microcalibrate holds the matrix as float32
            arrays["values"] = arrays["values"].astype(np.float32).astype(np.float64)
        self._A = csr_from_arrays(arrays)
        self._arrays = arrays
        self.n_records, self.n_targets = n, k
        if target_names is not None:
            self.original_target_names = np.asarray(as_names(target_names, k, "target_names"), dtype=object)
        elif columns is not None:
            self.original_target_names = np.asarray(columns, dtype=object)
        else:
            self.original_target_names = None
        labels = None if self.original_target_names is None else list(self.original_target_names)
        self.original_targets = as_targets(targets, "targets", k, labels)
        if self.dtype == np.float32:
            self.original_targets = self.original_targets.astype(np.float32).astype(np.float64)
        self.weights = as_weights(weights, "weights", n).astype(self.dtype)
        self.original_estimate_function = estimate_function
        self.estimate_function = estimate_function
        self.original_estimate_matrix = None  # microcalibrate releases the caller's DataFrame too
        if normalization_factor is not None:
            if hasattr(normalization_factor, "detach"):
                normalization_factor = normalization_factor.detach().cpu().numpy()
            normalization_factor = as_targets(normalization_factor, "normalization_factor", None)
            if (normalization_factor < 0).any():
                raise InvalidArgument("normalization_factor: must be non-negative")
        self.normalization_factor = normalization_factor
        self.performance_df = None
        self.sparse_performance_df = None
        self.sparse_weights = None
        self.initial_log_weights = None
        self.result: CalibrationResult | None = None
        self.sparse_result: CalibrationResult | None = None
        self.excluded_targets = excluded_targets
        self.excluded_target_data: dict[str, dict[str, Any]] = {}
        self._active = np.ones(k, dtype=bool)
        self.exclude_targets()

    # --- microcalibrate's methods ---------------------------------------------------------------

    def exclude_targets(self, excluded_targets: list[str] | None = None) -> None:
        """Leave these targets (by name) out of the loss; they stay in the log and diagnostics.

        Example:
            >>> cal.exclude_targets(["income"])  # doctest: +SKIP
        """
        if excluded_targets is not None:
            self.excluded_targets = excluded_targets
        excluded = self.excluded_targets
        if isinstance(excluded, str):
            raise InvalidArgument(f"excluded_targets: expected a list of target names, got the string {excluded!r}")
        excluded = list(excluded or [])
        self._active = np.ones(self.n_targets, dtype=bool)
        self.excluded_target_data = {}
        if excluded:
            if self.original_target_names is None:
                raise InvalidArgument(
                    "excluded_targets: targets are excluded by name; pass target_names= or a DataFrame estimate_matrix"
                )
            names = list(self.original_target_names)
            unknown = [x for x in excluded if x not in names]
            if unknown:
                raise InvalidArgument(
                    f"excluded_targets: {', '.join(repr(x) for x in unknown)} not among the target names "
                    f"({', '.join(repr(x) for x in names[:5])}{', ...' if len(names) > 5 else ''})"
                )
            initial = self._A @ np.asarray(self.weights, dtype=np.float64)
            for j, name in enumerate(names):
                if name in excluded:
                    self._active[j] = False
                    self.excluded_target_data[name] = {
                        "target": self.original_targets[j],
                        "index": j,
                        "initial_estimate": initial[j],
                    }
            if not self._active.any():
                raise InvalidArgument("excluded_targets: every target is excluded; keep at least one in the loss")
            self.logger.info(f"Excluded {len(excluded)} targets from calibration: {excluded}")
        self.targets = self.original_targets[self._active]
        self.target_names = None if self.original_target_names is None else self.original_target_names[self._active]

    def _calibrated_rows(self) -> Any:
        """The rows of A (targets x records) that take part in the loss; no copy when all do."""
        return self._A if self._active.all() else self._A[self._active]

    @property
    def estimate_matrix(self) -> Any:
        """The records x calibrated-targets matrix (sparse; a copy only when targets are excluded)."""
        return self._calibrated_rows().T

    def estimate(self, weights: np.ndarray | None = None) -> Any:
        """Estimates of the calibrated targets under ``weights`` (default: the current weights).

        Returns a pandas Series indexed by target name (a numpy array without pandas).

        Example:
            >>> cal.estimate()  # doctest: +SKIP
        """
        w = self.weights if weights is None else as_weights(weights, "weights", self.n_records)
        values = (self._calibrated_rows() @ np.asarray(w, dtype=np.float64)).astype(self.dtype)
        pd = pandas_or_none()
        if pd is None:
            return values
        return pd.Series(index=self.target_names, data=values)

    def summary(self) -> Any:
        """Final-epoch estimates against targets (microcalibrate's columns).

        Example:
            >>> cal.calibrate(); cal.summary()  # doctest: +SKIP
        """
        if self.performance_df is None:
            return (
                "No calibration has been performed yet, make sure to run .calibrate() before requesting a summary."
            )
        df = self.performance_df
        if isinstance(df, dict):  # without pandas: the same columns as arrays
            last = df["epoch"] == df["epoch"].max()
            out = {"Metric": list(np.asarray(df["target_name"])[last])} if "target_name" in df else {}
            out.update({"Official target": df["target"][last], "Final estimate": df["estimate"][last]})
            out["Relative error"] = (out["Final estimate"] - out["Official target"]) / out["Official target"]
            return out
        last = df[df["epoch"] == df["epoch"].max()]
        cols = ["target_name", "target", "estimate"] if "target_name" in df.columns else ["target", "estimate"]
        out = last[cols].copy().rename(
            columns={"target_name": "Metric", "target": "Official target", "estimate": "Final estimate"}
        )
        out["Relative error"] = (out["Final estimate"] - out["Official target"]) / out["Official target"]
        return out.reset_index(drop=True)

    def assess_analytical_solution(self, use_sparse: bool | None = False) -> Any:
        """How much each added target raises the least-squares misfit (microcalibrate's method).

        For the first j calibrated targets, the minimum-norm ``w`` of ``X_j.T w = t_j`` (weights
        allowed negative) and its mean squared misfit; one row per target, in order.
        """
        X = self._calibrated_rows()
        y = self.targets
        nf = 1.0 if self.normalization_factor is None else self._nf_active()
        names = list(self.target_names) if self.target_names is not None else [f"target_{j}" for j in range(len(y))]
        rows, previous = [], None
        for j in range(1, len(y) + 1):
            Xj, yj = X[:j], y[:j]
            if use_sparse:
                from scipy.sparse.linalg import lsqr

                w = lsqr(Xj, yj)[0]
            else:
                w = np.linalg.pinv(Xj.toarray()) @ yj
            fit = Xj @ w
            loss = float(np.mean(((yj - fit) ** 2) * (nf[:j] if np.ndim(nf) else nf)))
            rows.append({"target_added": names[j - 1], "loss": loss, "delta_loss": None if previous is None else loss - previous})
            previous = loss
        pd = pandas_or_none()
        return pd.DataFrame(rows) if pd is not None else rows

    def tune_l0_hyperparameters(self, *args: Any, **kwargs: Any) -> Any:
        """Not offered: microcalibrate's optuna search has no otcal counterpart."""
        raise NotImplementedError(
            "tune_l0_hyperparameters: otcal does not ship microcalibrate's optuna search; loop over l0_lambda "
            "yourself with Calibration(..., regularize_with_l0=True)"
        )

    def evaluate_holdout_robustness(self, *args: Any, **kwargs: Any) -> Any:
        """Not offered: microcalibrate's hold-out evaluation has no otcal counterpart."""
        raise NotImplementedError(
            "evaluate_holdout_robustness: not offered by otcal; use exclude_targets() and compare result.report"
        )

    # --- the run --------------------------------------------------------------------------------

    def _nf_active(self) -> np.ndarray:
        nf = self.normalization_factor
        n_active = int(self._active.sum())
        if nf.shape[0] == n_active:
            return nf
        if nf.shape[0] == self.n_targets:
            return nf[self._active]
        raise InvalidArgument(
            f"normalization_factor: expected one value per calibrated target ({n_active}) or per target "
            f"({self.n_targets}), got {nf.shape[0]}"
        )

    def _nf_full(self) -> np.ndarray | None:
        if self.normalization_factor is None:
            return None
        full = np.ones(self.n_targets)
        full[self._active] = self._nf_active()
        return full

    def _assess_targets(self) -> None:
        """microcalibrate's checks before a run: logged warnings, like its own."""
        t = self.targets
        names = self.target_names if self.target_names is not None else [f"target_{j}" for j in range(len(t))]
        if (t < 0).any():
            self.logger.warning("Some targets are negative. This may not make sense for totals.")
        A = self._calibrated_rows()
        unit = np.asarray(A.sum(axis=1)).ravel()
        support = np.diff(A.indptr) / max(self.n_records, 1)
        for j, name in enumerate(names):
            e = unit[j] if unit[j] != 0 else 1e-4
            if unit[j] == 0:
                self.logger.warning(f"Column {name} has a zero estimate sum; using ε=0.0001 for comparison.")
            ratio = t[j] / e
            order = np.log10(abs(ratio)) if ratio != 0 else np.inf
            if order > 1:
                self.logger.warning(
                    f"Target {name} ({t[j]:.2e}) differs from initial estimate ({unit[j]:.2e}) by {order:.2f} "
                    "orders of magnitude."
                )
            if support[j] < 0.01:
                self.logger.warning(
                    f"Target {name} is supported by only {support[j]:.2%} of records in the loss matrix. This may "
                    "make calibration unstable or ineffective."
                )

    def _log(self, rows: list[dict], stage: str) -> Any:
        """microcalibrate's performance log: per tracked epoch, calibrated then excluded targets."""
        history = [r for r in rows if r["stage"] == stage]
        active = np.flatnonzero(self._active)
        excluded = [self.excluded_target_data[x]["index"] for x in (self.excluded_targets or [])
                    if x in self.excluded_target_data]
        order = np.concatenate([active, np.asarray(excluded, dtype=np.int64)]).astype(np.int64)
        per_epoch = len(order)
        epochs = np.repeat(np.array([r["epoch"] for r in history], dtype=np.int64), per_epoch)
        loss = np.repeat(np.array([r["loss"] for r in history], dtype=np.float64), per_epoch)
        t = np.tile(self.original_targets[order], len(history))
        est = (np.concatenate([np.asarray(r["estimates"])[order] for r in history])
               if history else np.zeros(0))
        err = est - t
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(t != 0, np.abs(err) / np.abs(t), np.nan)
        columns: dict[str, Any] = {"epoch": epochs, "loss": loss}
        if self.original_target_names is not None:
            columns["target_name"] = np.tile(np.asarray(self.original_target_names, dtype=object)[order], len(history))
        columns.update({"target": t, "estimate": est, "error": err, "abs_error": np.abs(err), "rel_abs_error": rel})
        return table(columns)

    def calibrate(self) -> Any:
        """Run the gradient calibration; returns microcalibrate's performance log.

        The log (a DataFrame) has one row per tracked epoch and target: epoch, loss,
        target_name, target, estimate, error, abs_error, rel_abs_error; epochs are tracked
        every ``max(1, epochs // 10)`` (every epoch up to 10) and at the last epoch, with the
        loss and estimates before that epoch's step. With ``csv_path`` it is also written there
        (completely or not at all); the L0 stage's log goes to ``*_sparse.csv`` and to
        ``sparse_performance_df``. Ctrl-C stops the run within one epoch (KeyboardInterrupt).

        Example:
            >>> log = cal.calibrate()  # doctest: +SKIP
            >>> cal.weights, cal.summary()  # doctest: +SKIP
        """
        w0 = np.ascontiguousarray(self.weights, dtype=np.float64)
        self._assess_targets()
        names = (list(self.original_target_names) if self.original_target_names is not None
                 else [f"target_{j}" for j in range(self.n_targets)])
        internal = unique_internal_names(names)
        excluded_internal = [internal[j] for j in np.flatnonzero(~self._active)]
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        nf = self._nf_full()
        options = {
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "noise_level": self.noise_level,
            "dropout_rate": self.dropout_rate,
            "seed": seed,
            "batch_size": self.batch_size,
            "normalization_factor": nf,
            "excluded_targets": excluded_internal,
            "regularize_with_l0": self.regularize_with_l0,
            "l0_lambda": self.l0_lambda,
            "init_mean": self.init_mean,
            "temperature": self.temperature,
            "sparse_learning_rate": self.sparse_learning_rate,
            "precision": self.precision,
            **self.quirks,
        }
        self.initial_log_weights = _otcal.initial_log_weights(w0, seed, self.noise_level)
        arrays = dict(self._arrays)
        arrays.update(targets=self.original_targets, names=internal, design_weights=w0, n_categorical=0,
                      margin_offsets=[0])
        ctx = get_context(self.device, self.memory_budget, context=self.context)
        E = self.epochs
        total = E * (3 if self.regularize_with_l0 else 1)
        sink = ProgressSink(self.progress, total, "Reweighting progress", "epoch", {"dense": (0, True), "l0": (E, True)})
        with sink, library_call(ctx):
            raw = _otcal.calibrate_gradient(ctx, arrays, options, sink.callback)
        self.performance_df = self._log(raw["history"], "dense")
        if self.regularize_with_l0:
            self.sparse_performance_df = self._log(raw["history"], "l0")
            dense, sparse_w = raw["dense_weights"], raw["weights"]
        else:
            dense, sparse_w = raw["weights"], None
        if self.csv_path:
            write_csv_atomically(self.performance_df, self.csv_path)
            if self.sparse_performance_df is not None:
                write_csv_atomically(self.sparse_performance_df, str(self.csv_path).replace(".csv", "_sparse.csv"))
        if self.regularize_with_l0:
            # the run's diagnostics describe the L0 weights; those of the dense weights come from
            # the library's diagnose(), so that `result` always describes `weights`
            self.sparse_result = CalibrationResult(raw, names, "gradient+l0")
            dense_raw = dict(raw, weights=dense, g=np.divide(dense, w0, out=np.zeros_like(dense), where=w0 != 0),
                             diagnostics=_otcal.diagnose(arrays, dense, excluded_internal))
            dense_raw["diagnostics"]["loss"] = next(
                (r["loss"] for r in reversed(raw["history"]) if r["stage"] == "dense"), float("nan")
            )
            self.result = CalibrationResult(dense_raw, names, "gradient")
        else:
            self.result = CalibrationResult(raw, names, "gradient")
        self.weights = np.asarray(dense).astype(self.dtype)
        self.sparse_weights = None if sparse_w is None else np.asarray(sparse_w).astype(self.dtype)
        return self.performance_df
