"""The trainer mixins and ``build_trainer_cls`` at their old import path: a thin facade over
:mod:`coordexp.swift_seam` (nothing inside ``coordexp`` imports from here)."""

from coordexp.swift_seam.assembly import build_trainer_cls, components_for
from coordexp.swift_seam.hook import Stage1TrainerHook
from coordexp.swift_seam.mixins import (
    MIXIN_BY_COMPONENT,
    AggregateTokenTypeMetricsMixin,
    CoordSoftCEW1LossMixin,
    DatasetMetricsCollatorMixin,
    GradAccumLossScaleMixin,
    InstabilityMonitorMixin,
)

__all__ = [
    "MIXIN_BY_COMPONENT",
    "AggregateTokenTypeMetricsMixin",
    "CoordSoftCEW1LossMixin",
    "DatasetMetricsCollatorMixin",
    "GradAccumLossScaleMixin",
    "InstabilityMonitorMixin",
    "Stage1TrainerHook",
    "build_trainer_cls",
    "components_for",
]
