"""The Python files of ``generated/``: Jinja2 templates for the tables, datamodel-code-generator
for the pydantic models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .frozen_models import FROZEN_SCHEMAS, frozen_input
from .layout import CODEGEN_MODELS, EMBEDDED_SCHEMAS, SCHEMAS
from .templating import render
from .validate import SchemaError, const_name, meta_enum
from .views import extra_views, labels_view, metric_views

# Enums the templates spell as Literal types; their values live in the meta-schema.
ENUMS = ("owner", "inLossValue", "stability", "aggregationKind", "extraKind", "presence")
EMBED_WIDTH = 96  # characters of schema JSON per line in generated/schemas.py


def header(source: str) -> str:
    return render("_header.j2", source=source)


def _enums() -> dict[str, tuple[str, ...]]:
    return {name: meta_enum(name) for name in ENUMS}


def render_metric_keys(metrics: Mapping[str, Any]) -> str:
    return render("metric_keys.py.j2", source="metrics.schema.json", metrics=metric_views(metrics))


def render_metric_catalog(metrics: Mapping[str, Any]) -> str:
    return render(
        "metric_catalog.py.j2",
        source="metrics.schema.json",
        enums=_enums(),
        metrics=metric_views(metrics),
        conditions=metrics["x-coordexp-conditions"],
        removed=metrics.get("x-coordexp-removed", {}),
    )


def render_batch_extras(extras: Mapping[str, Any]) -> str:
    return render(
        "batch_extras.py.j2",
        source="batch_extras.schema.json",
        enums=_enums(),
        extras=extra_views(extras),
        labels=labels_view(extras),
    )


def render_embedded_schemas(schemas: Mapping[str, Mapping[str, Any]]) -> str:
    embedded = []
    for name in EMBEDDED_SCHEMAS:
        text = json.dumps(schemas[name], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        embedded.append(
            {
                "const": const_name(name.removesuffix(".schema.json")) + "_SCHEMA",
                "chunks": [text[i : i + EMBED_WIDTH] for i in range(0, len(text), EMBED_WIDTH)],
            }
        )
    return render("schemas.py.j2", source="*.schema.json", schemas=embedded)


def run_datamodel_codegen(schema_path: Path, out_path: Path, options: list[str] | None = None) -> str:
    """Generate pydantic v2 models with datamodel-code-generator; returns the file text."""
    cmd = [
        sys.executable,
        "-m",
        "datamodel_code_generator",
        "--input",
        str(schema_path),
        "--input-file-type",
        "jsonschema",
        "--output",
        str(out_path),
        "--output-model-type",
        "pydantic_v2.BaseModel",
        "--target-python-version",
        "3.11",
        "--disable-timestamp",
        "--use-standard-collections",
        "--use-union-operator",
        "--field-constraints",
        "--use-title-as-name",
        "--use-schema-description",
        "--use-double-quotes",
        "--strict-nullable",
        "--enum-field-as-literal",
        "all",
        "--formatters",
        "ruff-format",
        "ruff-check",
        "--custom-file-header",
        header(schema_path.name).rstrip("\n"),
        *(options or ()),
    ]
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(cmd, cwd=out_path.parent, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SchemaError(
            f"datamodel-code-generator failed on {schema_path.name} (is the dev extra installed?):\n"
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return out_path.read_text(encoding="utf-8")


def render_python_files(schemas: Mapping[str, Mapping[str, Any]], workdir: Path) -> dict[Path, str]:
    """Every file under generated/ (path relative to the repository -> text)."""
    files: dict[Path, str] = {
        Path("generated/__init__.py"): render("generated_init.py.j2", source="*"),
        Path("generated/metric_keys.py"): render_metric_keys(schemas["metrics.schema.json"]),
        Path("generated/metric_catalog.py"): render_metric_catalog(schemas["metrics.schema.json"]),
        Path("generated/batch_extras.py"): render_batch_extras(schemas["batch_extras.schema.json"]),
        Path("generated/schemas.py"): render_embedded_schemas(schemas),
        Path("generated/models/__init__.py"): render("models_init.py.j2", source="*"),
    }
    for schema_name, module in CODEGEN_MODELS.items():
        path = Path("generated/models") / module
        source, options = SCHEMAS / schema_name, None
        if schema_name in FROZEN_SCHEMAS:
            # datamodel-code-generator reads a copy annotated for tuple arrays (same file name: the
            # header names it); the schema itself stays free of Python details.
            doc, options = frozen_input(schemas[schema_name], schema_name)
            source = workdir / "frozen" / schema_name
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        files[path] = run_datamodel_codegen(source, workdir / module, options)
    return files
