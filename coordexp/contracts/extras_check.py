"""Runtime guard for batch extras: every declared extra present has its declared type and shape."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, MutableMapping
from functools import cache
from typing import Any

import torch

from coordexp.contracts.errors import ContractViolation
from coordexp.contracts.modes import resolve_mode, violate
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS, EXTRA_SPECS, ExtraSpec
from coordexp.generated.schemas import INSTABILITY_META_SCHEMA

_JSON_SCHEMAS: Mapping[str, Mapping[str, Any]] = {"instability_meta.schema.json": INSTABILITY_META_SCHEMA}
_DTYPES = {"int64": torch.int64, "float32": torch.float32, "bool": torch.bool}
_ITEM_TYPES: Mapping[str, type] = {"str": str, "int": int}


@cache
def _validator(schema_name: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_JSON_SCHEMAS[schema_name])


def batch_rows(batch: Mapping[str, Any]) -> int | None:
    """Rows of the batch, from ``labels`` (else ``input_ids``); None when neither is a tensor."""
    for name in ("labels", "input_ids"):
        value = batch.get(name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            return int(value.shape[0])
    return None


def _dims(batch: Mapping[str, Any], rows: int | None) -> dict[str, int | None]:
    labels = batch.get("labels")
    seq = int(labels.shape[-1]) if isinstance(labels, torch.Tensor) and labels.dim() >= 2 else None
    return {"batch": rows, "seq": seq}


def _tensor_violation(
    key: str, spec: ExtraSpec, value: Any, batch: Mapping[str, Any], rows: int | None
) -> ContractViolation | None:
    if not isinstance(value, torch.Tensor):
        return ContractViolation(key, "type", f"expected a torch.Tensor, got {type(value).__name__}")
    want = _DTYPES[spec.dtype or "int64"]
    if value.dtype != want:
        return ContractViolation(key, "dtype", f"expected dtype {want}, got {value.dtype}")
    if spec.shape_like is not None:
        ref = batch.get(spec.shape_like)
        if not isinstance(ref, torch.Tensor):
            return ContractViolation(
                key, "shape", f"must be shaped like {spec.shape_like!r}, which is missing"
            )
        if tuple(value.shape) != tuple(ref.shape):
            return ContractViolation(
                key, "shape", f"shape {tuple(value.shape)} differs from {spec.shape_like} {tuple(ref.shape)}"
            )
    elif spec.shape is not None:
        dims = _dims(batch, rows)
        if value.dim() != len(spec.shape):
            return ContractViolation(
                key,
                "shape",
                f"expected {len(spec.shape)} dims {list(spec.shape)}, got shape {tuple(value.shape)}",
            )
        for axis, symbol in enumerate(spec.shape):
            size = dims.get(symbol)
            if size is not None and value.shape[axis] != size:
                return ContractViolation(
                    key, "shape", f"dim {axis} ({symbol}) is {value.shape[axis]}, the batch has {size}"
                )
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor) and value.device != labels.device:
        return ContractViolation(key, "device", f"on {value.device}, labels are on {labels.device}")
    if spec.allowed_values is not None and value.numel():
        allowed = torch.tensor(spec.allowed_values, dtype=value.dtype, device=value.device)
        if not bool(torch.isin(value, allowed).all()):
            return ContractViolation(key, "values", f"values must be in {list(spec.allowed_values)}")
    return None


def _list_violation(key: str, spec: ExtraSpec, value: Any, rows: int | None) -> ContractViolation | None:
    if not isinstance(value, list):
        return ContractViolation(key, "type", f"expected a list, got {type(value).__name__}")
    item_type = _ITEM_TYPES[spec.item or "str"]
    for i, item in enumerate(value):
        # bool is an int subclass; a flag is not a length.
        if not isinstance(item, item_type) or isinstance(item, bool):
            return ContractViolation(
                key, "item_type", f"item {i} is {type(item).__name__}, expected {item_type.__name__}"
            )
        if isinstance(item, int) and item < 0:
            return ContractViolation(key, "values", f"item {i} is negative ({item})")
    if rows is not None and len(value) != rows:
        return ContractViolation(key, "length", f"{len(value)} entries for {rows} batch rows")
    return None


def _json_violation(key: str, spec: ExtraSpec, value: Any, rows: int | None) -> ContractViolation | None:
    if not isinstance(value, str):
        return ContractViolation(key, "type", f"expected JSON text (str), got {type(value).__name__}")
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        return ContractViolation(key, "json", f"not valid JSON ({exc.msg} at char {exc.pos})")
    if spec.json_schema is not None:
        error = next(iter(_validator(spec.json_schema).iter_errors(data)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "<root>"
            return ContractViolation(
                key, "json_schema", f"does not match {spec.json_schema} at {where}: {error.message}"
            )
    if rows is not None and isinstance(data, list) and len(data) != rows:
        return ContractViolation(key, "length", f"{len(data)} entries for {rows} batch rows")
    return None


def extra_violation(key: str, value: Any, batch: Mapping[str, Any]) -> ContractViolation | None:
    """The first rule the extra ``key`` (= ``value``) of ``batch`` breaks, or None."""
    spec = EXTRA_SPECS.get(key)
    if spec is None:
        return ContractViolation(
            key,
            "undeclared_extra",
            "not a declared batch extra: declare it in schemas/batch_extras.schema.json",
        )
    rows = batch_rows(batch)
    if spec.kind == "tensor":
        return _tensor_violation(key, spec, value, batch, rows)
    if spec.kind == "list":
        return _list_violation(key, spec, value, rows)
    return _json_violation(key, spec, value, rows)


def check_batch_extras(
    batch: MutableMapping[str, Any], *, mode: str | None = None
) -> list[ContractViolation]:
    """Check every declared extra present in ``batch``.

    ``strict`` raises on the first violation; ``warn`` warns once per key and rule and removes the
    offending extra from ``batch`` so it cannot feed a diagnostic; ``off`` checks nothing. Returns
    the violations found (empty when the batch conforms).
    """
    resolved = resolve_mode(mode)
    if resolved == "off":
        return []
    found = []
    for key in BATCH_EXTRAS_KEYS:
        if key not in batch:
            continue
        violation = extra_violation(key, batch[key], batch)
        if violation is None:
            continue
        violate(violation, resolved)
        batch.pop(key, None)
        found.append(violation)
    return found


def check_enricher_output(
    enricher: str,
    added_keys: Iterable[str],
    declared: Iterable[str],
    batch: MutableMapping[str, Any],
    *,
    mode: str | None = None,
) -> list[ContractViolation]:
    """Refuse keys an enricher added that the contract, or the enricher itself, does not declare."""
    resolved = resolve_mode(mode)
    if resolved == "off":
        return []
    declared_set = frozenset(declared)
    found = []
    for key in sorted(set(added_keys)):
        if key not in EXTRA_SPECS:
            violation = ContractViolation(
                key,
                "undeclared_extra",
                f"enricher {enricher!r} added a key the batch-extras contract does not declare",
            )
        elif key not in declared_set:
            violation = ContractViolation(
                key,
                "undeclared_by_enricher",
                f"enricher {enricher!r} wrote an extra it does not declare in `emits`",
            )
        else:
            continue
        violate(violation, resolved)
        batch.pop(key, None)
        found.append(violation)
    return found
