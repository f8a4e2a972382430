"""Validated schema documents as flat records: what the templates read, field by field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .validate import const_name


@dataclass(frozen=True)
class MetricView:
    """One catalog key with its ``x-coordexp`` annotation flattened."""

    key: str
    const: str
    description: str
    owner: str
    owner_when: tuple[tuple[str, str], ...]
    """(condition, owner) pairs, sorted: who writes the key where that differs from ``owner``"""
    group: str
    in_loss: str
    in_loss_condition: str | None
    feature: str
    requires: tuple[str, ...]
    """in schema order (the doc lists them so); the generated specs sort them"""
    unit: str
    aggregation: str
    numerator: str | None
    denominator: str | None
    minimum: float | None
    maximum: float | None
    is_number: bool
    stability: str
    renamed_to: str | None
    deprecation_note: str
    eval_only: bool
    """written only into eval records (once per evaluation)"""
    train_only: bool
    """written only into train records (the training gradient)"""


def metric_views(metrics: Mapping[str, Any]) -> list[MetricView]:
    views = []
    for key, spec in metrics["properties"].items():
        ext = spec["x-coordexp"]
        agg, dep = ext["aggregation"], ext.get("deprecation") or {}
        types = spec.get("type")
        views.append(
            MetricView(
                key=key,
                const=const_name(key),
                description=spec["description"],
                owner=ext["owner"],
                owner_when=tuple(sorted(ext.get("owner_when", {}).items())),
                group=ext["group"],
                in_loss=ext["in_loss"]["value"],
                in_loss_condition=ext["in_loss"].get("condition"),
                feature=ext["feature"],
                requires=tuple(ext["requires"]),
                unit=ext["unit"],
                aggregation=agg["kind"],
                numerator=agg.get("numerator"),
                denominator=agg.get("denominator"),
                minimum=spec.get("minimum"),
                maximum=spec.get("maximum"),
                is_number=types == "number" or types == ["number"],
                stability=ext["stability"],
                renamed_to=dep.get("renamed_to"),
                deprecation_note=dep.get("note", ""),
                eval_only=bool(ext.get("eval_only", False)),
                train_only=bool(ext.get("train_only", False)),
            )
        )
    return views


@dataclass(frozen=True)
class CodeView:
    name: str
    value: int
    description: str


@dataclass(frozen=True)
class CodesView:
    """Named integer codes of an extra (generated as an ``IntEnum``)."""

    name: str
    description: str
    values: tuple[CodeView, ...]


@dataclass(frozen=True)
class ExtraView:
    """One batch extra with its ``x-coordexp`` annotation flattened."""

    key: str
    const: str
    description: str
    kind: str
    dtype: str | None
    shape: tuple[str, ...] | None
    shape_like: str | None
    item: str | None
    json_schema: str | None
    producer: str
    consumers: tuple[str, ...]
    presence: str
    feature: str | None
    codes: CodesView | None

    @property
    def allowed_values(self) -> tuple[int, ...] | None:
        return None if self.codes is None else tuple(c.value for c in self.codes.values)


def _codes(codes: Mapping[str, Any] | None) -> CodesView | None:
    if codes is None:
        return None
    values = tuple(CodeView(n, c["value"], c["description"]) for n, c in codes["values"].items())
    return CodesView(codes["name"], codes["description"], values)


def extra_views(extras: Mapping[str, Any]) -> list[ExtraView]:
    views = []
    for key, spec in extras["properties"].items():
        ext = spec["x-coordexp"]
        value = ext["value"]
        shape = value.get("shape")
        views.append(
            ExtraView(
                key=key,
                const=f"{const_name(key)}_KEY",
                description=spec["description"],
                kind=value["kind"],
                dtype=value.get("dtype"),
                shape=None if shape is None else tuple(shape),
                shape_like=ext.get("shape_like"),
                item=value.get("item"),
                json_schema=value.get("schema"),
                producer=ext["producer"],
                consumers=tuple(ext["consumers"]),
                presence=ext["presence"],
                feature=ext.get("feature"),
                codes=_codes(ext.get("codes")),
            )
        )
    return views


@dataclass(frozen=True)
class LabelsView:
    """What the extras contract says about ``labels`` (its ignore index)."""

    ignore_index: int
    ignore_index_description: str


def labels_view(extras: Mapping[str, Any]) -> LabelsView:
    ignore = extras["x-coordexp-labels"]["ignore_index"]
    return LabelsView(ignore["value"], ignore["description"])
