"""Questions about the metric catalog, answered from the generated tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from coordexp.generated.metric_catalog import (
    ALL_KEYS,
    CONDITIONS,
    COORDEXP_KEYS,
    FRAMEWORK_KEYS,
    METRIC_SPECS,
    MetricSpec,
)

EVAL_PREFIX = "eval_"
KeyClass = Literal["coordexp", "framework", "unknown"]


def spec_of(key: str) -> MetricSpec | None:
    """The catalog entry of a train-mode key, or None."""
    return METRIC_SPECS.get(key)


def strip_eval_prefix(key: str) -> tuple[str, bool]:
    """``eval_coord_diag/loss`` -> (``coord_diag/loss``, True); framework eval keys stay whole."""
    if key in ALL_KEYS:
        return key, False
    if key.startswith(EVAL_PREFIX) and key[len(EVAL_PREFIX) :] in ALL_KEYS:
        return key[len(EVAL_PREFIX) :], True
    return key, False


def classify_log_key(key: str) -> tuple[KeyClass, str]:
    """Classify a key found in a log: whose it is, and its train-mode name."""
    base, _ = strip_eval_prefix(key)
    if base in COORDEXP_KEYS:
        return "coordexp", base
    if base in FRAMEWORK_KEYS:
        return "framework", base
    return "unknown", base


def keys_written_under(conditions: Iterable[str]) -> frozenset[str]:
    """The package keys whose ``requires`` all hold under ``conditions``.

    This is the catalog's answer to "which keys appear in this cell of the feature matrix".
    """
    held = frozenset(conditions)
    unknown = held - CONDITIONS.keys()
    if unknown:
        raise ValueError(f"unknown conditions {sorted(unknown)}; known: {sorted(CONDITIONS)}")
    return frozenset(k for k in COORDEXP_KEYS if METRIC_SPECS[k].requires <= held)
