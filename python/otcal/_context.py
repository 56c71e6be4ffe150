"""Contexts: which device runs an operation and the byte budget its workspaces must fit.

Every public function takes ``device=`` ("auto", "cpu", "cuda", "cuda:N") and ``memory_budget=``
(bytes, or a string such as "512MiB"), or a ready ``context=``. Contexts are cached per
(device, budget, threads), so repeated calls share one device setup.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Any, Iterator

from . import _otcal
from .errors import BudgetTooSmall, InvalidArgument, OtcalError, OtcalWarning

__all__ = ["Context", "get_context", "library_call", "parse_bytes", "python_terms", "reissue_warnings"]

Context = _otcal.Context

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_cache: dict[tuple[str, int, int], Any] = {}


def parse_bytes(value: Any, name: str = "memory_budget") -> int:
    """Bytes from an int or a string with a unit ('64MiB', '8 GB', '1e9'). None or 0: the default."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}: expected a number of bytes or a string like '512MiB', got {value!r}")
    if isinstance(value, (int,)) or (hasattr(value, "__index__") and not isinstance(value, float)):
        v = int(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise InvalidArgument(f"{name}: expected a whole number of bytes, got {value!r}")
        v = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise InvalidArgument(
                f"{name}: cannot read {value!r}; write a number of bytes with an optional unit "
                "(B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), e.g. '512MiB'"
            )
        v = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if v != int(v):
            raise InvalidArgument(f"{name}: {value!r} is not a whole number of bytes")
        v = int(v)
    else:
        raise InvalidArgument(f"{name}: expected a number of bytes or a string like '512MiB', got {type(value).__name__}")
    if v < 0:
        raise InvalidArgument(f"{name}: must be positive, got {value!r}")
    return v


def get_context(device: str = "auto", memory_budget: Any = None, threads: int = 0, context: Any = None) -> Any:
    """The cached context for these settings, or ``context`` when one is given."""
    if context is not None:
        if not isinstance(context, Context):
            raise InvalidArgument(f"context: expected an otcal.Context, got {type(context).__name__}")
        return context
    if not isinstance(device, str):
        raise InvalidArgument(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not isinstance(threads, int) or threads < 0:
        raise InvalidArgument(f"threads: expected a non-negative integer, got {threads!r}")
    key = (device, parse_bytes(memory_budget), threads)
    ctx = _cache.get(key)
    if ctx is None:
        ctx = Context(device=key[0], memory_budget=key[1], threads=key[2])
        _cache[key] = ctx
    return ctx


_CLI_FLAG = re.compile(r"--([a-z][a-z-]*)")


def python_terms(message: str) -> str:
    """The library words its advice for the command line (--max-iterations); here it is arguments."""
    return _CLI_FLAG.sub(lambda match: match.group(1).replace("-", "_"), message)


def reissue_warnings(ctx: Any, stacklevel: int = 3) -> list[str]:
    """Re-issue the library's warnings of the last call as OtcalWarning; returns them."""
    messages = [python_terms(m) for m in ctx.drain_warnings()]
    for message in messages:
        warnings.warn(message, OtcalWarning, stacklevel=stacklevel)
    return messages


@contextlib.contextmanager
def library_call(ctx: Any) -> Iterator[None]:
    """Around a call into the library: re-issues its warnings and words its errors in Python's terms.

    stacklevel 5 points the warnings at the public function's caller: warnings.warn <-
    reissue_warnings <- here <- contextlib's __exit__ <- the public function <- its caller.
    """
    try:
        yield
    except BudgetTooSmall as exc:
        raise BudgetTooSmall(
            f"memory_budget: {python_terms(str(exc))} (pass memory_budget={exc.required_bytes})", exc.required_bytes
        ) from None
    except OtcalError as exc:
        message = python_terms(str(exc))
        if message == str(exc):
            raise
        raise type(exc)(message) from None
    finally:
        reissue_warnings(ctx, stacklevel=5)
