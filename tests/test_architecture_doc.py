"""docs/ARCHITECTURE.md matches the code: every path its tables name exists, every ``path::name``
imports, and every folder of the package is in the rooms table."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
ROOT_PREFIXES = ("schemas/", "generated/", "tools/", "docs/", "tests/")
_CODE = re.compile(r"`([^`]+)`")
_PATHLIKE = re.compile(r"^[\w./*-]+(::\w+)?$")


def _tables() -> dict[str, list[list[str]]]:
    """Section heading -> the rows (cells) of the table under it."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and not set(line) <= set("|- "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            tables.setdefault(heading, []).append(cells)
    return {h: rows[1:] for h, rows in tables.items()}  # the header row left out


def _path(text: str) -> Path:
    return ROOT / text if text.startswith(ROOT_PREFIXES) else ROOT / "coordexp" / text


def _module(path: str) -> str:
    rel = path.removesuffix(".py")
    return f"coordexp.{rel.replace('/', '.')}"


def _references() -> list[str]:
    """Every code span of the step and fact tables that names a file or folder of the repository."""
    tables = _tables()
    refs = []
    for heading in ("A training step", "Where each fact lives", "The rooms"):
        for row in tables[heading]:
            for cell in row:
                for text in _CODE.findall(cell):
                    path = text.split("::")[0]
                    if _PATHLIKE.match(text) and "*" not in text and (path.endswith("/") or "." in path):
                        refs.append(text)
    return sorted(set(refs))


REFERENCES = _references()


def test_the_tables_name_paths() -> None:
    assert len(REFERENCES) > 40
    assert any("::" in r for r in REFERENCES)


@pytest.mark.parametrize("ref", [r for r in REFERENCES if "/" in r.split("::")[0]])
def test_each_path_exists_and_each_name_imports(ref: str) -> None:
    path, _, name = ref.partition("::")
    assert _path(path).exists(), f"{ref}: no {path}"
    if name:
        assert path.endswith(".py"), ref
        module = importlib.import_module(_module(path))  # generated/x.py is coordexp.generated.x
        assert hasattr(module, name), f"{ref}: {_module(path)} has no {name}"


def test_every_package_folder_is_a_room() -> None:
    rooms = {text.rstrip("/") for row in _tables()["The rooms"] for text in _CODE.findall(row[0])}
    folders = {p.parent.name for p in (ROOT / "coordexp").glob("*/__init__.py")}
    assert folders - rooms == set(), f"folders missing from the rooms table: {sorted(folders - rooms)}"
    assert {r for r in rooms if "." not in r} - folders == set()
