"""One explicit, ordered pipeline of Stage-1 components behind a single ``compute_loss``.

Order is fixed here, not by class order: runtime -> coord -> token metrics -> instability monitor.
Each phase of a step is a loop over the components (the phases of :class:`~.base.Component`); what
the step optimises is the pipeline's :class:`~.objective.Objective`, picked once (:func:`~.objective.
objective_for`) - the only place the coord loss's ``enabled`` changes the step.

One-pass path (an ms-swift trainer: the Stage-1 hook installs :class:`~coordexp.swift_seam.loss_func.
Stage1LossFunc` as its ``compute_loss_func``): ms-swift pops the labels, the model returns logits only,
and :meth:`Stage1Pipeline.fused_loss` computes the base CE, the coord terms and every statistic in ONE
autograd function over the logits (steps 2-5 below become that call). Two-pass path (a trainer without
that seam, e.g. a stand-in): per step,

1. take the batch extras (popped before the model sees them) and the ORIGINAL labels;
2. objective ``before_forward`` (coord loss: mask coord targets in the labels the model sees, set the
   base-CE count);
3. forward through the wrapped trainer's ``compute_loss`` (the model computes the base CE);
4. objective ``two_pass``: ONE fused pass over the logits for every component's statistics (each
   component's ``pass_request``) - for the enabled coord loss the same pass is the forward of its
   autograd function, which also adds the coord terms to the loss;
5. components ``after_loss`` (the monitor stages the loss), objective ``finish`` (coord loss:
   gradient-accumulation scaling of the train loss);
6. ONE device->host transfer of every statistic;
7. host side: components ``report`` (diagnostics best-effort; the monitor may guard the loss or stop
   training); the reporter writes the values through the guard; components ``end_step``.

Beside it: :mod:`.needs` (what the config asks, before a pipeline exists),
:mod:`.coord_vocab` (the coord ids, checked against the logits) and :mod:`.pass_inputs` (what the
fused pass reads of a step).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from coordexp.components.base import Component, PassRequest
from coordexp.components.box_terms import BoxTermsPart
from coordexp.components.context import StepContext
from coordexp.components.coord_loss import CoordLossComponent, CoordObjectiveError
from coordexp.components.coord_vocab import CoordVocab
from coordexp.components.instability import InstabilityMonitorComponent
from coordexp.components.needs import (
    COMPONENT_ORDER,
    COORD,
    MONITOR,
    RUNTIME,
    TOKEN_METRICS,
    active_components,
    materializes_logits,
)
from coordexp.components.objective import CoordObjective, Objective, SeamCall, objective_for
from coordexp.components.pass_inputs import MisalignedLogits, PassInputs, step_pass_inputs
from coordexp.components.runtime import RuntimeComponent, current_accumulation_steps
from coordexp.components.token_metrics import TokenMetricsComponent
from coordexp.config import MetricsConfig, Stage1CustomConfig
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.contracts.stash import BatchExtras
from coordexp.diagnostics.best_effort import BestEffort
from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.functional import DEFAULT_CHUNK_SIZE, STAT_KEYS, CoordSlice
from coordexp.functional.grad_monitor import GRAM_PREFIX
from coordexp.reporting import MetricReporter, trainer_mode
from coordexp.swift_seam.loss_func import Stage1LossFunc
from coordexp.swift_seam.output_head import HeadCapture, capture_output_head, report_token_acc
from coordexp.swift_seam.trainer_sections import find_tokenizer, trainer_custom

__all__ = ["COMPONENT_ORDER", "ForwardFn", "Stage1Pipeline"]

logger = logging.getLogger("coordexp")

ForwardFn = Callable[[dict[str, Any], Any], tuple[Tensor, Any]]


class Stage1Pipeline:
    """The Stage-1 components of one trainer, run in :data:`COMPONENT_ORDER`."""

    def __init__(
        self, trainer: Any, component_names: frozenset[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ):
        unknown = component_names - set(COMPONENT_ORDER)
        if unknown:
            raise ValueError(f"unknown Stage-1 components {sorted(unknown)}")
        self.chunk_size = chunk_size
        self.best_effort = BestEffort()
        self._warned = WarnOnce()  # failure kinds of the step's diagnostics
        custom = trainer_custom(trainer)  # the custom.* sections, parsed once
        self.reporter = MetricReporter(aggregation=(custom.metrics or MetricsConfig()).aggregation)
        # The mixins declare the components; the catalog says which of them the config needs.
        active = active_components(custom, component_names)
        coord, tokens, monitor = (
            custom.coord_soft_ce_w1,
            custom.token_type_metrics,
            custom.instability_monitor,
        )
        self._box_sections = custom
        self.runtime = RuntimeComponent() if RUNTIME in active else None
        self.coord = (
            CoordLossComponent(coord, BoxTermsPart.of(custom, coord.temperature), custom.grad_monitor)
            if COORD in active and coord is not None
            else None
        )
        self.token_metrics = (
            TokenMetricsComponent(tokens) if TOKEN_METRICS in active and tokens is not None else None
        )
        self.monitor = (
            InstabilityMonitorComponent(monitor, trainer)
            if MONITOR in active and monitor is not None
            else None
        )
        self.components: tuple[Component, ...] = tuple(
            c for c in (self.runtime, self.coord, self.token_metrics, self.monitor) if c is not None
        )
        self.objective: Objective = objective_for(self.coord, self.best_effort)
        self._active: StepContext | None = None  # the step whose forward is running (one-pass seam)
        self._head_capture: HeadCapture | None = None  # the swapped output head of that forward
        self.materialize_logits = materializes_logits(custom)
        self.coord_vocab = (
            CoordVocab(find_tokenizer(trainer), required=self.objective.strict)
            if self.coord is not None or self.token_metrics is not None
            else None
        )
        known = self.coord_vocab is not None and self.coord_vocab.known
        if not known and self.coord is not None:
            self.best_effort.disabled.add(COORD)
        if self.token_metrics is not None:
            self.token_metrics.coord_vocab_known = known
        if self.coord is not None:
            eos = getattr(find_tokenizer(trainer), "eos_token_id", None)
            self.coord.eos_token_id = eos if isinstance(eos, int) and not isinstance(eos, bool) else None
        self.reporter.register(trainer, self.enabled_keys())

    def enabled_keys(self) -> frozenset[str]:
        """The catalog keys these components may write (config conditions; batch ones assumed)."""
        sections = Stage1CustomConfig(
            coord_soft_ce_w1=self.coord.cfg if self.coord is not None else None,
            token_type_metrics=self.token_metrics.cfg if self.token_metrics is not None else None,
            bbox_geo=self._box_sections.bbox_geo if self.coord is not None else None,
            bbox_size_aux=self._box_sections.bbox_size_aux if self.coord is not None else None,
            grad_monitor=self.coord.grad_monitor if self.coord is not None else None,
        )
        return keys_written_under(conditions_from_config(sections))

    @property
    def coord_loss_enabled(self) -> bool:
        return isinstance(self.objective, CoordObjective)  # decided once, by ``objective_for``

    def coord_slice(self, device: torch.device, vocab_size: int | None = None) -> CoordSlice | None:
        """The coord ids on ``device``; checked against the logits' ``vocab_size`` when given."""
        if self.coord_vocab is None:
            return None
        coord = self.coord_vocab.slice(device, vocab_size)
        if coord is None and self.token_metrics is not None:
            self.token_metrics.coord_vocab_known = False
        return coord

    # -- the step -----------------------------------------------------------------------------
    def _request(self, ctx: StepContext) -> PassRequest | None:
        request: PassRequest | None = None
        for comp in self.components:
            if not self.best_effort.enabled(comp.name):
                continue
            part = comp.pass_request(ctx)
            if part is not None:
                request = part if request is None else request.merge(part)
        return request

    def run(
        self,
        trainer: Any,
        model: Any,
        inputs: dict[str, Any],
        extras: BatchExtras,
        num_items_in_batch: Any,
        forward: ForwardFn,
    ) -> tuple[Tensor, Any]:
        labels = inputs.get("labels")
        ctx = StepContext(
            trainer=trainer,
            model=model,
            mode=trainer_mode(model),
            inputs=inputs,
            labels=labels if isinstance(labels, Tensor) else None,
            extras=extras,
            num_items_in_batch=num_items_in_batch,
            forward_num_items=num_items_in_batch,
        )
        one_pass = isinstance(getattr(trainer, "compute_loss_func", None), Stage1LossFunc)
        self.objective.before_forward(ctx, self.coord_slice, one_pass)

        self._active = ctx
        try:
            if one_pass and not self.materialize_logits:
                with capture_output_head(model) as self._head_capture:
                    loss, outputs = forward(ctx.inputs, ctx.forward_num_items)
            else:
                loss, outputs = forward(ctx.inputs, ctx.forward_num_items)
        finally:
            self._active = None
            self._head_capture = None
        ctx.loss, ctx.outputs = loss, outputs
        if not ctx.fused:
            self._statistics(ctx)
        for comp in self.components:
            comp.after_loss(ctx)
        self.objective.finish(ctx)
        self._to_host(ctx)
        self._host_phase(ctx)
        for comp in self.components:
            comp.end_step(ctx)  # every rank, every call (the monitor's stop agreement is a collective)
        assert ctx.loss is not None
        return ctx.loss, outputs

    def fused_loss(self, trainer: Any, outputs: Any, labels: Any, num_items_in_batch: Any) -> Tensor:
        """The one-pass seam (``compute_loss_func``): the step's whole objective and every statistic.

        Coord loss on: base CE over the non-coord targets + coord terms, each a mean over this batch's
        rows (see :meth:`CoordLossComponent.fused_loss`). Off: the CE over every supervised target
        exactly as ms-swift + transformers compute it: ``Σ CE / num_items_in_batch`` (the accumulation
        window's count in training, the batch's in eval) when the model accepts loss kwargs, else the
        batch mean. transformers no longer divides by the accumulation steps once a
        ``compute_loss_func`` is set, so a train-mode per-batch mean is divided here, once.
        """
        ctx = self._active
        if ctx is None:
            raise RuntimeError(
                "coordexp: the Stage-1 compute_loss_func was called outside the Stage-1 compute_loss"
            )
        # materialize_logits: false: the "logits" are the hidden states the swapped head returned
        captured = self._head_capture
        hidden = captured.hidden if captured is not None else None
        head = captured.head if captured is not None and hidden is not None else None
        logits = hidden if hidden is not None else getattr(outputs, "logits", None)
        if not isinstance(labels, Tensor) or not isinstance(logits, Tensor):
            missing = (
                "the batch has no labels"
                if not isinstance(labels, Tensor)
                else "the model returned no logits"
            )
            raise CoordObjectiveError(f"coordexp: the Stage-1 loss cannot be computed: {missing}")
        ctx.labels = labels
        request = self._request(ctx) or PassRequest()
        vocab = None if head is None else head.weight.shape[0]
        inputs = self._pass_inputs(ctx, logits, request, strict=True, vocab=vocab)
        assert inputs is not None
        preds = None if head is None else torch.empty_like(inputs.targets)
        seam = SeamCall(head=head, preds=preds, num_items_in_batch=num_items_in_batch)
        value, stats, per_batch = self.objective.fused(ctx, inputs, request, seam)
        if preds is not None:
            report_token_acc(trainer, ctx.mode, preds, labels)
            outputs["logits"] = None  # they never existed: ms-swift skips its own token_acc
        if per_batch and ctx.mode == "train":
            steps = current_accumulation_steps(trainer)
            if steps > 1:
                value = value / steps
                ctx.loss_divisor = float(steps)
        ctx.stats, ctx.fused = stats, True
        return value

    def _pass_inputs(
        self,
        ctx: StepContext,
        logits: Tensor,
        request: PassRequest,
        *,
        strict: bool,
        vocab: int | None = None,
    ) -> PassInputs | None:
        """:func:`~coordexp.components.pass_inputs.step_pass_inputs` of the step. Logits that do not line
        up with the labels raise when ``strict`` (the objective depends on them), else skip the step's
        diagnostics (warned once)."""
        try:
            return step_pass_inputs(
                ctx, logits, request, self.coord_slice, chunk_size=self.chunk_size, vocab=vocab
            )
        except MisalignedLogits as exc:
            if strict:
                raise CoordObjectiveError(str(exc)) from exc
            self._warned.warn(
                "misaligned_logits",
                f"coordexp: {exc}; the step's diagnostics are skipped (warned once)",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    def _statistics(self, ctx: StepContext) -> None:
        """Two-pass path, after the model's forward: the objective's pass over the logits."""
        request = self._request(ctx)
        logits = getattr(ctx.outputs, "logits", None)
        if ctx.labels is None or not isinstance(logits, Tensor):
            self.objective.missing_inputs(
                "the batch has no labels" if ctx.labels is None else "the model returned no logits"
            )
            return
        strict = self.objective.strict
        if request is None and not strict:
            return  # no component asked for statistics and the objective needs none
        request = request or PassRequest()
        inputs = self._pass_inputs(ctx, logits, request, strict=strict)
        if inputs is None:
            return
        stats = self.objective.two_pass(ctx, inputs, request)
        if stats is not None:
            ctx.stats = stats

    def _to_host(self, ctx: StepContext) -> None:
        """The step's single device->host transfer."""
        names = list(ctx.device_values) + [k for k in STAT_KEYS if k in ctx.stats]
        names += [k for k in ctx.stats if k.startswith(GRAM_PREFIX)]  # a monitored step's Gram entries
        if not names:
            return
        values = [ctx.device_values[n] if n in ctx.device_values else ctx.stats[n] for n in names]
        device = values[0].device
        stacked = torch.stack([v.reshape(()).to(device=device, dtype=torch.float32) for v in values])
        ctx.host = dict(zip(names, stacked.to("cpu", copy=True).tolist(), strict=True))

    def _host_phase(self, ctx: StepContext) -> None:
        reporting = [c for c in self.components if c.reports(ctx)]  # decided before any report runs
        for comp in reporting:
            self.best_effort.run(comp.name, functools.partial(comp.report, ctx))
        self.reporter.write(ctx.trainer, ctx.mode, ctx.metrics, ctx.dataset_labels)
