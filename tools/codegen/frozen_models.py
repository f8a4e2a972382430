"""Frozen pydantic models: the input and options datamodel-code-generator gets for them.

The config models *are* the runtime configuration (nothing copies them into another form), so they
are immutable all the way down: frozen models, and tuples where the schema says array (a frozen
model holding a list could still be changed in place). JSON Schema has no tuple type, so each array
property is typed ``tuple[<item>, ...]`` through ``--type-overrides`` and its default (a JSON list)
is validated, which turns it into a tuple too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from .validate import SchemaError

# Schema files whose generated models are frozen.
FROZEN_SCHEMAS = frozenset({"config.schema.json"})
# The schema key (on the copy datamodel-code-generator reads) that becomes Field(validate_default=True).
VALIDATE_DEFAULT_KEY = "x-validate_default"
_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def _item_type(items: Any, where: str) -> str:
    """The Python type of an array's items: a scalar, or a Literal of a string enum."""
    kind = items.get("type") if isinstance(items, Mapping) else None
    if kind == "string" and "enum" in items:
        return "typing.Literal[" + ", ".join(json.dumps(v) for v in items["enum"]) + "]"
    if kind in _SCALARS and "enum" not in items:
        return _SCALARS[kind]
    raise SchemaError(f"{where}: an array of a frozen model needs scalar or string-enum items")


def frozen_input(schema: Mapping[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
    """The schema copy datamodel-code-generator reads for ``name`` and the extra options it needs."""
    doc: dict[str, Any] = copy.deepcopy(dict(schema))
    overrides: dict[str, str] = {}
    models = [(doc.get("title", ""), doc), *((d.get("title", k), d) for k, d in doc.get("$defs", {}).items())]
    for model, definition in models:
        for prop_name, prop in definition.get("properties", {}).items():
            if prop.get("type") != "array":
                continue
            where = f"{name}: {model}.{prop_name}"
            overrides[f"{model}.{prop_name}"] = f"tuple[{_item_type(prop.get('items'), where)}, ...]"
            prop[VALIDATE_DEFAULT_KEY] = True
    options = [
        "--enable-faux-immutability",
        "--field-extra-keys-without-x-prefix",
        VALIDATE_DEFAULT_KEY,
        "--type-overrides",
        json.dumps(overrides, sort_keys=True),
    ]
    return doc, options
