"""Where the generator reads and writes, relative to the repository it lives in."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
GENERATED = ROOT / "generated"
DOC = ROOT / "docs" / "TRAINING_METRICS_AND_LOSSES.md"
BASELINE = SCHEMAS / "baseline" / "metrics.catalog.json"
TEMPLATES = Path(__file__).resolve().parent / "templates"
META_SCHEMA = Path(__file__).resolve().parent / "x_coordexp.meta.schema.json"

SCHEMA_FILES = (
    "batch_extras.schema.json",
    "config.schema.json",
    "instability_meta.schema.json",
    "metrics.schema.json",
)
# Schemas the runtime validates against at run time (embedded in generated/schemas.py); the others
# reach the runtime only through the tables and models generated from them.
EMBEDDED_SCHEMAS = ("instability_meta.schema.json",)
CODEGEN_MODELS = {
    # schema file -> generated module under generated/models/ (datamodel-code-generator)
    "config.schema.json": "config.py",
    "instability_meta.schema.json": "instability_meta.py",
}
