"""Turning the caller's arrays into what the compiled core reads, copying only when needed.

The core reads C-contiguous float32/float64 arrays in place, on the host or on a CUDA device.
numpy arrays that already are so are passed as they are (no copy). Anything else on the host
(other dtypes, Fortran order, strided views, lists, pandas objects) is converted with
``numpy.ascontiguousarray``: one copy, documented in docs/python.md. CUDA arrays of CuPy, PyTorch
and JAX are passed through DLPack, in place; they must already be contiguous float32/float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidArgument

__all__ = ["as_matrix", "as_vector", "framework_of", "is_device_array", "to_framework"]


def framework_of(a: Any) -> str:
    """'numpy', 'cupy', 'torch', 'jax' or 'other'."""
    mod = type(a).__module__.split(".")[0]
    if isinstance(a, np.ndarray):
        return "numpy"
    if mod in ("cupy", "torch"):
        return mod
    if mod in ("jax", "jaxlib"):
        return "jax"
    return "other"


def is_device_array(a: Any) -> bool:
    """True for an array that lives on a CUDA device (DLPack device type 2)."""
    if isinstance(a, np.ndarray) or not hasattr(a, "__dlpack_device__"):
        return False
    try:
        dev_type, _ = a.__dlpack_device__()
    except Exception:  # noqa: BLE001 - a broken protocol means "not a device array"
        return False
    return int(dev_type) == 2


def _check_numeric(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "fiub":
        raise InvalidArgument(
            f"{name}: expected numbers, got an array of dtype {arr.dtype}; "
            "convert it with .astype(numpy.float64)"
        )


def _host_array(a: Any, name: str, dtype: Any | None) -> np.ndarray:
    if isinstance(a, (str, bytes)):
        raise InvalidArgument(f"{name}: expected an array of numbers, got a string")
    if hasattr(a, "toarray") and hasattr(a, "nnz"):
        raise InvalidArgument(f"{name}: expected a dense array, got a sparse matrix; use {name}.toarray()")
    try:
        arr = np.asarray(a)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise InvalidArgument(f"{name}: cannot be read as an array of numbers ({exc})") from None
    if arr.dtype == object:
        raise InvalidArgument(f"{name}: expected an array of numbers, got objects (ragged or mixed input)")
    _check_numeric(arr, name)
    if dtype is None:
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(arr, dtype=dtype)


def as_matrix(a: Any, name: str, dtype: Any | None = None) -> Any:
    """A 2-D C-contiguous float32/float64 array the core reads in place.

    ``dtype`` None keeps float32/float64 and converts the rest to float64.
    """
    if is_device_array(a):
        shape = tuple(a.shape)
        if len(shape) != 2:
            raise InvalidArgument(f"{name}: expected a 2-D array (points x dimensions), got shape {shape}")
        return a
    arr = _host_array(a, name, dtype)
    if arr.ndim != 2:
        raise InvalidArgument(
            f"{name}: expected a 2-D array (points x dimensions), got shape {arr.shape}"
            + ("; use x.reshape(-1, 1) for one dimension" if arr.ndim == 1 else "")
        )
    return arr


def as_vector(a: Any, name: str, dtype: Any | None = None, length: int | None = None) -> Any:
    """A 1-D contiguous float32/float64 array; ``length`` checks its size."""
    if is_device_array(a):
        shape = tuple(a.shape)
        if len(shape) != 1:
            raise InvalidArgument(f"{name}: expected a 1-D array, got shape {shape}")
        arr = a
    else:
        arr = _host_array(a, name, dtype)
        if arr.ndim != 1:
            raise InvalidArgument(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise InvalidArgument(f"{name}: expected length {length}, got {arr.shape[0]}")
    return arr


def to_framework(values: np.ndarray, like: Any) -> Any:
    """``values`` (a host numpy array) as an array of the framework and device of ``like``."""
    fw = framework_of(like)
    if fw == "numpy" or fw == "other" or not is_device_array(like):
        return values
    if fw == "cupy":
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.asarray(values)
    if fw == "torch":
        import torch

        return torch.as_tensor(values, device=like.device)
    if fw == "jax":
        import jax

        return jax.device_put(values, list(like.devices())[0])
    return values
