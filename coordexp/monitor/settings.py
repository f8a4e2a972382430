"""Settings of ``custom.instability_monitor``: the generated (validated, frozen) config models.

``InstabilityMonitorSettings``, ``GuardSettings`` and ``EarlyStopSettings`` are the models
``tools/regen.py`` generates from ``schemas/config.schema.json``, so every default and bound is the
schema's. ``normalize_monitor_config`` accepts what callers hold: such a model (returned as is), a
plain mapping (YAML) or an attribute object. Unknown keys are ignored on purpose (rejecting them is
the config loader's job) and ``None`` for a field (an empty YAML value) means "use the default".
Types are checked strictly (a bool is no number, ``"yes"`` no bool) and values outside the schema's
bounds raise :class:`~coordexp.config.ConfigError` (a ``ValueError``) naming the key: a
misconfigured monitor is a setup error, not a runtime diagnostic failure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel, ValidationError

from coordexp.config.loading import ConfigError, describe_error
from coordexp.generated.models.config import EarlyStopConfig, GuardConfig, InstabilityMonitorConfig

__all__ = [
    "EarlyStopSettings",
    "GuardSettings",
    "InstabilityMonitorSettings",
    "normalize_monitor_config",
]

InstabilityMonitorSettings: TypeAlias = InstabilityMonitorConfig
GuardSettings: TypeAlias = GuardConfig
EarlyStopSettings: TypeAlias = EarlyStopConfig

_M = TypeVar("_M", bound=BaseModel)


def _read(cfg: object, name: str) -> Any:
    """``name`` of a mapping or an attribute object (None when absent)."""
    if isinstance(cfg, Mapping):
        return cfg.get(name)
    return getattr(cfg, name, None)


def _section(model: type[_M], cfg: object, where: str) -> _M:
    if isinstance(cfg, model):
        return cfg
    values = dict(model())  # the defaults, already typed: strict validation takes them as they are
    for name, field in model.model_fields.items():
        raw = None if cfg is None else _read(cfg, name)
        if raw is None:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            raw = _section(field.annotation, raw, f"{where}.{name}")
        elif isinstance(raw, os.PathLike):
            raw = os.fspath(raw)
        elif isinstance(raw, list):
            raw = tuple(raw)  # the models' arrays are tuples
        values[name] = raw
    try:
        return model.model_validate(values, strict=True)
    except ValidationError as exc:  # "instability_monitor.ema_decay must be < 1.0, got 2.0"
        lines = [
            f"{'.'.join([where, *map(str, e['loc'])])} {describe_error(e)}, got {e['input']!r}"
            for e in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None


def normalize_monitor_config(cfg: object) -> InstabilityMonitorSettings:
    """Return ``cfg`` (mapping, attribute object, settings or ``None``) as the validated model.

    Raises ``ConfigError`` (a ``ValueError``) for a value of the wrong type or outside the bounds.
    """
    return _section(InstabilityMonitorSettings, cfg, "instability_monitor")
