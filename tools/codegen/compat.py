"""Compatibility of the metric catalog with its committed, released baseline."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .layout import BASELINE
from .validate import SchemaError
from .views import metric_views


def catalog_snapshot(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What the baseline records of each key: owner, stability, aggregation kind, alias target."""
    keys = {
        m.key: {
            "owner": m.owner,
            "stability": m.stability,
            "aggregation": m.aggregation,
            "renamed_to": m.renamed_to,
        }
        for m in metric_views(metrics)
    }
    return {"keys": dict(sorted(keys.items()))}


def check_compatibility(metrics: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """Errors for keys of the baseline that the catalog lost without a deprecation trail.

    A key may leave the catalog only through ``x-coordexp-removed`` (with its note and, when renamed,
    ``renamed_to``), after having been deprecated in a released baseline; a renamed key must stay
    as a deprecated alias (``deprecation.renamed_to``) first. Owners may not change silently either,
    nor aggregations: a logged value that combines differently is not comparable with older runs,
    so a new kind needs ``aggregation.changed_from`` (the baseline's kind) and a note.
    """
    props = metrics["properties"]
    removed = metrics.get("x-coordexp-removed", {})
    errors = []
    for key, old in baseline.get("keys", {}).items():
        if key in props:
            owner = props[key]["x-coordexp"]["owner"]
            if owner != old["owner"]:
                errors.append(f"{key!r}: owner changed from {old['owner']!r} to {owner!r}")
            agg = props[key]["x-coordexp"]["aggregation"]
            was = old.get("aggregation")  # absent in baselines older than the aggregation field
            if was is not None and agg["kind"] != was and agg.get("changed_from") != was:
                errors.append(
                    f"{key!r}: aggregation changed from {was!r} to {agg['kind']!r} without a declaration "
                    f"(x-coordexp.aggregation.changed_from: {was!r} and a note)"
                )
            continue
        if key not in removed:
            errors.append(
                f"{key!r} was removed or renamed without a deprecation entry: keep it as a deprecated alias "
                f"(x-coordexp.deprecation.renamed_to) or list it under x-coordexp-removed with a note"
            )
        elif old["stability"] != "deprecated":
            errors.append(f"{key!r} was removed without first being deprecated in the baseline")
    return errors


def load_baseline(path: Path = BASELINE) -> dict[str, Any]:
    if not path.is_file():
        raise SchemaError(f"{path}: missing catalog baseline (create it with --update-baseline)")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
