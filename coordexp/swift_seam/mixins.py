"""The Stage-1 trainer mixins (public names kept): each only *declares* a component.

The shared base :class:`~coordexp.swift_seam.hook.Stage1TrainerHook` runs the declared components;
:class:`DatasetMetricsCollatorMixin` wraps the framework's collator with the enrichers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from coordexp.components import COMPONENT_ORDER
from coordexp.swift_seam.hook import Stage1TrainerHook

__all__ = [
    "MIXIN_BY_COMPONENT",
    "AggregateTokenTypeMetricsMixin",
    "CoordSoftCEW1LossMixin",
    "DatasetMetricsCollatorMixin",
    "GradAccumLossScaleMixin",
    "InstabilityMonitorMixin",
]


class GradAccumLossScaleMixin(Stage1TrainerHook):
    """Strips and stashes batch extras; writes the runtime keys (learning rate, accumulation)."""

    _stage1_component: ClassVar[str | None] = "runtime"


class CoordSoftCEW1LossMixin(Stage1TrainerHook):
    """Coord loss (``custom.coord_soft_ce_w1.enabled``) or, when disabled, its diagnostics."""

    _stage1_component: ClassVar[str | None] = "coord_soft_ce_w1"


class AggregateTokenTypeMetricsMixin(Stage1TrainerHook):
    """Aggregate token-type metrics and coord monitors (``custom.token_type_metrics``)."""

    _stage1_component: ClassVar[str | None] = "token_metrics"


class InstabilityMonitorMixin(Stage1TrainerHook):
    """Instability monitor: events, sample dumps, early stop, guard (``custom.instability_monitor``)."""

    _stage1_component: ClassVar[str | None] = "instability_monitor"


class DatasetMetricsCollatorMixin:
    """ms-swift seam: wrap the template's collator with the dataset-metrics collator (the enrichers).

    ms-swift refuses a ``data_collator=`` constructor argument; ``_get_data_collator`` is where it
    builds its own, so the wrapping happens there.
    """

    token_type_metrics_cfg: Any = None
    instability_monitor_cfg: Any = None
    stage1_extra_enrichers: tuple[Any, ...] = ()
    """Further enrichers to run after the built-in ones (each declares the extras it emits)."""

    def _get_data_collator(self, args: Any, template: Any) -> Any:
        from coordexp.components.box_terms import BoxTermsPart
        from coordexp.rows.collator import build_dataset_metrics_collator
        from coordexp.swift_seam.trainer_sections import trainer_custom

        base = super()._get_data_collator(args, template)  # type: ignore[misc]
        return build_dataset_metrics_collator(
            template,
            base_collator=base,
            token_type_cfg=self.token_type_metrics_cfg,
            instability_monitor_cfg=self.instability_monitor_cfg,
            extra_enrichers=self.stage1_extra_enrichers,
            box_slots=BoxTermsPart.wanted(trainer_custom(self)),
        )


MIXIN_BY_COMPONENT: dict[str, type[Stage1TrainerHook]] = {
    "runtime": GradAccumLossScaleMixin,
    "coord_soft_ce_w1": CoordSoftCEW1LossMixin,
    "token_metrics": AggregateTokenTypeMetricsMixin,
    "instability_monitor": InstabilityMonitorMixin,
}
assert tuple(MIXIN_BY_COMPONENT) == COMPONENT_ORDER
