"""Each ``custom.*`` section is read through one parse.

A YAML's ``custom:`` block is parsed once (``coordexp.config.loading.load_custom_config``); a trainer
class carries the parsed sections as ``<section>_cfg`` attributes and the Stage-1 hook and pipeline
read them back through ``coordexp.swift_seam.trainer_sections.trainer_custom``. This scan fails when
any other module reads a section out of a raw mapping or a trainer (``x["coord_soft_ce_w1"]``,
``x.get("metrics")``, ``getattr(t, "stage1_pass_cfg")``, ``t.token_type_metrics_cfg``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from coordexp.config import Stage1CustomConfig

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = frozenset(Stage1CustomConfig.model_fields)
ATTRS = frozenset(f"{s}_cfg" for s in SECTIONS)

# The one parse, and the readers it serves.
THE_PARSE = {
    "coordexp/config/loading.py": "parses the custom: block into the generated models",
    "coordexp/swift_seam/trainer_sections.py": "sets and reads back a trainer's sections (trainer_custom)",
}
# Public entry points of the seed that take a section as the caller holds it (a mapping or an
# attribute object); each validates it into its generated model on entry.
PUBLIC_ENTRIES = {
    "coordexp/swift_seam/mixins.py": "DatasetMetricsCollatorMixin hands its sections to the public collator",
}


def _section_reads(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and key.value in SECTIONS:
                out.append((node.lineno, f"[{key.value!r}]"))
        elif isinstance(node, ast.Call):
            func = node.func
            args = node.args
            if isinstance(func, ast.Attribute) and func.attr == "get" and args:
                if isinstance(args[0], ast.Constant) and args[0].value in SECTIONS:
                    out.append((node.lineno, f".get({args[0].value!r})"))
            if isinstance(func, ast.Name) and func.id == "getattr" and len(args) >= 2:
                name = args[1]
                if isinstance(name, ast.Constant) and name.value in SECTIONS | ATTRS:
                    out.append((node.lineno, f"getattr(..., {name.value!r})"))
        elif isinstance(node, ast.Attribute) and node.attr in ATTRS and isinstance(node.ctx, ast.Load):
            out.append((node.lineno, f".{node.attr}"))
    return out


def test_no_other_module_reads_a_custom_section() -> None:
    offenders = []
    for path in sorted((ROOT / "coordexp").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in THE_PARSE or rel in PUBLIC_ENTRIES:
            continue
        for line, what in _section_reads(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{rel}:{line}: {what}")
    assert not offenders, (
        "read custom.* through the one parse (trainer_custom / load_custom_config):\n" + "\n".join(offenders)
    )


def test_the_scan_finds_readers() -> None:
    source = (
        'a = cfg["coord_soft_ce_w1"]\nb = cfg.get("metrics")\nc = getattr(t, "stage1_pass_cfg")\n'
        "d = t.token_type_metrics_cfg\n"
    )
    assert [line for line, _ in _section_reads(ast.parse(source))] == [1, 2, 3, 4]
