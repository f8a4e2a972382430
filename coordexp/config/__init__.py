"""Typed ``custom.*`` configuration sections (YAML-first; no CLI flags)."""

from coordexp.config.loading import (
    BBoxGeoConfig,
    BBoxSizeAuxConfig,
    ConfigError,
    ContractsConfig,
    CoordSoftCEW1Config,
    EvalDetectionConfig,
    GradMonitorConfig,
    InstabilityMonitorConfig,
    MetricsConfig,
    Stage1CustomConfig,
    Stage1PassConfig,
    TokenTypeMetricsConfig,
    load_custom_config,
)

__all__ = [
    "BBoxGeoConfig",
    "BBoxSizeAuxConfig",
    "ConfigError",
    "ContractsConfig",
    "CoordSoftCEW1Config",
    "EvalDetectionConfig",
    "GradMonitorConfig",
    "InstabilityMonitorConfig",
    "MetricsConfig",
    "Stage1CustomConfig",
    "Stage1PassConfig",
    "TokenTypeMetricsConfig",
    "load_custom_config",
]
