"""Reporting: the single path from a step's values to ms-swift's ``custom_metrics``."""

from coordexp.reporting.aggregation import AggregationMode, Ratio, StepValue, metric_for
from coordexp.reporting.reporter import MetricReporter, trainer_mode

__all__ = [
    "AggregationMode",
    "MetricReporter",
    "Ratio",
    "StepValue",
    "metric_for",
    "trainer_mode",
]
