"""Configuration exists in one form: the models generated from schemas/config.schema.json.

They are frozen (arrays are tuples); the public names of ``coordexp.config`` add no field to them,
the monitor settings are them, the coord loss config has their fields, and no default of the
schema is written again in the package (it is read from the generated models instead).
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import coordexp.config as config
import coordexp.monitor.settings as settings
from coordexp.components.coord_loss import CoordLossComponent
from coordexp.functional import CoordLossConfig
from coordexp.generated.models import config as generated
from coordexp.rows.enrichers import InstabilityMetaEnricher
from coordexp.rows.typing_enricher import TokenTypesEnricher

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "config.schema.json").read_text(encoding="utf-8"))
DEFS: dict[str, Any] = SCHEMA["$defs"]
MODELS = [
    cls
    for _, cls in inspect.getmembers(generated, inspect.isclass)
    if issubclass(cls, BaseModel) and cls.__module__ == generated.__name__
]
PUBLIC = [getattr(config, name) for name in config.__all__ if name.endswith("Config")]


def _scalar_defaults() -> dict[str, list[Any]]:
    """Property name -> the schema defaults it has (in any section), empty and null ones left out:
    an empty list or a null carries no fact a copy could drift from."""
    out: dict[str, list[Any]] = {}
    for definition in DEFS.values():
        for name, prop in definition.get("properties", {}).items():
            default = prop.get("default")
            if "$ref" not in prop and default not in (None, [], {}):
                out.setdefault(name, []).append(default)
    return out


DEFAULTS = _scalar_defaults()


def test_every_schema_section_has_a_frozen_model() -> None:
    assert {m.__name__ for m in MODELS} >= set(DEFS)
    for model in MODELS:
        assert model.model_config.get("frozen") is True, model.__name__
    section = generated.TokenTypeMetricsConfig()
    with pytest.raises(ValidationError, match="frozen"):
        section.enabled = True  # type: ignore[misc]


@pytest.mark.parametrize("def_name", sorted(DEFS))
def test_arrays_are_tuples_and_defaults_are_the_schema_s(def_name: str) -> None:
    instance = getattr(generated, def_name)()
    for name, prop in DEFS[def_name]["properties"].items():
        value = getattr(instance, name)
        if "$ref" in prop:  # a nested section: its defaults when the schema gives one, else absent
            assert isinstance(value, BaseModel) if "default" in prop else value is None, (def_name, name)
            continue
        if prop.get("type") == "array":
            assert isinstance(value, tuple), (def_name, name)
            value = list(value)
        assert value == prop["default"], (def_name, name)


@pytest.mark.parametrize("public", PUBLIC, ids=lambda c: c.__name__)
def test_public_names_are_the_generated_models_with_no_field_of_their_own(public: type[BaseModel]) -> None:
    base = next(b for b in public.__mro__ if b.__module__ == generated.__name__)
    assert list(public.model_fields) == list(base.model_fields)
    for name, field in public.model_fields.items():
        assert field.default == base.model_fields[name].default, (public.__name__, name)
    assert not set(vars(public).get("__annotations__", {})) - {"SECTION"}, public.__name__


def test_sections_of_the_custom_block_are_the_generated_models() -> None:
    custom = config.load_custom_config({"coord_soft_ce_w1": {}})
    assert type(custom.coord_soft_ce_w1) is generated.CoordSoftCEW1Config
    assert custom.token_type_metrics is None  # an absent section stays absent
    assert config.TokenTypeMetricsConfig.SECTION == "custom.token_type_metrics"


def test_monitor_settings_are_the_generated_models() -> None:
    assert settings.InstabilityMonitorSettings is generated.InstabilityMonitorConfig
    assert settings.GuardSettings is generated.GuardConfig
    assert settings.EarlyStopSettings is generated.EarlyStopConfig
    assert settings.normalize_monitor_config({}) == generated.InstabilityMonitorConfig()


def test_coord_loss_config_is_the_generated_section() -> None:
    assert issubclass(CoordLossConfig, generated.CoordSoftCEW1Config)
    assert list(CoordLossConfig.model_fields) == list(generated.CoordSoftCEW1Config.model_fields)
    assert not vars(CoordLossConfig).get("__annotations__")  # no field of its own
    assert CoordLossConfig().model_dump() == generated.CoordSoftCEW1Config().model_dump()
    given = {"enabled": True, "temperature": 0.5, "target_truncate": 3}
    custom = config.load_custom_config({"coord_soft_ce_w1": given}).coord_soft_ce_w1
    assert custom is not None
    assert CoordLossComponent(custom).loss_cfg is custom  # the loss reads the parsed section itself


def test_enricher_defaults_are_the_schema_s() -> None:
    assert InstabilityMetaEnricher().max_meta_samples == generated.InstabilityMonitorConfig().max_meta_samples
    tokens = TokenTypesEnricher(template=None)
    assert (tokens.include, tokens.exclude) == (
        generated.TokenTypeMetricsConfig().include,
        generated.TokenTypeMetricsConfig().exclude,
    )


# A literal that equals a schema default but is no copy of it: (file, name) -> why.
NOT_A_COPY = {
    ("coordexp/functional/pass_spec.py", "temperature"): "1.0 without a coord config is no temperature",
}


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _named_values(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(config field name, value node) wherever code could restate a default."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):  # parameter defaults
            args = node.args
            positional = args.posonlyargs + args.args
            yield from ((a.arg, d) for a, d in zip(positional[::-1], args.defaults[::-1], strict=False))
            yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d)
        elif isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):  # a field, or DEFAULT_<FIELD> / X_DEFAULT_<FIELD>
                    yield target.id, node.value
                    if "DEFAULT_" in target.id:
                        yield target.id.split("DEFAULT_", 1)[1].lower(), node.value
        elif isinstance(node, ast.Call):  # cfg.get("field", <default>), cfg_get(cfg, "field", <default>)
            for key, value in zip(node.args, node.args[1:], strict=False):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield key.value, value
        elif isinstance(node, ast.IfExp | ast.BoolOp):  # cfg.field if cfg else <default>, cfg.field or <d>
            branches = [node.body, node.orelse] if isinstance(node, ast.IfExp) else node.values
            read = {n.attr for b in branches for n in ast.walk(b) if isinstance(n, ast.Attribute)}
            yield from ((name, branch) for name in read for branch in branches)


def _is_default(value: Any, name: str) -> bool:
    for default in DEFAULTS.get(name, ()):
        if isinstance(value, bool) != isinstance(default, bool):
            continue
        if (list(value) if isinstance(value, tuple) else value) == default:
            return True
    return False


def test_no_schema_default_is_written_again_in_the_package() -> None:
    offenders = []
    for path in sorted((ROOT / "coordexp").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for name, node in _named_values(ast.parse(path.read_text(encoding="utf-8"))):
            ok, value = _literal(node)
            if ok and value is not None and _is_default(value, name) and (rel, name) not in NOT_A_COPY:
                offenders.append(f"{rel}:{getattr(node, 'lineno', '?')}: {name} = {value!r}")
    assert not offenders, (
        "schema defaults written again (read them from coordexp.generated.models.config):\n"
        + "\n".join(sorted(set(offenders)))
    )
