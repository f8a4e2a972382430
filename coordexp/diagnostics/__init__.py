"""Diagnostics that must neither stop training nor flood its log (see :mod:`.warn_once`)."""

from coordexp.diagnostics.warn_once import WarnOnce

__all__ = ["WarnOnce"]
