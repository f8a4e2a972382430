"""Stage-1 trainer mixins (public names kept) as thin shells over one pipeline.

Each mixin only *declares* a component; the shared base :class:`Stage1TrainerHook` owns the single
``compute_loss`` (and ``_prepare_inputs``) override and runs the declared components through
:class:`coordexp.components.Stage1Pipeline` in a fixed order. So any subset of the mixins, in any
order, in front of a trainer class gives the same keys and the same loss.

Trainer attributes read: ``coord_soft_ce_w1_cfg``, ``token_type_metrics_cfg``,
``instability_monitor_cfg``, ``metrics_cfg``, ``stage1_pass_cfg`` (mappings or config objects),
``template`` (its ``tokenizer``), ``custom_metrics``, ``args``, ``model.training``, ``state``, ``control``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from coordexp.components import COMPONENT_ORDER, Stage1Pipeline
from coordexp.components.extras_alignment import cut_like_labels
from coordexp.components.loss_seam import Stage1LossFunc, refuse_unsupported_options
from coordexp.components.output_head import refuse_unmaterialised_options
from coordexp.components.pipeline import materializes_logits, reads_logits
from coordexp.config import Stage1CustomConfig, load_custom_config
from coordexp.contracts.stash import (
    BatchExtras,
    get_stashed_batch_extras,
    pop_batch_extras,
    stash_batch_extras,
)
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS

_PIPELINE_ATTR = "_coordexp_stage1_pipeline"
_EXTRAS_PREPARED_ATTR = "_coordexp_extras_prepared"


def _align_token_types(
    extras: BatchExtras, original_labels: Tensor | None, labels: Any, logits_to_keep: Any
) -> BatchExtras:
    """``extras`` with ``token_types`` cut the way the framework cut the labels (or unchanged)."""
    if not (isinstance(extras.token_types, Tensor) and isinstance(labels, Tensor)):
        return extras
    cut = cut_like_labels(extras.token_types, original_labels, labels, logits_to_keep)
    return dataclasses.replace(extras, token_types=cut)


def _move(extras: BatchExtras, device: Any) -> BatchExtras:
    moved = {
        name: (value.to(device, non_blocking=True) if isinstance(value, Tensor) else value)
        for name, value in extras.as_dict().items()
    }
    return BatchExtras(**moved)


class Stage1TrainerHook:
    """The one ``compute_loss`` seam of the Stage-1 mixins (see the module docstring)."""

    _stage1_component: ClassVar[str | None] = None

    @classmethod
    def stage1_components(cls) -> frozenset[str]:
        """Components declared by the mixins in this class's MRO (order irrelevant)."""
        return frozenset(
            name for klass in cls.__mro__ if (name := klass.__dict__.get("_stage1_component")) is not None
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "template", None) is not None:
            # Fail fast, before any step runs (e.g. coord loss on, tokenizer without coord tokens).
            pipeline = self.stage1_pipeline()
            if pipeline.monitor is not None and callable(getattr(self, "add_callback", None)):
                # The monitor's EMA goes into every checkpoint and comes back on resume.
                self.add_callback(pipeline.monitor.state_callback())  # type: ignore[attr-defined]

    def create_loss_and_eval_metric(self, args: Any) -> dict[str, Any]:
        """ms-swift's seam for ``compute_loss_func`` (called while its trainer is being built).

        With any Stage-1 feature that reads the logits, the whole objective goes through
        :class:`Stage1LossFunc` (one pass over the logits, see ``coordexp.components.loss_seam``); loss
        options that pass would not honour are refused here, before anything runs.
        """
        res: dict[str, Any] = super().create_loss_and_eval_metric(args)  # type: ignore[misc]
        one_pass = reads_logits(self, type(self).stage1_components())
        if not materializes_logits(self):
            refuse_unmaterialised_options(args, reads_logits=one_pass)
        if one_pass:
            refuse_unsupported_options(args, getattr(self, "template", None))
            res["compute_loss_func"] = Stage1LossFunc(self)
        return res

    def stage1_pipeline(self) -> Stage1Pipeline:
        pipeline = self.__dict__.get(_PIPELINE_ATTR)
        if pipeline is None:
            pipeline = Stage1Pipeline(self, type(self).stage1_components())
            self.__dict__[_PIPELINE_ATTR] = pipeline
        return pipeline

    def _prepare_inputs(self, inputs: Any) -> Any:
        # Pop the extras before the framework sees them, remember the uncut labels, then align the
        # per-token extras with whatever the framework did to the labels (logits_to_keep).
        if not isinstance(inputs, dict) or not any(k in inputs for k in BATCH_EXTRAS_KEYS):
            return super()._prepare_inputs(inputs)  # type: ignore[misc]
        extras = pop_batch_extras(inputs)
        original = inputs.get("labels")
        prepared = super()._prepare_inputs(inputs)  # type: ignore[misc]
        labels = prepared.get("labels")
        if isinstance(labels, Tensor):
            extras = _move(extras, labels.device)
            original_on_device = original.to(labels.device) if isinstance(original, Tensor) else None
            extras = _align_token_types(extras, original_on_device, labels, prepared.get("logits_to_keep"))
        stash_batch_extras(self, extras)
        self.__dict__[_EXTRAS_PREPARED_ATTR] = True
        return prepared

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if any(k in inputs for k in BATCH_EXTRAS_KEYS):
            # Called without our _prepare_inputs (stand-in trainers, direct calls): pop here.
            extras = pop_batch_extras(inputs)
            extras = _align_token_types(extras, None, inputs.get("labels"), inputs.get("logits_to_keep"))
            stash_batch_extras(self, extras)
        elif not self.__dict__.get(_EXTRAS_PREPARED_ATTR, False):
            # A batch without extras: this step has none (never reuse the previous step's).
            stash_batch_extras(self, BatchExtras())
        self.__dict__[_EXTRAS_PREPARED_ATTR] = False
        extras = get_stashed_batch_extras(self) or BatchExtras()
        parent = super()

        def forward(model_inputs: dict[str, Any], num_items: Any) -> tuple[Tensor, Any]:
            result = parent.compute_loss(  # type: ignore[misc,attr-defined]
                model,
                model_inputs,
                return_outputs=True,
                num_items_in_batch=num_items,
            )
            return result[0], result[1]

        loss, outputs = self.stage1_pipeline().run(self, model, inputs, extras, num_items_in_batch, forward)
        return (loss, outputs) if return_outputs else loss


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
        from coordexp.data_collators.dataset_metrics import build_dataset_metrics_collator

        base = super()._get_data_collator(args, template)  # type: ignore[misc]
        return build_dataset_metrics_collator(
            template,
            base_collator=base,
            token_type_cfg=self.token_type_metrics_cfg,
            instability_monitor_cfg=self.instability_monitor_cfg,
            extra_enrichers=self.stage1_extra_enrichers,
        )


MIXIN_BY_COMPONENT: dict[str, type[Stage1TrainerHook]] = {
    "runtime": GradAccumLossScaleMixin,
    "coord_soft_ce_w1": CoordSoftCEW1LossMixin,
    "token_metrics": AggregateTokenTypeMetricsMixin,
    "instability_monitor": InstabilityMonitorMixin,
}
assert tuple(MIXIN_BY_COMPONENT) == COMPONENT_ORDER


def components_for(custom: Stage1CustomConfig) -> list[str]:
    """Components the training entry turns on for a ``custom:`` block."""
    names = ["runtime"]
    if custom.coord_soft_ce_w1 is not None:  # loss when enabled, diagnostics otherwise
        names.append("coord_soft_ce_w1")
    if custom.token_type_metrics is not None and custom.token_type_metrics.enabled:
        names.append("token_metrics")
    if custom.instability_monitor is not None and custom.instability_monitor.enabled:
        names.append("instability_monitor")
    return names


def build_trainer_cls(
    base_trainer_cls: type,
    custom_cfg: Mapping[str, Any] | Stage1CustomConfig | None,
    *,
    instability_source_files: Mapping[str, str] | None = None,
) -> type:
    """Compose the Stage-1 trainer class from ``custom:`` the way the training entry does.

    The class carries the config sections as class attributes (``coord_soft_ce_w1_cfg`` ...), so
    instances read them without extra constructor arguments.
    """
    custom = custom_cfg if isinstance(custom_cfg, Stage1CustomConfig) else load_custom_config(custom_cfg)
    names = components_for(custom)
    mixins = tuple(MIXIN_BY_COMPONENT[name] for name in names)
    attrs: dict[str, Any] = {
        "coord_soft_ce_w1_cfg": custom.coord_soft_ce_w1,
        "token_type_metrics_cfg": custom.token_type_metrics,
        "instability_monitor_cfg": custom.instability_monitor,
        "metrics_cfg": custom.metrics,
        "stage1_pass_cfg": custom.stage1_pass,
        # Sample dumps read each row at the source file and line kept from loading; this label ->
        # file mapping only serves samples whose meta has no source position (meta built elsewhere).
        "instability_source_files": dict(instability_source_files or {}),
        "__module__": __name__,
        "__doc__": f"{base_trainer_cls.__name__} with Stage-1 components: {', '.join(names)}.",
    }
    bases = (*mixins, DatasetMetricsCollatorMixin, base_trainer_cls)
    return type(f"Stage1{base_trainer_cls.__name__}", bases, attrs)
