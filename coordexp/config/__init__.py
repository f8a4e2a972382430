"""Typed ``custom.*`` configuration sections (YAML-first; no CLI flags)."""

from coordexp.config.loading import (
    ConfigError,
    ContractsConfig,
    CoordSoftCEW1Config,
    EvalDetectionConfig,
    InstabilityMonitorConfig,
    MetricsConfig,
    Stage1CustomConfig,
    Stage1PassConfig,
    TokenTypeMetricsConfig,
    load_custom_config,
)

__all__ = [
    "ConfigError",
    "ContractsConfig",
    "CoordSoftCEW1Config",
    "EvalDetectionConfig",
    "InstabilityMonitorConfig",
    "MetricsConfig",
    "Stage1CustomConfig",
    "Stage1PassConfig",
    "TokenTypeMetricsConfig",
    "load_custom_config",
]
