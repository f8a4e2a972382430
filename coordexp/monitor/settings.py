"""Typed settings of ``custom.instability_monitor``, normalised from whatever the caller holds.

The trainer receives the section as a plain mapping (YAML), as the generated pydantic model, or
as any attribute object. The decision code wants one frozen, typed value with every default filled
in, so this module turns any of those into ``InstabilityMonitorSettings``.

Defaults and bounds are read from the config schema embedded in the package
(``coordexp.generated.schemas.CONFIG_SCHEMA``), so the schema stays the single source of truth:
a default changed there changes the monitor without an edit here. Unknown keys are ignored on
purpose (rejecting them is the config loader's job). Values of the wrong type or out of the
schema's bounds raise ``ValueError`` at construction time: a misconfigured monitor is a setup
error, not a runtime diagnostic failure, and silently "fixing" it would hide the mistake.
``None`` for a field (an empty YAML value) means "use the default".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from coordexp.generated.schemas import CONFIG_SCHEMA

__all__ = [
    "EarlyStopSettings",
    "GuardSettings",
    "InstabilityMonitorSettings",
    "normalize_monitor_config",
]

_MISSING: Final = object()
_DEFS: Final[Mapping[str, Any]] = CONFIG_SCHEMA["$defs"]


@dataclass(frozen=True, kw_only=True)
class GuardSettings:
    """``instability_monitor.guard``: when a bad step's loss is replaced by a differentiable zero."""

    enabled: bool
    guard_in_eval: bool
    guard_on_nonfinite: bool
    guard_on_spike: bool
    guard_on_zero_acc: bool
    min_token_acc: float
    max_abs_logit: float


@dataclass(frozen=True, kw_only=True)
class EarlyStopSettings:
    """``instability_monitor.early_stop``: which reasons stop training."""

    enabled: bool
    on_reasons: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class InstabilityMonitorSettings:
    """``custom.instability_monitor`` with every default filled in (see the config schema).

    ``enabled`` gates composition (the trainer builds a monitor only when it is true) and the
    collator's meta enricher; the monitor itself does not re-check it.
    """

    enabled: bool
    max_meta_samples: int
    ema_decay: float
    spike_factor: float
    abs_loss_threshold: float
    min_supervised_tokens: int
    dump_samples: bool
    dump_dir: str | None
    early_stop: EarlyStopSettings
    early_stop_on_zero_acc: bool
    guard: GuardSettings


_NESTED: Final[Mapping[str, type]] = {"EarlyStopConfig": EarlyStopSettings, "GuardConfig": GuardSettings}


def _get(cfg: object, name: str) -> Any:
    """Read ``name`` from a mapping or an attribute object; ``_MISSING`` when absent."""
    if cfg is None:
        return _MISSING
    if isinstance(cfg, Mapping):
        return cfg.get(name, _MISSING)
    return getattr(cfg, name, _MISSING)


def _check_bounds(value: float, prop: Mapping[str, Any], where: str) -> None:
    if "minimum" in prop and not value >= prop["minimum"]:
        raise ValueError(f"{where} must be >= {prop['minimum']}, got {value!r}")
    if "maximum" in prop and not value <= prop["maximum"]:
        raise ValueError(f"{where} must be <= {prop['maximum']}, got {value!r}")
    if "exclusiveMinimum" in prop and not value > prop["exclusiveMinimum"]:
        raise ValueError(f"{where} must be > {prop['exclusiveMinimum']}, got {value!r}")
    if "exclusiveMaximum" in prop and not value < prop["exclusiveMaximum"]:
        raise ValueError(f"{where} must be < {prop['exclusiveMaximum']}, got {value!r}")


def _types(prop: Mapping[str, Any]) -> set[str]:
    types = prop.get("type")
    return {types} if isinstance(types, str) else set(types or ())


def _coerce(value: Any, prop: Mapping[str, Any], where: str) -> Any:
    """Check ``value`` against one schema property (type, bounds, enum) and return it typed."""
    allowed = _types(prop)
    if value is None and "null" in allowed:
        return None
    if "enum" in prop:
        if not isinstance(value, str) or value not in prop["enum"]:
            raise ValueError(f"{where} must be one of {list(prop['enum'])}, got {value!r}")
        return str(value)
    if "boolean" in allowed and isinstance(value, bool):
        return value
    if "integer" in allowed and isinstance(value, int) and not isinstance(value, bool):
        _check_bounds(value, prop, where)
        return int(value)
    if "number" in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        _check_bounds(float(value), prop, where)
        return float(value)
    if "string" in allowed and isinstance(value, str | os.PathLike):
        return os.fspath(value)
    if "array" in allowed and isinstance(value, Sequence) and not isinstance(value, str | bytes):
        item_prop = prop.get("items", {})
        return tuple(_coerce(item, item_prop, f"{where}[{i}]") for i, item in enumerate(value))
    raise ValueError(f"{where} must be of type {sorted(allowed)}, got {value!r}")


def _normalize_section(cfg: object, def_name: str, cls: type, where: str) -> Any:
    definition = _DEFS[def_name]
    values: dict[str, Any] = {}
    for field in fields(cls):
        prop: Mapping[str, Any] = definition["properties"][field.name]
        raw = _get(cfg, field.name)
        ref = prop.get("$ref")
        if isinstance(ref, str):
            nested_def = ref.rsplit("/", 1)[-1]
            nested_cfg = None if raw is _MISSING else raw
            values[field.name] = _normalize_section(
                nested_cfg, nested_def, _NESTED[nested_def], f"{where}.{field.name}"
            )
            continue
        if raw is _MISSING or (raw is None and "null" not in _types(prop)):
            raw = prop.get("default")
        values[field.name] = _coerce(raw, prop, f"{where}.{field.name}")
    return cls(**values)


def normalize_monitor_config(cfg: object) -> InstabilityMonitorSettings:
    """Return ``cfg`` (mapping, attribute object, settings or ``None``) as typed settings.

    Raises ``ValueError`` for a value of the wrong type or outside the schema's bounds.
    """
    if isinstance(cfg, InstabilityMonitorSettings):
        return cfg
    settings: InstabilityMonitorSettings = _normalize_section(
        cfg, "InstabilityMonitorConfig", InstabilityMonitorSettings, "instability_monitor"
    )
    return settings
