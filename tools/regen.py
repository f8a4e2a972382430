#!/usr/bin/env python3
"""Regenerate ``generated/`` and the key tables of the docs from ``schemas/``.

The schemas are the single source of truth; everything this script writes is derived from them and
is committed. Data flows one way: schemas -> this script -> generated code and doc tables.

Usage::

    python tools/regen.py                    # rewrite generated/ and the doc tables
    python tools/regen.py --check            # exit 1 with a unified diff when anything is stale,
                                             # or when the catalog broke compatibility
    python tools/regen.py --update-baseline  # accept the current catalog as the new baseline

Output is deterministic: same bytes on every run (no timestamps, sorted where order is free).
The work is done by the package ``tools/codegen`` (see its ``__init__``); this file is the command
and keeps the names tests and scripts import from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a file (python tools/regen.py) or loaded by path (tests): either way the codegen package
# beside this file is the one to use, not whatever an earlier sys.path entry holds.
_HERE = str(Path(__file__).resolve().parent)
if sys.path[:1] != [_HERE]:
    sys.path.insert(0, _HERE)

from codegen.cli import main, render_all  # noqa: E402
from codegen.compat import catalog_snapshot, check_compatibility, load_baseline  # noqa: E402
from codegen.layout import BASELINE, DOC, GENERATED, ROOT, SCHEMA_FILES, SCHEMAS  # noqa: E402
from codegen.load import load_schemas  # noqa: E402
from codegen.validate import SchemaError, check_catalog, check_extras, const_name  # noqa: E402

__all__ = [
    "BASELINE",
    "DOC",
    "GENERATED",
    "ROOT",
    "SCHEMAS",
    "SCHEMA_FILES",
    "SchemaError",
    "catalog_snapshot",
    "check_catalog",
    "check_compatibility",
    "check_extras",
    "const_name",
    "load_baseline",
    "load_schemas",
    "main",
    "render_all",
]

if __name__ == "__main__":
    raise SystemExit(main())
