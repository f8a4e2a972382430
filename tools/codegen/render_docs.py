"""The key tables of docs/TRAINING_METRICS_AND_LOSSES.md, spliced between their GENERATED markers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .layout import DOC
from .templating import render
from .validate import SchemaError
from .views import MetricView, extra_views, metric_views

BEGIN = "<!-- BEGIN GENERATED: {name} (tools/regen.py; edit schemas/, not this table) -->"
END = "<!-- END GENERATED: {name} -->"
BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def range_text(m: MetricView) -> str:
    lo, hi = m.minimum, m.maximum
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f">= {lo:g}"
    if lo is None:
        return f"<= {hi:g}"
    return f"[{lo:g}, {hi:g}]"


def aggregation_text(m: MetricView) -> str:
    if m.aggregation == "ratio":
        return f"ratio: Σ {m.numerator} / Σ {m.denominator}"
    return m.aggregation


def config_rows(schema: Mapping[str, Any], defs: Mapping[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """One row per leaf setting, depth first through ``$ref``-ed sections (``custom.<section>.<key>``)."""
    rows = []
    for name, spec in schema["properties"].items():
        key = f"{prefix}.{name}" if prefix else name
        if "$ref" in spec:
            rows.extend(config_rows(defs[spec["$ref"].rsplit("/", 1)[-1]], defs, key))
            continue
        typ = spec.get("type", "")
        typ = " \\| ".join(typ) if isinstance(typ, list) else typ
        if "enum" in spec:
            typ += " (" + ", ".join(map(str, spec["enum"])) + ")"
        rows.append(
            {
                "key": key,
                "type": typ,
                "default": json.dumps(spec.get("default")),
                "bounds": ", ".join(f"{sym} {spec[kw]}" for kw, sym in BOUNDS if kw in spec),
                "meaning": spec.get("description", ""),
            }
        )
    return rows


def render_doc_tables(schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Table name (as in the doc's markers) -> the Markdown table."""
    metrics = schemas["metrics.schema.json"]
    config = schemas["config.schema.json"]
    context = {
        "metrics": metric_views(metrics),
        "conditions": metrics["x-coordexp-conditions"],
        "extras": extra_views(schemas["batch_extras.schema.json"]),
        "config": config_rows(config, config.get("$defs", {})),
        "range_text": range_text,
        "aggregation_text": aggregation_text,
    }
    names = ("metric-keys", "framework-keys", "conditions", "batch-extras", "config")
    return {name: render(f"doc_{name.replace('-', '_')}.md.j2", **context).rstrip("\n") for name in names}


def splice_doc(text: str, tables: Mapping[str, str], path: Path = DOC) -> str:
    for name, table in tables.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if not pattern.search(text):
            raise SchemaError(f"{path}: missing the markers for table {name!r}:\n{begin}\n{end}")
        replacement = f"{begin}\n{table}\n{end}"
        # A function, not a string: the table must not be read as a re replacement template (and
        # it runs right here, so the loop variable is the current one).
        text = pattern.sub(lambda _m: replacement, text)  # noqa: B023
    return text
