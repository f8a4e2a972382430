"""The public config names at their old import path: a thin facade over
:mod:`coordexp.config.loading` (nothing inside ``coordexp`` imports from here)."""

from coordexp.config.loading import (
    ConfigError,
    ContractsConfig,
    CoordSoftCEW1Config,
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
    "InstabilityMonitorConfig",
    "MetricsConfig",
    "Stage1CustomConfig",
    "Stage1PassConfig",
    "TokenTypeMetricsConfig",
    "load_custom_config",
]
