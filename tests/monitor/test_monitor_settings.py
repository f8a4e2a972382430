"""The config normaliser: schema defaults, accepted input shapes, rejected values."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from coordexp.monitor import (
    EarlyStopSettings,
    GuardSettings,
    InstabilityMonitorSettings,
    normalize_monitor_config,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.json"

_CLASSES = {
    "InstabilityMonitorConfig": InstabilityMonitorSettings,
    "GuardConfig": GuardSettings,
    "EarlyStopConfig": EarlyStopSettings,
}


def _schema_defs() -> dict[str, Any]:
    defs: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())["$defs"]
    return defs


@pytest.mark.parametrize("def_name", sorted(_CLASSES))
def test_settings_fields_match_the_schema(def_name: str) -> None:
    props = _schema_defs()[def_name]["properties"]
    assert list(_CLASSES[def_name].model_fields) == list(props)


def test_defaults_are_the_schema_file_defaults() -> None:
    defs = _schema_defs()
    settings = normalize_monitor_config({})
    sections = {
        "InstabilityMonitorConfig": settings,
        "GuardConfig": settings.guard,
        "EarlyStopConfig": settings.early_stop,
    }
    for def_name, section in sections.items():
        for name, prop in defs[def_name]["properties"].items():
            if "$ref" in prop:
                continue
            expected = prop["default"]
            value = getattr(section, name)
            assert (list(value) if isinstance(value, tuple) else value) == expected, (def_name, name)


def test_none_and_missing_sections_mean_defaults() -> None:
    base = normalize_monitor_config({})
    assert normalize_monitor_config(None) == base
    assert normalize_monitor_config({"guard": None, "early_stop": None, "ema_decay": None}) == base
    assert normalize_monitor_config({"not_a_field": 1}) == base  # unknown keys: the loader's job


def test_mapping_attribute_object_and_pydantic_model_agree() -> None:
    guard: dict[str, Any] = {"enabled": True, "max_abs_logit": 50}
    early_stop: dict[str, Any] = {"enabled": True, "on_reasons": ["loss_spike"]}
    flat: dict[str, Any] = {"enabled": True, "ema_decay": 0.9, "spike_factor": 4, "dump_dir": "/tmp/x"}
    raw = {**flat, "guard": guard, "early_stop": early_stop}
    from_mapping = normalize_monitor_config(raw)
    attr = SimpleNamespace(**flat, guard=SimpleNamespace(**guard), early_stop=SimpleNamespace(**early_stop))
    assert normalize_monitor_config(attr) == from_mapping
    pydantic_models = pytest.importorskip("coordexp.generated.models.config")
    assert normalize_monitor_config(pydantic_models.InstabilityMonitorConfig(**raw)) == from_mapping
    assert from_mapping.spike_factor == 4.0 and isinstance(from_mapping.spike_factor, float)
    assert from_mapping.early_stop.on_reasons == ("loss_spike",)
    assert normalize_monitor_config(from_mapping) is from_mapping


def test_dump_dir_accepts_a_path() -> None:
    assert normalize_monitor_config({"dump_dir": Path("/tmp/d")}).dump_dir == "/tmp/d"


@pytest.mark.parametrize(
    "cfg",
    [
        {"ema_decay": 1.0},
        {"ema_decay": -0.1},
        {"ema_decay": float("nan")},
        {"spike_factor": 0},
        {"abs_loss_threshold": -1},
        {"min_supervised_tokens": 1.5},
        {"min_supervised_tokens": True},
        {"dump_samples": "yes"},
        {"guard": {"enabled": 1}},
        {"guard": {"min_token_acc": 1.5}},
        {"guard": {"max_abs_logit": 0}},
        {"early_stop": {"on_reasons": ["not_a_reason"]}},
        {"early_stop": {"on_reasons": "loss_spike"}},
    ],
)
def test_bad_values_raise_value_error(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="instability_monitor"):
        normalize_monitor_config(cfg)
