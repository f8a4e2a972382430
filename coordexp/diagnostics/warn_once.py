"""Warn once per kind of failure.

A failure that repeats every step (a broken enricher, a misaligned batch, an unwritable dump folder)
must not flood the training log, but its first occurrence must be visible. A :class:`WarnOnce`
remembers which kinds (any hashable ident) have warned; its owner decides the scope (one instance
per collator, pipeline or monitor, or one per process for the contract guards). The registry is
thread-safe: a dataloader worker thread and the training loop may both report the same kind, and
exactly one of them warns.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Hashable

__all__ = ["WarnOnce"]


class WarnOnce:
    """The idents that have warned; each ident warns at most once until :meth:`reset`."""

    def __init__(self) -> None:
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    def first(self, ident: Hashable) -> bool:
        """Record ``ident``; true only for the first call with it (the caller then reports)."""
        with self._lock:
            if ident in self._seen:
                return False
            self._seen.add(ident)
            return True

    def warn(
        self,
        ident: Hashable,
        message: str,
        category: type[Warning] = UserWarning,
        *,
        stacklevel: int = 1,
    ) -> bool:
        """``warnings.warn(message, category)`` the first time ``ident`` is seen; return whether it warned.

        ``stacklevel`` counts from the caller, as if it called ``warnings.warn`` itself.
        """
        if not self.first(ident):
            return False
        warnings.warn(message, category, stacklevel=stacklevel + 1)
        return True

    def log(self, ident: Hashable, logger: logging.Logger, msg: str, *args: object) -> bool:
        """``logger.warning(msg, *args)`` the first time ``ident`` is seen; return whether it logged."""
        if not self.first(ident):
            return False
        logger.warning(msg, *args)
        return True

    def seen(self, ident: Hashable) -> bool:
        """Whether ``ident`` has already warned (callers that want to skip work once it has)."""
        with self._lock:
            return ident in self._seen

    def reset(self) -> None:
        """Forget every ident (tests and new runs)."""
        with self._lock:
            self._seen.clear()
