"""otcal's exceptions.

Every message names the offending argument and what to do about it. The classes subclass Python's
own exceptions so that generic handlers keep working: ``InvalidArgument`` is a ``ValueError``,
``BudgetTooSmall`` a ``MemoryError``.
"""

from __future__ import annotations

__all__ = [
    "OtcalError",
    "InvalidArgument",
    "BudgetTooSmall",
    "OutOfBudget",
    "OutOfMemory",
    "NumericalError",
    "CalibrationFailed",
    "DeviceError",
    "OtcalWarning",
]


class OtcalError(Exception):
    """Base class of every exception raised by otcal."""


class InvalidArgument(OtcalError, ValueError):
    """An argument is out of its domain: shape, dtype, NaN, a negative weight, an unknown option."""


class BudgetTooSmall(OtcalError, MemoryError):
    """The memory budget cannot hold the smallest tile of the operation.

    Raised before anything is allocated. ``required_bytes`` is a budget with which the same call
    succeeds (pass it as ``memory_budget=``).
    """

    def __init__(self, message: str, required_bytes: int = 0):
        super().__init__(message)
        self.required_bytes = int(required_bytes)


class OutOfBudget(OtcalError, MemoryError):
    """An allocation would have pushed live bytes past the budget."""


class OutOfMemory(OtcalError, MemoryError):
    """The allocator itself failed (host or device memory exhausted)."""


class NumericalError(OtcalError, ArithmeticError):
    """NaN or Inf found by a validity check, or a diverging iteration."""


class CalibrationFailed(OtcalError, RuntimeError):
    """An exact calibrator did not meet its targets (pass ``force=True`` to get its best iterate)."""


class DeviceError(OtcalError, RuntimeError):
    """A CUDA call failed, or CUDA was asked for where the build or the machine has none."""


class OtcalWarning(UserWarning):
    """A warning from the library: non-convergence, low-support targets, floored weights, ..."""
