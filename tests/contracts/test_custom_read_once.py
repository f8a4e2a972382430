"""Each ``custom.*`` section is read through one parse.

A YAML's ``custom:`` block is parsed once (``coordexp.config.loading.load_custom_config``); a trainer
class carries the parsed sections as ``<section>_cfg`` attributes and the Stage-1 hook and pipeline
read them back through ``coordexp.swift_seam.trainer_sections.trainer_custom`` (the models taken as
they are); what a caller of a public entry holds (a mapping, an attribute object) is parsed by
``coordexp.config.loading.held_section``. Components get the models and read their attributes.

The scans fail when any other module reads a section out of a raw mapping or a trainer
(``x["coord_soft_ce_w1"]``, ``x.get("metrics")``, ``getattr(t, "stage1_pass_cfg")``,
``t.token_type_metrics_cfg``), or reads a section's setting by key, the way the old readers did
(``cfg.get("include")``, ``cfg["enabled"]``, ``getattr(cfg, "ema_decay")``,
``cfg_get(cfg, "max_meta_samples")``).
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from pydantic import BaseModel

from coordexp.config import Stage1CustomConfig
from coordexp.swift_seam.trainer_sections import trainer_custom, trainer_section_attrs

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = frozenset(Stage1CustomConfig.model_fields)
ATTRS = frozenset(f"{s}_cfg" for s in SECTIONS)


def _setting_names(model: type[BaseModel]) -> set[str]:
    """The keys of the section models reachable from ``model`` (nested sections included)."""
    names: set[str] = set()
    for field in model.model_fields.values():
        for member in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names |= set(member.model_fields) | _setting_names(member)
    return names


SETTINGS = frozenset(_setting_names(Stage1CustomConfig))

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


# A key that is also a setting's name but names something else there: (file, key) -> what it is.
NOT_A_SETTING = {
    ("coordexp/components/instability.py", "max_abs_logit"): "a statistic of the pass (s.get)",
    ("coordexp/functional/stage1_pass.py", "max_abs_logit"): "a statistic of the pass, written",
    ("coordexp/contracts/modes.py", "mode"): "the thread-local contracts-mode override",
    ("coordexp/run_folder/resume.py", "mode"): "an events.jsonl record's train/eval mode",
    ("coordexp/functional/coord_config.py", "target_truncate"): "CoordLossConfig's constructor keywords",
}


def _setting_reads(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, key, how) for each read of a setting by its key."""
    out: list[tuple[int, str, str]] = []

    def hit(node: ast.AST, key: ast.AST, how: str) -> None:
        if isinstance(key, ast.Constant) and key.value in SETTINGS:
            out.append((getattr(node, "lineno", 0), key.value, how.format(key.value)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            hit(node, node.slice, "[{!r}]")
        elif isinstance(node, ast.Call):
            func, args = node.func, node.args
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault") and args:
                hit(node, args[0], f".{func.attr}({{!r}})")
            else:  # getattr(cfg, "key"), cfg_get(cfg, "key"), cfg_setting(cfg, defaults, "key")
                for arg in args[1:]:
                    hit(node, arg, "a call with {!r}")
    return out


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


def test_no_other_module_reads_a_setting_by_key() -> None:
    offenders = []
    for path in sorted((ROOT / "coordexp").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in THE_PARSE:
            continue
        for line, key, how in _setting_reads(ast.parse(path.read_text(encoding="utf-8"))):
            if (rel, key) not in NOT_A_SETTING:
                offenders.append(f"{rel}:{line}: {how}")
    assert not offenders, (
        "read a section's settings as attributes of its parsed model (held_section for what a caller "
        "holds), not by key:\n" + "\n".join(offenders)
    )


def test_the_setting_scan_finds_readers() -> None:
    source = (
        'a = cfg["enabled"]\nb = cfg.get("include")\nc = getattr(cfg, "ema_decay")\n'
        'd = cfg_get(cfg, "max_meta_samples")\ne = cfg_setting(cfg, DEFAULTS, "exclude")\n'
        'f = row.get("messages")\ng = cfg.include\n'
    )
    assert [line for line, _, _ in _setting_reads(ast.parse(source))] == [1, 2, 3, 4, 5]


def test_a_trainer_s_parsed_sections_are_not_parsed_again() -> None:
    from coordexp.config import load_custom_config

    custom = load_custom_config({"coord_soft_ce_w1": {"enabled": True}, "token_type_metrics": {}})
    trainer = type("Trainer", (), trainer_section_attrs(custom))()
    again = trainer_custom(trainer)
    assert again.coord_soft_ce_w1 is custom.coord_soft_ce_w1
    assert again.token_type_metrics is custom.token_type_metrics


def test_the_scan_finds_readers() -> None:
    source = (
        'a = cfg["coord_soft_ce_w1"]\nb = cfg.get("metrics")\nc = getattr(t, "stage1_pass_cfg")\n'
        "d = t.token_type_metrics_cfg\n"
    )
    assert [line for line, _ in _section_reads(ast.parse(source))] == [1, 2, 3, 4]


def test_a_training_config_parses_its_custom_block_once() -> None:
    from coordexp.launch.config import TrainConfig

    cfg = TrainConfig.model_validate(
        {"model": {"path": "m"}, "data": {"train": ["t.jsonl"]}, "custom": {"metrics": {}}}
    )
    assert cfg.stage1() is cfg.stage1()
