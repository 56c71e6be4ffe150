"""Progress reporting shared by the solvers and calibrators.

``progress`` arguments accept:
- ``None`` (default): a tqdm bar when tqdm is installed and stderr is a terminal or the code runs in
  a notebook; nothing otherwise;
- ``False``: nothing;
- ``True``: a tqdm bar (plain lines on stderr when tqdm is not installed);
- a callable: called with a dict (``{"iteration": ..., "error": ...}`` for Sinkhorn,
  ``{"epoch": ..., "loss": ...}`` for calibration) at every check interval. It may raise to stop
  the operation; the exception propagates to the caller.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["ProgressReporter"]


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class ProgressReporter:
    """A progress sink for one operation of at most ``total`` steps (``unit`` names them)."""

    def __init__(self, progress: Any, total: int, desc: str, unit: str):
        self._callback: Callable[[dict], Any] | None = None
        self._bar = None
        self._plain = False
        self._done = 0
        if callable(progress) and not isinstance(progress, bool):
            self._callback = progress
            return
        if progress is False:
            return
        if progress is not None and progress is not True:
            from .errors import InvalidArgument

            raise InvalidArgument(f"progress: expected None, True, False or a callable, got {progress!r}")
        tqdm = _tqdm()
        interactive = _in_notebook() or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        if tqdm is not None and (progress is True or interactive):
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
        elif progress is True:
            self._plain = True
        self._desc = desc

    @property
    def active(self) -> bool:
        return self._callback is not None or self._bar is not None or self._plain

    def update(self, done: int, info: dict) -> None:
        if self._callback is not None:
            self._callback(info)
        elif self._bar is not None:
            self._bar.update(max(0, done - self._done))
            self._bar.set_postfix({k: v for k, v in info.items() if k not in ("iteration", "epoch")}, refresh=False)
        elif self._plain:
            fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            print(f"{self._desc}: {fields}", file=sys.stderr, flush=True)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
