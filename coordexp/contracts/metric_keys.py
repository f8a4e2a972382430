"""Runtime guard for metric writes: only declared, package-owned, finite train keys."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from coordexp.contracts.catalog import EVAL_PREFIX, spec_of
from coordexp.contracts.errors import ContractViolation
from coordexp.contracts.modes import resolve_mode, violate
from coordexp.rows.fields import GENERIC_LABELS

# Small slack for fractions computed in float32 (e.g. 1.0000001).
_RANGE_SLACK = 1e-5


def find_dataset_bucket(key: str, dataset_labels: Iterable[str]) -> str | None:
    """The dataset label that ``key`` carries as a path segment, prefix or suffix, if any.

    ``lvis/token_acc``, ``token_acc/lvis``, ``token_acc_lvis`` and ``lvis_token_acc`` all carry
    ``lvis``. Matching is case-insensitive and on whole words (``_`` or ``/`` delimited).
    """
    lowered = key.lower()
    for label in sorted({str(x).strip().lower() for x in dataset_labels} - GENERIC_LABELS):
        pattern = r"(^|[/_.\-])" + re.escape(label) + r"($|[/_.\-])"
        if re.search(pattern, lowered):
            return label
    return None


def metric_key_violation(
    key: str, value: object = None, *, dataset_labels: Iterable[str] = ()
) -> ContractViolation | None:
    """The first contract rule that writing ``key`` (= ``value``) breaks, or None."""
    labels = tuple(dataset_labels)
    spec = spec_of(key)
    if spec is None:
        bucket = find_dataset_bucket(key, labels)
        if bucket is not None:
            return ContractViolation(
                key,
                "per_dataset_bucket",
                f"the key carries dataset label {bucket!r}: per-dataset buckets are forbidden by the "
                "contract (metrics are aggregate-only)",
            )
        if key.startswith(EVAL_PREFIX) and spec_of(key[len(EVAL_PREFIX) :]) is not None:
            return ContractViolation(
                key, "eval_prefix", "write the train-mode name; ms-swift adds 'eval_' in eval mode"
            )
        return ContractViolation(
            key, "undeclared", "not a catalog key: declare it in schemas/metrics.schema.json and regen"
        )
    if spec.owner != "coordexp":
        return ContractViolation(
            key, "framework_owned", f"{key!r} is written by the {spec.owner}, not by coordexp"
        )
    return None if value is None else metric_value_violation(key, value)


def metric_value_violation(key: str, value: object) -> ContractViolation | None:
    """The first rule ``value`` breaks for catalog key ``key`` (a number, finite, in its range), or
    None; the key's owner is not checked (``metric_key_violation`` does that too)."""
    spec = spec_of(key)
    if spec is None:
        raise KeyError(key)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ContractViolation(key, "not_a_number", f"value {value!r} is not a number")
    if not math.isfinite(number):
        return ContractViolation(key, "non_finite", f"value {number} is not finite")
    if spec.minimum is not None and number < spec.minimum - _RANGE_SLACK:
        return ContractViolation(key, "out_of_range", f"value {number} is below the minimum {spec.minimum}")
    if spec.maximum is not None and number > spec.maximum + _RANGE_SLACK:
        return ContractViolation(key, "out_of_range", f"value {number} is above the maximum {spec.maximum}")
    return None


def check_metric_key(
    key: str,
    value: object = None,
    *,
    dataset_labels: Iterable[str] = (),
    mode: str | None = None,
) -> bool:
    """Check one metric write against the catalog.

    Returns True when the write may go ahead. In ``strict`` mode a violation raises
    :class:`ContractViolation`; in ``warn`` mode it warns once per key and rule and returns False
    (drop the write); in ``off`` mode nothing is checked.
    """
    resolved = resolve_mode(mode)
    if resolved == "off":
        return True
    violation = metric_key_violation(key, value, dataset_labels=dataset_labels)
    if violation is None:
        return True
    violate(violation, resolved)
    return False
