"""Checking and converting calibration inputs (private to otcal.calibration).

Every check raises ``InvalidArgument`` naming the argument and what to do, before any library
work starts. Matrices arrive in R survey's and microcalibrate's orientation (records x targets);
the library holds the transpose (targets x records, CSR), which is the CSC layout of the caller's
matrix, so the conversion is one O(nnz) pass.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .errors import InvalidArgument

__all__ = [
    "as_names",
    "as_targets",
    "as_weights",
    "check_bounds",
    "check_integer",
    "check_pair",
    "check_positive",
    "csr_from_arrays",
    "records_by_targets",
    "unique_internal_names",
]

_INT32_MAX = 2**31 - 1


def _is_sparse(a: Any) -> bool:
    return sp.issparse(a)


def _is_dataframe(a: Any) -> bool:
    return type(a).__name__ == "DataFrame" and hasattr(a, "columns") and hasattr(a, "to_numpy")


def _dense_vector(a: Any, name: str) -> np.ndarray:
    """A 1-D float64 copy-if-needed of numbers; sparse vectors and pandas objects accepted."""
    if isinstance(a, (str, bytes)):
        raise InvalidArgument(f"{name}: expected an array of numbers, got a string")
    if _is_sparse(a):
        if len(a.shape) == 2 and 1 not in a.shape:
            raise InvalidArgument(f"{name}: expected a vector, got a sparse matrix of shape {a.shape}")
        a = a.toarray().ravel()
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor, as microcalibrate takes them
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise InvalidArgument(f"{name}: cannot be read as an array of numbers ({exc})") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidArgument(
                f"{name}: expected numbers, got objects such as {arr.flat[0]!r}; convert them to numbers first"
            ) from None
    if arr.dtype.kind not in "fiub":
        raise InvalidArgument(
            f"{name}: expected numbers, got an array of dtype {arr.dtype}"
            + (" (strings)" if arr.dtype.kind in "US" else "")
            + "; convert it with .astype(numpy.float64)"
        )
    if arr.ndim != 1:
        raise InvalidArgument(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _positions(mask: np.ndarray, labels: Sequence[str] | None = None, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = [labels[i] if labels is not None else str(int(i)) for i in idx[:limit]]
    more = f", ... ({idx.size} in all)" if idx.size > limit else ""
    return ", ".join(shown) + more


def as_weights(a: Any, name: str, length: int | None) -> np.ndarray:
    """Non-negative finite weights (float64), one per record."""
    w = _dense_vector(a, name)
    if length is not None and w.shape[0] != length:
        raise InvalidArgument(f"{name}: expected one weight per record ({length}), got {w.shape[0]}")
    bad = ~np.isfinite(w)
    if bad.any():
        raise InvalidArgument(f"{name}: must be finite; records {_positions(bad)} are NaN or infinite")
    neg = w < 0
    if neg.any():
        raise InvalidArgument(
            f"{name}: must be non-negative; records {_positions(neg)} have negative weights "
            f"(smallest {w[neg].min():.6g})"
        )
    return w


def as_targets(a: Any, name: str, length: int | None, labels: Sequence[str] | None = None) -> np.ndarray:
    """Finite targets (float64), one per constraint."""
    t = _dense_vector(a, name)
    if length is not None and t.shape[0] != length:
        raise InvalidArgument(
            f"{name}: expected one target per column of the estimate matrix ({length}), got {t.shape[0]}"
        )
    if np.isnan(t).any():
        raise InvalidArgument(f"{name}: contains NaN (targets {_positions(np.isnan(t), labels)}); drop or fill them")
    if np.isinf(t).any():
        raise InvalidArgument(f"{name}: contains infinite values (targets {_positions(np.isinf(t), labels)})")
    return t


def as_names(names: Any, length: int, name: str = "names") -> list[str]:
    if isinstance(names, (str, bytes)):
        raise InvalidArgument(f"{name}: expected a list of {length} names, got a single string")
    try:
        out = [str(x) for x in list(names)]
    except TypeError:
        raise InvalidArgument(f"{name}: expected a list of {length} names, got {type(names).__name__}") from None
    if len(out) != length:
        raise InvalidArgument(f"{name}: expected {length} names (one per target), got {len(out)}")
    return out


def unique_internal_names(names: list[str]) -> list[str]:
    """The names the library sees: the caller's when unique, else made unique with '#position'."""
    if len(set(names)) == len(names):
        return names
    seen: dict[str, int] = {}
    for x in names:
        seen[x] = seen.get(x, 0) + 1
    return [x if seen[x] == 1 else f"{x}#{j}" for j, x in enumerate(names)]


def check_pair(value: Any, name: str, example: str) -> tuple[float, float]:
    """A (lower, upper) pair of numbers, lower <= upper, no NaN."""
    try:
        lower, upper = value
        lower, upper = float(lower), float(upper)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: expected a pair (lower, upper) of numbers, e.g. {example}; got {value!r}") from None
    if math.isnan(lower) or math.isnan(upper):
        raise InvalidArgument(f"{name}: NaN is not a bound; use -inf or inf for no bound")
    if lower > upper:
        raise InvalidArgument(f"{name}: lower ({lower:g}) is above upper ({upper:g}); pass (lower, upper)")
    return lower, upper


def check_bounds(bounds: Any) -> tuple[float, float]:
    """R survey's bounds on g = w/d: lower <= 1 <= upper."""
    lower, upper = check_pair(bounds, "bounds", "(0.5, 2.0)")
    if not (lower <= 1 <= upper):
        raise InvalidArgument(
            f"bounds: bounds apply to g = calibrated / design weight and must satisfy lower <= 1 <= upper; "
            f"got ({lower:g}, {upper:g})"
        )
    return lower, upper


def check_integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidArgument(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (float(value) > 0) or math.isinf(value):
        raise InvalidArgument(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def _csr_arrays(csc: sp.spmatrix | sp.sparray, n: int, k: int) -> dict:
    """targets x records CSR arrays from the records x targets matrix in CSC layout."""
    indptr = np.ascontiguousarray(csc.indptr, dtype=np.int64)
    wide = n > _INT32_MAX
    indices = np.ascontiguousarray(csc.indices, dtype=np.int64 if wide else np.int32)
    values = np.ascontiguousarray(csc.data, dtype=np.float64)
    return {"shape": (k, n), "indptr": indptr, "indices": indices, "values": values}


def csr_from_arrays(arrays: dict) -> Any:
    """``scipy.sparse.csr_array`` (targets x records) over the arrays, without copying the indices.

    SciPy gives indices and offsets one integer type; with int64 offsets it would widen the int32
    indices (a copy of nnz entries), so the offsets (k + 1 entries) are narrowed instead.
    """
    k, n = arrays["shape"]
    indptr, indices = arrays["indptr"], arrays["indices"]
    if indices.dtype == np.int32 and indptr[-1] <= _INT32_MAX:
        indptr = indptr.astype(np.int32)
    return sp.csr_array((arrays["values"], indices, indptr), shape=(k, n), copy=False)


def records_by_targets(X: Any, name: str = "X") -> tuple[dict, int, int, list[str] | None]:
    """CSR arrays of Xᵀ from a records x targets matrix (SciPy sparse, numpy, DataFrame, lists).

    Returns (arrays, n_records, n_targets, column names or None).
    """
    columns = None
    if _is_dataframe(X):
        columns = [str(c) for c in X.columns]
        dtypes = list(X.dtypes)
        if dtypes and all(type(dt).__name__ == "SparseDtype" for dt in dtypes):
            X = X.sparse.to_coo()
        else:
            try:
                X = X.to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(
                    f"{name}: every column of the DataFrame must hold numbers ({exc}); encode categories as 0/1 "
                    "columns or use otcal.build_constraints"
                ) from None
    if _is_sparse(X):
        if len(X.shape) != 2:
            raise InvalidArgument(f"{name}: expected a 2-D matrix (records x targets), got shape {X.shape}")
        n, k = X.shape
        if X.dtype.kind not in "fiub":
            raise InvalidArgument(f"{name}: expected numbers, got a sparse matrix of dtype {X.dtype}")
        csc = sp.csc_array(X) if not (hasattr(X, "format") and X.format == "csc") else X
        if not csc.has_canonical_format or (csc.data == 0).any() or csc.dtype != np.float64:
            csc = sp.csc_array(csc, dtype=np.float64, copy=True)
            csc.sum_duplicates()
            csc.eliminate_zeros()
            csc.sort_indices()
        if not np.isfinite(csc.data).all():
            raise InvalidArgument(f"{name}: contains NaN or infinite entries; fill or drop them first")
        return _csr_arrays(csc, n, k), n, k, columns
    if isinstance(X, (str, bytes)):
        raise InvalidArgument(f"{name}: expected a matrix (records x targets), got a string")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001
        raise InvalidArgument(f"{name}: cannot be read as a matrix of numbers ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise InvalidArgument(
            f"{name}: expected a matrix of numbers, got dtype {arr.dtype}; encode categories as 0/1 columns or "
            "use otcal.build_constraints"
        )
    if arr.ndim != 2:
        hint = "; use X.reshape(-1, 1) for a single target" if arr.ndim == 1 else ""
        raise InvalidArgument(
            f"{name}: expected a 2-D matrix (records x targets), got {arr.ndim} dimensions {arr.shape}{hint}"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise InvalidArgument(f"{name}: contains NaN or infinite entries; fill or drop them first")
    n, k = arr.shape
    return _csr_arrays(sp.csc_array(arr), n, k), n, k, columns
