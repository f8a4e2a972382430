"""Settings of ``custom.instability_monitor``: the generated (validated, frozen) config models.

``InstabilityMonitorSettings``, ``GuardSettings`` and ``EarlyStopSettings`` are the models
``tools/regen.py`` generates from ``schemas/config.schema.json``, so every default and bound is the
schema's. ``normalize_monitor_config`` is the monitor's name for the one parse of a section a caller
holds (:func:`coordexp.config.loading.held_section`): such a model (returned as is), a plain mapping
(YAML) or an attribute object; unknown keys ignored, None for "the default", strict types, and values
outside the schema's bounds raise :class:`~coordexp.config.ConfigError` (a ``ValueError``) naming the
key: a misconfigured monitor is a setup error, not a runtime diagnostic failure.
"""

from __future__ import annotations

from typing import TypeAlias

from coordexp.config.loading import held_section
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


def normalize_monitor_config(cfg: object) -> InstabilityMonitorSettings:
    """Return ``cfg`` (mapping, attribute object, settings or ``None``) as the validated model.

    Raises ``ConfigError`` (a ``ValueError``) for a value of the wrong type or outside the bounds.
    """
    return held_section(InstabilityMonitorSettings, cfg)
