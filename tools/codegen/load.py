"""Reading the schema files: valid JSON, valid draft 2020-12, valid ``x-coordexp`` annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as MetaError

from .layout import SCHEMA_FILES, SCHEMAS
from .validate import SchemaError, check_catalog, check_extras

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def load_schemas(schema_dir: Path = SCHEMAS) -> dict[str, dict[str, Any]]:
    """Every schema file by name, each meta-validated against draft 2020-12, then the catalog and
    the extras checked against the ``x-coordexp`` meta-schema and for cross-references."""
    out: dict[str, dict[str, Any]] = {}
    for name in SCHEMA_FILES:
        path = schema_dir / name
        if not path.is_file():
            raise SchemaError(f"{path}: missing schema file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc
        if data.get("$schema") != DRAFT:
            raise SchemaError(f"{path}: $schema must be {DRAFT}")
        try:
            Draft202012Validator.check_schema(data)
        except MetaError as exc:
            where = "/".join(str(p) for p in exc.path) or "<root>"
            raise SchemaError(f"{path}: not a valid draft 2020-12 schema at {where}: {exc.message}") from exc
        out[name] = data
    check_catalog(out["metrics.schema.json"], schema_dir / "metrics.schema.json")
    check_extras(out["batch_extras.schema.json"], schema_dir / "batch_extras.schema.json")
    return out
