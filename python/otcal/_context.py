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

# The units of the C++ parse_bytes (src/core/memory.cpp), spelled as it spells them.
_UNITS = {"": 1, "B": 1, "K": 1024, "k": 1024, "KiB": 1024, "M": 1024**2, "MiB": 1024**2, "G": 1024**3,
          "GiB": 1024**3, "T": 1024**4, "TiB": 1024**4, "KB": 1000, "kB": 1000, "MB": 1000**2, "GB": 1000**3,
          "TB": 1000**4}
# Digits with at most one '.', an optional exponent, then (after optional spaces) a unit: no sign,
# hex, inf, nan or surrounding spaces, as in the C++ parse_bytes.
_SIZE = re.compile(r"([0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]+)?) *([A-Za-z]*)")
_HINT = "write bytes or a number with a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), e.g. '512MiB' or '8GiB'"
_cache: dict[tuple[str, int, int], Any] = {}


def _checked_bytes(v: int, value: Any, name: str) -> int:
    if v < 1:
        raise InvalidArgument(f"{name}: {value!r} is less than 1 byte; pass None for the default budget")
    if v >= 2**64:
        raise InvalidArgument(f"{name}: {value!r} does not fit in 64 bits of bytes")
    return v


def parse_bytes(value: Any, name: str = "memory_budget") -> int:
    """Bytes from an int or a string with a unit ('64MiB', '8 GB', '1e9'); None: 0, the default budget.

    As strict as the command line's --memory-budget: whole bytes from 1 to 2**64 - 1; strings are
    digits with an optional fraction, exponent and unit (B, K/KiB, M/MiB, G/GiB, T/TiB binary, KB,
    MB, GB, TB decimal) and nothing else (no sign, hex, inf, nan or surrounding spaces). Raises
    InvalidArgument naming ``name``.
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}: expected a number of bytes or a string like '512MiB', got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, float)):
        return _checked_bytes(int(value.__index__()), value, name)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise InvalidArgument(f"{name}: expected a whole number of bytes, got {value!r}")
        return _checked_bytes(int(value), value, name)
    if not isinstance(value, str):
        raise InvalidArgument(f"{name}: expected a number of bytes or a string like '512MiB', got {type(value).__name__}")
    m = _SIZE.fullmatch(value)
    number = m.group(1) if m else ""
    if not m or not any(c.isdigit() for c in number.split("e")[0].split("E")[0]):
        raise InvalidArgument(f"{name}: {value!r} is not a size: {_HINT}")
    unit = m.group(2)
    if unit not in _UNITS:
        raise InvalidArgument(f"{name}: {value!r} has an unknown unit {unit!r}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB")
    if unit in ("", "B") and number.isdigit():
        return _checked_bytes(int(number), value, name)  # plain integers exactly, as in C++
    v = float(number) * _UNITS[unit]
    if v != v or v in (float("inf"), float("-inf")) or v >= 2.0**64:
        raise InvalidArgument(f"{name}: {value!r} does not fit in 64 bits of bytes")
    if v < 1:
        raise InvalidArgument(f"{name}: {value!r} is less than 1 byte; {_HINT}")
    if v != int(v):
        raise InvalidArgument(f"{name}: {value!r} is {v} bytes, not a whole number: give whole bytes or a unit that makes them whole")
    return int(v)


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
