"""Warn-once bookkeeping shared by the monitor's parts.

The monitor is a diagnostic: a failure that repeats every step must not flood the training log,
but the first occurrence of each failure kind must be visible. One ``WarnOnce`` per monitor
instance keeps the set of kinds already reported.
"""

from __future__ import annotations

import logging
from typing import Final

LOGGER: Final = logging.getLogger("coordexp.monitor")


class WarnOnce:
    """Log a warning the first time each ``key`` is seen, and stay silent afterwards."""

    def __init__(self, logger: logging.Logger = LOGGER) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def __call__(self, key: str, msg: str, *args: object) -> bool:
        """Warn with ``msg % args`` unless ``key`` warned before; return whether it warned."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._logger.warning(msg, *args)
        return True

    def seen(self, key: str) -> bool:
        """Whether ``key`` has already warned (tests and callers that want to avoid extra work)."""
        return key in self._seen
