"""Reporting: the single path from a step's values to ms-swift's ``custom_metrics``."""

from coordexp.reporting.reporter import BestEffort, MetricReporter, trainer_mode

__all__ = ["BestEffort", "MetricReporter", "trainer_mode"]
