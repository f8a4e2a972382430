"""The token-type codes and the label ignore index are declared once, in
schemas/batch_extras.schema.json: the package imports the generated ``TokenType`` / ``IGNORE_INDEX``
and never spells a copy of them."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

from coordexp.generated.batch_extras import (
    BATCH_EXTRAS_KEYS,
    EXTRA_SPECS,
    IGNORE_INDEX,
    TOKEN_TYPES_KEY,
    BatchExtrasFields,
    TokenType,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "batch_extras.schema.json").read_text(encoding="utf-8"))
CODES = SCHEMA["properties"][TOKEN_TYPES_KEY]["x-coordexp"]["codes"]
CODE_NAMES = frozenset(CODES["values"])
COPY_NAMES = frozenset({"IGNORE_INDEX"} | {f"TYPE_{name}" for name in CODE_NAMES})


def test_generated_codes_are_the_schema_s() -> None:
    assert {t.name: int(t) for t in TokenType} == {n: c["value"] for n, c in CODES["values"].items()}
    assert IGNORE_INDEX == SCHEMA["x-coordexp-labels"]["ignore_index"]["value"]
    assert EXTRA_SPECS[TOKEN_TYPES_KEY].allowed_values == tuple(int(t) for t in TokenType)


def test_public_names_are_re_exports_of_the_generated_ones() -> None:
    import coordexp.coord_tokens.payload as payload
    import coordexp.functional as functional
    import coordexp.functional.targets as targets
    import coordexp.rows.token_types as token_types

    assert payload.TokenType is TokenType and token_types.TokenType is TokenType
    assert targets.IGNORE_INDEX == functional.IGNORE_INDEX == token_types.IGNORE_INDEX == IGNORE_INDEX
    for name in CODE_NAMES:
        assert getattr(targets, f"TYPE_{name}") == getattr(functional, f"TYPE_{name}") == TokenType[name]


def _int_literal(node: ast.AST | None) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _targets(node: ast.Assign | ast.AnnAssign) -> list[str]:
    found = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in found if isinstance(t, ast.Name)]


def _copies(tree: ast.Module) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            if node.name == TokenType.__name__:
                out.append((node.lineno, f"class {node.name} (import the generated one)"))
            for stmt in node.body:
                if isinstance(stmt, ast.Assign | ast.AnnAssign) and _int_literal(stmt.value):
                    names = [n for n in _targets(stmt) if n in CODE_NAMES]
                    out += [(stmt.lineno, f"{node.name}.{n} = <int>") for n in names]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and _int_literal(node.value):
            out += [(node.lineno, f"{n} = <int>") for n in _targets(node) if n in COPY_NAMES]
        elif isinstance(node, ast.UnaryOp) and _int_literal(node) and ast.literal_eval(node) == IGNORE_INDEX:
            out.append((node.lineno, f"the literal {IGNORE_INDEX} (import IGNORE_INDEX)"))
    return out


def test_no_literal_copy_of_the_codes_in_the_package() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in sorted((ROOT / "coordexp").rglob("*.py"))
        for line, what in _copies(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offenders, "declared in schemas/batch_extras.schema.json, not here:\n" + "\n".join(offenders)


def test_the_scan_finds_copies() -> None:
    source = "IGNORE_INDEX = -100\nTYPE_COORD: int = 2\nclass TokenType:\n    DESC = 1\nx = y == -100\n"
    assert sorted({line for line, _ in _copies(ast.parse(source))}) == [1, 2, 3, 4, 5]


def test_batch_extras_fields_are_named_like_the_keys() -> None:
    # coordexp.contracts.stash pops every key into the field of the same name.
    assert tuple(f.name for f in dataclasses.fields(BatchExtrasFields)) == BATCH_EXTRAS_KEYS
