"""Stage-1 trainer assembly: the ``compute_loss`` hook (:mod:`.hook`), the mixins that declare its
components (:mod:`.mixins`) and ``build_trainer_cls`` (:mod:`.assembly`)."""

from coordexp.trainer.assembly import build_trainer_cls, components_for
from coordexp.trainer.hook import Stage1TrainerHook
from coordexp.trainer.mixins import (
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
