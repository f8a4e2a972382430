"""Checks of the schemas' ``x-coordexp`` annotations.

Their shape (required fields, enums, what a ratio or a tensor extra needs) is declared once, in
``x_coordexp.meta.schema.json``, and checked with jsonschema. This module only words jsonschema's
errors so they name the file and the key, and checks what a meta-schema cannot: names that must
exist elsewhere in the catalog (conditions, alias targets, extras, schema files, constants).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .layout import META_SCHEMA, SCHEMA_FILES

# Containers whose members are the "entries" an error is reported against (`property 'key': ...`).
ENTRY_CONTAINERS = ("properties", "x-coordexp-removed")


class SchemaError(Exception):
    """A schema is not meta-valid or breaks a rule of the catalog; the message says where."""


@cache
def meta_schema() -> Mapping[str, Any]:
    data: dict[str, Any] = json.loads(META_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(data)
    return data


def meta_enum(definition: str) -> tuple[str, ...]:
    """The values of an enum the meta-schema declares (``owner``, ``aggregationKind``, ...)."""
    return tuple(meta_schema()["$defs"][definition]["enum"])


@cache
def _validator(definition: str) -> Draft202012Validator:
    return Draft202012Validator({**meta_schema(), "$ref": f"#/$defs/{definition}"})


def _x_error(subschema: Any) -> Mapping[str, str]:
    """The subschema's messages, over those of the local ``$defs`` entry it refers to."""
    if not isinstance(subschema, Mapping):
        return {}
    own: Mapping[str, str] = subschema.get("x-error", {})
    ref = subschema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return {**meta_schema()["$defs"][ref.removeprefix("#/$defs/")].get("x-error", {}), **own}
    return own


def _missing(error: ValidationError) -> list[str]:
    """Properties a ``required`` / ``dependentRequired`` error is about."""
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    if error.validator == "required":
        wanted: Sequence[str] = error.validator_value
    else:
        wanted = [d for k, deps in error.validator_value.items() if k in instance for d in deps]
    return [name for name in wanted if name not in instance]


def _generic(keyword: str, subject: str, error: ValidationError) -> str:
    if keyword == "enum":
        return f"{subject} must be one of {tuple(error.validator_value)}"
    if keyword == "const":
        return f"{subject} must be {error.validator_value!r}"
    if keyword == "type":
        return f"{subject} must be of type {error.validator_value!r}"
    return f"{subject}: {error.message}"


def _messages(error: ValidationError) -> Iterator[str]:
    path = [str(p) for p in error.absolute_path]
    if "propertyNames" in error.absolute_schema_path:
        path.append(str(error.instance))  # the offending name itself
    prefix, rest = "", path
    if len(path) >= 2 and path[0] in ENTRY_CONTAINERS:
        prefix, rest = f"property {path[1]!r}: ", path[2:]
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    keyword = str(error.validator)
    if keyword in ("required", "dependentRequired"):
        for name in _missing(error):
            child = schema.get("properties", {}).get(name, {})
            text = _x_error(child).get("absent") or _x_error(schema).get(keyword)
            where = ".".join([*rest, name])
            enum = tuple(child.get("enum", ()))
            yield prefix + (text or "{where} is required").format(where=where, name=name, enum=enum)
        return
    text = _x_error(schema).get(keyword) or _x_error(schema).get("*")
    where = ".".join(rest)
    subject = where or ("the entry" if prefix else "the document")
    if text is None:
        yield prefix + _generic(keyword, subject, error)
        return
    name = rest[-1] if rest else subject
    yield prefix + text.format(where=subject, name=name, enum=tuple(schema.get("enum", ())))


def check_annotations(schema: Mapping[str, Any], path: Path, definition: str) -> None:
    """Validate a whole schema document against the meta-schema's ``$defs/<definition>``."""
    messages = [m for error in _validator(definition).iter_errors(schema) for m in _messages(error)]
    if messages:
        raise SchemaError("\n".join(f"{path}: {m}" for m in dict.fromkeys(messages)))


def _fail(path: Path, key: str, msg: str) -> SchemaError:
    return SchemaError(f"{path}: property {key!r}: {msg}")


def const_name(key: str) -> str:
    """``coord_diag/loss`` -> ``COORD_DIAG_LOSS``; ``memory(GiB)`` -> ``MEMORY_GIB``."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", key).strip("_").upper()
    if name[0].isdigit():
        name = "K_" + name
    return name


def check_catalog(schema: Mapping[str, Any], path: Path) -> None:
    """The metric catalog: meta-valid annotations, then names that must exist."""
    check_annotations(schema, path, "metricsCatalog")
    props: Mapping[str, Any] = schema["properties"]
    conditions: Mapping[str, str] = schema["x-coordexp-conditions"]
    removed: Mapping[str, Any] = schema.get("x-coordexp-removed", {})
    consts: dict[str, str] = {}
    for key, spec in props.items():
        ext = spec["x-coordexp"]
        for atom in ext["requires"]:
            if atom not in conditions:
                raise _fail(path, key, f"x-coordexp.requires names unknown condition {atom!r}")
        for atom, owner in ext.get("owner_when", {}).items():
            if atom not in conditions:
                raise _fail(path, key, f"x-coordexp.owner_when names unknown condition {atom!r}")
            if owner == ext["owner"]:
                raise _fail(path, key, f"x-coordexp.owner_when[{atom!r}] repeats the owner {owner!r}")
        if "deprecation" in ext:
            _check_alias(props, path, key, ext["deprecation"]["renamed_to"])
        const = const_name(key)
        if const in consts:
            raise _fail(path, key, f"maps to the constant {const} of {consts[const]!r} too")
        consts[const] = key
    for key, entry in removed.items():
        if key in props:
            raise _fail(path, key, "listed both as a key and in x-coordexp-removed")
        target = entry.get("renamed_to")
        if target is not None and target not in props:
            raise _fail(path, key, f"removed key renamed_to {target!r} is not a catalog key")


def _check_alias(props: Mapping[str, Any], path: Path, key: str, target: str) -> None:
    """A deprecated alias points at a live key and aggregates like it (same logged value)."""
    if target not in props:
        raise _fail(path, key, f"deprecation.renamed_to {target!r} is not a catalog key")
    target_ext = props[target]["x-coordexp"]
    if "deprecation" in target_ext:
        raise _fail(path, key, f"deprecation.renamed_to {target!r} is itself deprecated: name the final key")
    mine, theirs = _how(props[key]["x-coordexp"]["aggregation"]), _how(target_ext["aggregation"])
    if mine != theirs:
        raise _fail(path, key, f"a deprecated alias aggregates like {target!r}: {theirs}")


def _how(aggregation: Mapping[str, Any]) -> dict[str, Any]:
    """What an aggregation computes (its history, ``changed_from`` and ``note``, aside)."""
    return {k: v for k, v in aggregation.items() if k not in ("changed_from", "note")}


def check_extras(schema: Mapping[str, Any], path: Path) -> None:
    """The batch-extras contract: meta-valid annotations, then names that must exist."""
    check_annotations(schema, path, "batchExtras")
    props: Mapping[str, Any] = schema["properties"]
    tensors = {k for k, s in props.items() if s["x-coordexp"]["value"]["kind"] == "tensor"}
    code_names: dict[str, str] = {}
    for key, spec in props.items():
        ext = spec["x-coordexp"]
        like = ext.get("shape_like")
        if like is not None and (like == key or (like != "labels" and like not in tensors)):
            raise _fail(path, key, f"x-coordexp.shape_like {like!r} is not 'labels' or another tensor extra")
        json_schema = ext["value"].get("schema")
        if json_schema is not None and json_schema not in SCHEMA_FILES:
            raise _fail(path, key, f"x-coordexp.value.schema {json_schema!r} is not one of {SCHEMA_FILES}")
        codes = ext.get("codes")
        if codes is None:
            continue
        if (ext["value"]["kind"], ext["value"].get("dtype")) != ("tensor", "int64"):
            raise _fail(path, key, "x-coordexp.codes are the values of an int64 tensor extra")
        values = [c["value"] for c in codes["values"].values()]
        if len(set(values)) != len(values):
            raise _fail(path, key, f"x-coordexp.codes.values repeat a value: {values}")
        name = codes["name"]
        if name in code_names:
            raise _fail(path, key, f"x-coordexp.codes.name {name!r} is taken by {code_names[name]!r}")
        code_names[name] = key
