"""Diagnostics run best-effort: a failing one warns once and is disabled, never stopping training."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TypeVar

from coordexp.contracts.errors import ContractViolation

__all__ = ["BestEffort"]

logger = logging.getLogger("coordexp")
T = TypeVar("T")


class BestEffort:
    """Runs diagnostics so that they never block training.

    An unexpected exception warns once for that diagnostic and disables it for the rest of the run.
    Contract violations are not swallowed: in ``strict`` mode they are meant to stop the run.
    """

    def __init__(self) -> None:
        self.disabled: set[str] = set()

    def enabled(self, name: str) -> bool:
        return name not in self.disabled

    def run(self, name: str, fn: Callable[[], T]) -> T | None:
        if name in self.disabled:
            return None
        try:
            return fn()
        except ContractViolation:
            raise
        except Exception as exc:  # diagnostics are best-effort by contract
            self.disabled.add(name)
            logger.warning(
                "coordexp: diagnostic %r failed and is disabled for the rest of the run: %s: %s",
                name,
                type(exc).__name__,
                exc,
            )
            warnings.warn(
                f"coordexp diagnostic {name!r} failed ({type(exc).__name__}: {exc}); it is disabled "
                "for the rest of the run",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
