"""otcal: entropic optimal transport and survey-weight calibration in bounded memory.

Optimal transport with OTT-JAX's names (``PointCloud``, ``sinkhorn``, outputs with ``f``, ``g``,
``apply``, ``marginal``) and moscot's sparsification (``sparsify`` of a solution, or of foreign
potentials); calibration with microcalibrate's ``Calibration``, R ``survey``'s calibrators
(``calibrate``) and microplex's constraint builder (``build_constraints``). See docs/python.md.
"""

from __future__ import annotations

from . import _otcal
from ._context import Context, get_context
from .errors import (
    BudgetTooSmall,
    CalibrationFailed,
    DeviceError,
    InvalidArgument,
    NumericalError,
    OtcalError,
    OtcalWarning,
    OutOfBudget,
    OutOfMemory,
)
from .ot import *  # noqa: F401,F403
from .ot import __all__ as _ot_all
from .calibration import *  # noqa: F401,F403
from .calibration import __all__ as _calibration_all

__version__ = "0.1.0"


def system_info() -> dict:
    """What the build and the machine offer: CUDA runtime, devices, CPU threads, host memory."""
    return _otcal.system_info()


__all__ = [
    "Context",
    "get_context",
    "system_info",
    "OtcalError",
    "InvalidArgument",
    "BudgetTooSmall",
    "OutOfBudget",
    "OutOfMemory",
    "NumericalError",
    "CalibrationFailed",
    "DeviceError",
    "OtcalWarning",
    *_ot_all,
    *_calibration_all,
]
