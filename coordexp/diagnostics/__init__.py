"""Diagnostics that must neither stop training nor flood its log: :mod:`.warn_once` (one warning
per key) and :mod:`.best_effort` (a failing diagnostic is disabled, never fatal; imported from its
module, so that this package stays free of torch)."""

from coordexp.diagnostics.warn_once import WarnOnce

__all__ = ["WarnOnce"]
