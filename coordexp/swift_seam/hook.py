"""The one ``compute_loss`` seam of the Stage-1 mixins.

:class:`Stage1TrainerHook` owns the single ``compute_loss`` (and ``_prepare_inputs``) override and runs
the components the mixins in front of it declare through :class:`coordexp.components.Stage1Pipeline`
in a fixed order, so any subset of the mixins, in any order, gives the same keys and the same loss.

Trainer attributes read: ``coord_soft_ce_w1_cfg``, ``token_type_metrics_cfg``,
``instability_monitor_cfg``, ``metrics_cfg``, ``stage1_pass_cfg`` (the parsed section models, or the seed's
mappings; read through ``trainer_sections.trainer_custom``),
``template`` (its ``tokenizer``), ``custom_metrics``, ``args``, ``model.training``, ``state``, ``control``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import Tensor

from coordexp.components import Stage1Pipeline
from coordexp.components.extras_alignment import cut_like_labels
from coordexp.components.needs import materializes_logits, reads_logits
from coordexp.contracts.stash import (
    BatchExtras,
    get_stashed_batch_extras,
    pop_batch_extras,
    stash_batch_extras,
)
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS, EXTRA_SPECS
from coordexp.swift_seam.loss_func import Stage1LossFunc, refuse_unsupported_options
from coordexp.swift_seam.output_head import refuse_unmaterialised_options
from coordexp.swift_seam.trainer_sections import trainer_custom

__all__ = ["Stage1TrainerHook"]

_PIPELINE_ATTR = "_coordexp_stage1_pipeline"
_EXTRAS_PREPARED_ATTR = "_coordexp_extras_prepared"


# The per-token extras (declared ``shape_like: labels``): cut with the labels.
_PER_TOKEN_EXTRAS = tuple(key for key, spec in EXTRA_SPECS.items() if spec.shape_like == "labels")


def _align_per_token_extras(
    extras: BatchExtras, original_labels: Tensor | None, labels: Any, logits_to_keep: Any
) -> BatchExtras:
    """``extras`` with each per-token extra cut the way the framework cut the labels (or unchanged)."""
    if not isinstance(labels, Tensor):
        return extras
    cut = {
        key: cut_like_labels(value, original_labels, labels, logits_to_keep)
        for key in _PER_TOKEN_EXTRAS
        if isinstance(value := getattr(extras, key), Tensor)
    }
    return dataclasses.replace(extras, **cut) if cut else extras


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
        :class:`Stage1LossFunc` (one pass over the logits, see ``coordexp.swift_seam.loss_func``); loss
        options that pass would not honour are refused here, before anything runs.
        """
        res: dict[str, Any] = super().create_loss_and_eval_metric(args)  # type: ignore[misc]
        custom = trainer_custom(self)
        one_pass = reads_logits(custom, type(self).stage1_components())
        if not materializes_logits(custom):
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
            extras = _align_per_token_extras(
                extras, original_on_device, labels, prepared.get("logits_to_keep")
            )
        stash_batch_extras(self, extras)
        self.__dict__[_EXTRAS_PREPARED_ATTR] = True
        return prepared

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if any(k in inputs for k in BATCH_EXTRAS_KEYS):
            # Called without our _prepare_inputs (stand-in trainers, direct calls): pop here.
            extras = pop_batch_extras(inputs)
            extras = _align_per_token_extras(extras, None, inputs.get("labels"), inputs.get("logits_to_keep"))
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
