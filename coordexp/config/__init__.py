"""Typed ``custom.*`` configuration sections (YAML-first; no CLI flags)."""

from coordexp.config.schema import (
    ConfigError,
    ContractsConfig,
    CoordSoftCEW1Config,
    InstabilityMonitorConfig,
    Stage1CustomConfig,
    TokenTypeMetricsConfig,
    load_custom_config,
)

__all__ = [
    "ConfigError",
    "ContractsConfig",
    "CoordSoftCEW1Config",
    "InstabilityMonitorConfig",
    "Stage1CustomConfig",
    "TokenTypeMetricsConfig",
    "load_custom_config",
]
