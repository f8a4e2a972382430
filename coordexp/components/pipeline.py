"""One explicit, ordered pipeline of Stage-1 components behind a single ``compute_loss``.

Order is fixed here, not by class order: runtime -> coord -> token metrics -> instability monitor.

One-pass path (an ms-swift trainer: the Stage-1 hook installs :class:`~coordexp.components.loss_seam.
Stage1LossFunc` as its ``compute_loss_func``): ms-swift pops the labels, the model returns logits only,
and :meth:`Stage1Pipeline.fused_loss` computes the base CE, the coord terms and every statistic in ONE
autograd function over the logits (steps 2-5 below become that call). Two-pass path (a trainer without
that seam, e.g. a stand-in): per step,

1. take the batch extras (popped before the model sees them) and the ORIGINAL labels;
2. coord (objective): mask coord targets in the labels the model sees, set the base-CE count;
3. forward through the wrapped trainer's ``compute_loss`` (the model computes the base CE);
4. ONE fused pass over the logits for every component's statistics - for the enabled coord loss the
   same pass is the forward of its autograd function, which also adds the coord terms to the loss;
5. coord: gradient-accumulation scaling of the train loss;
6. ONE device->host transfer of every statistic;
7. host side: each component turns statistics into metric values (diagnostics best-effort), the
   monitor may guard the loss or stop training; the reporter writes the values through the guard.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from coordexp.components.base import Component, PassRequest
from coordexp.components.context import StepContext
from coordexp.components.coord_loss import CoordLossComponent, CoordObjectiveError, accumulation_steps
from coordexp.components.instability import InstabilityMonitorComponent
from coordexp.components.loss_seam import Stage1LossFunc
from coordexp.components.output_head import HeadCapture, capture_output_head, report_token_acc
from coordexp.components.runtime import RuntimeComponent
from coordexp.components.token_metrics import TokenMetricsComponent
from coordexp.config import (
    CoordSoftCEW1Config,
    InstabilityMonitorConfig,
    MetricsConfig,
    Stage1CustomConfig,
    Stage1PassConfig,
    TokenTypeMetricsConfig,
)
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.coord_tokens.codec import CoordVocabError, get_coord_token_ids
from coordexp.functional import (
    DEFAULT_CHUNK_SIZE,
    STAT_KEYS,
    CoordLossConfig,
    CoordSlice,
    ce_loss,
    next_token_targets,
    next_token_types,
    stage1_stats,
)
from coordexp.functional.linear_pass import linear_ce_loss
from coordexp.generated.batch_extras import BatchExtras
from coordexp.reporting import BestEffort, MetricReporter, trainer_mode

logger = logging.getLogger("coordexp")

RUNTIME = RuntimeComponent.name
COORD = CoordLossComponent.name
TOKEN_METRICS = TokenMetricsComponent.name
MONITOR = InstabilityMonitorComponent.name
COMPONENT_ORDER = (RUNTIME, COORD, TOKEN_METRICS, MONITOR)

ForwardFn = Callable[[dict[str, Any], Any], tuple[Tensor, Any]]


def _section(trainer: Any, attr: str, cls: Any) -> Any:
    raw = getattr(trainer, attr, None)
    return None if raw is None else cls.from_mapping(raw)


def _usable_token_types(token_types: Any, labels: Tensor) -> bool:
    """Token types the pass can use: an integer tensor shaped like the labels. Anything else (a
    collator without the contract guard, a misaligned cut) means "no types" for the step."""
    return (
        isinstance(token_types, Tensor)
        and token_types.shape == labels.shape
        and not token_types.is_floating_point()
        and not token_types.is_complex()
        and token_types.dtype != torch.bool
    )


def reads_logits(trainer: Any, component_names: frozenset[str]) -> bool:
    """Whether a trainer with these components computes anything from the logits (then the whole
    objective goes through the one-pass seam); from the config sections alone, before any step."""
    if COORD in component_names and getattr(trainer, "coord_soft_ce_w1_cfg", None) is not None:
        return True
    for name, attr, cls in (
        (TOKEN_METRICS, "token_type_metrics_cfg", TokenTypeMetricsConfig),
        (MONITOR, "instability_monitor_cfg", InstabilityMonitorConfig),
    ):
        if name in component_names:
            cfg = _section(trainer, attr, cls)
            if cfg is not None and cfg.enabled:
                return True
    return False


def materializes_logits(trainer: Any) -> bool:
    """``custom.stage1_pass.materialize_logits`` of a trainer (default true), from its config section
    alone (readable while the trainer is being built, before its pipeline exists)."""
    cfg = _section(trainer, "stage1_pass_cfg", Stage1PassConfig)
    return True if cfg is None else bool(cfg.materialize_logits)


def find_tokenizer(trainer: Any) -> Any:
    template = getattr(trainer, "template", None)
    for owner, name in ((template, "tokenizer"), (trainer, "processing_class"), (trainer, "tokenizer")):
        tok = getattr(owner, name, None) if owner is not None else None
        if tok is not None:
            return getattr(tok, "tokenizer", tok)  # processors wrap the tokenizer
    return None


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
        self._warned: set[str] = set()
        metrics_cfg = _section(trainer, "metrics_cfg", MetricsConfig) or MetricsConfig()
        self.reporter = MetricReporter(aggregation=metrics_cfg.aggregation)
        self.runtime = RuntimeComponent() if RUNTIME in component_names else None
        coord_cfg = (
            _section(trainer, "coord_soft_ce_w1_cfg", CoordSoftCEW1Config)
            if COORD in component_names
            else None
        )
        self.coord = CoordLossComponent(coord_cfg) if coord_cfg is not None else None
        token_cfg = (
            _section(trainer, "token_type_metrics_cfg", TokenTypeMetricsConfig)
            if TOKEN_METRICS in component_names
            else None
        )
        self.token_metrics = (
            TokenMetricsComponent(token_cfg) if token_cfg is not None and token_cfg.enabled else None
        )
        monitor_cfg = (
            _section(trainer, "instability_monitor_cfg", InstabilityMonitorConfig)
            if MONITOR in component_names
            else None
        )
        self.monitor = (
            InstabilityMonitorComponent(monitor_cfg, trainer)
            if monitor_cfg is not None and monitor_cfg.enabled
            else None
        )
        self._coord_ids: list[int] | None = None
        self._coord_slice: CoordSlice | None = None
        self._active: StepContext | None = None  # the step whose forward is running (one-pass seam)
        self._head_capture: HeadCapture | None = None  # the swapped output head of that forward
        self.materialize_logits = materializes_logits(trainer)
        self._resolve_coord_vocab(trainer)
        self.reporter.register(trainer, self.enabled_keys())

    def enabled_keys(self) -> frozenset[str]:
        """The catalog keys these components may write (config conditions; batch ones assumed)."""
        sections = Stage1CustomConfig(
            coord_soft_ce_w1=self.coord.cfg if self.coord is not None else None,
            token_type_metrics=self.token_metrics.cfg if self.token_metrics is not None else None,
        )
        return keys_written_under(conditions_from_config(sections))

    @property
    def components(self) -> list[Any]:
        return [c for c in (self.runtime, self.coord, self.token_metrics, self.monitor) if c is not None]

    @property
    def coord_loss_enabled(self) -> bool:
        return self.coord is not None and self.coord.enabled

    def _warn_once(self, kind: str, message: str) -> None:
        if kind in self._warned:
            return
        self._warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- coord vocabulary ----------------------------------------------------------------------
    def _resolve_coord_vocab(self, trainer: Any) -> None:
        wants = self.coord is not None or self.token_metrics is not None
        if not wants:
            return
        tokenizer = find_tokenizer(trainer)
        try:
            if tokenizer is None:
                raise CoordVocabError(
                    "the trainer has no tokenizer (template.tokenizer) to read coord tokens from"
                )
            self._coord_ids = get_coord_token_ids(tokenizer)
        except CoordVocabError as exc:
            if self.coord_loss_enabled:
                raise CoordObjectiveError(
                    f"custom.coord_soft_ce_w1.enabled is true but the coord vocabulary is unusable: {exc}"
                ) from exc
            warnings.warn(
                f"coordexp: coord tokens unavailable ({exc}); coord diagnostics and coord monitors "
                "are skipped",
                RuntimeWarning,
                stacklevel=2,
            )
            if self.coord is not None:
                self.best_effort.disabled.add(COORD)
        if self.token_metrics is not None:
            self.token_metrics.coord_vocab_known = self._coord_ids is not None

    def coord_slice(self, device: torch.device, vocab_size: int | None = None) -> CoordSlice | None:
        """The coord ids on ``device``; checked against the logits' ``vocab_size`` when given."""
        if self._coord_ids is None:
            return None
        if self._coord_slice is None or self._coord_slice.device != device:
            self._coord_slice = CoordSlice.from_ids(self._coord_ids, device=device)
        max_id = self._coord_slice.max_id
        if vocab_size is not None and max_id is not None and max_id >= vocab_size:
            message = (
                f"coord token id {max_id} is beyond the logits' vocabulary ({vocab_size}): "
                "the tokenizer and the model's embedding size disagree"
            )
            if self.coord_loss_enabled:
                raise CoordObjectiveError(f"custom.coord_soft_ce_w1: {message}")
            warnings.warn(f"coordexp: {message}; coord diagnostics are skipped", RuntimeWarning, stacklevel=2)
            self._coord_ids = None
            if self.token_metrics is not None:
                self.token_metrics.coord_vocab_known = False
            return None
        return self._coord_slice

    # -- the step -----------------------------------------------------------------------------
    def _request(self, ctx: StepContext) -> PassRequest | None:
        request: PassRequest | None = None
        for comp in (self.coord, self.token_metrics, self.monitor):
            if comp is None or not self.best_effort.enabled(comp.name):
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
        if self.coord_loss_enabled:
            # The vocab size is only known from the logits; ids are validated again after the forward.
            # Both raise when the batch has no labels (before the forward, with a clear message).
            coord = self.coord_slice(ctx.labels.device) if ctx.labels is not None else None
            assert self.coord is not None
            if one_pass:
                self.coord.require(ctx, coord)
            else:
                self.coord.prepare(ctx, coord)

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
            if self.coord_loss_enabled:
                ctx.device_values["base_loss"] = loss.detach().to(torch.float32)
            self._statistics(ctx)
        if ctx.loss is not None and self.monitor is not None:
            # the monitor compares per-batch losses: undo the seam's accumulation division
            ctx.device_values["loss"] = ctx.loss.detach().to(torch.float32) * ctx.loss_divisor
        if self.coord is not None:
            self.coord.scale_for_accumulation(ctx)
        self._to_host(ctx)
        self._host_phase(ctx)
        if self.monitor is not None:
            self.monitor.agree_on_stop(ctx)  # every rank, every call: a collective when distributed
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
        prepared = self._pass_inputs(ctx, logits, request, strict=True, vocab=vocab)
        assert prepared is not None
        flat, targets, types, coord = prepared
        preds = None if head is None else torch.empty_like(targets)
        if self.coord_loss_enabled:
            assert self.coord is not None
            value, stats = self.coord.fused_loss(
                ctx,
                self.coord.require(ctx, coord),
                flat,
                targets,
                types,
                request,
                self.chunk_size,
                head=head,
                preds=preds,
            )
            per_batch = True
        else:
            accepts = bool(getattr(trainer, "model_accepts_loss_kwargs", False))
            count = num_items_in_batch if accepts else None
            options: dict[str, Any] = dict(
                denominator=count,
                coord=coord,
                coord_cfg=request.coord_cfg if self.best_effort.enabled(COORD) else None,
                types=types,
                top5=request.top5,
                mass=request.mass,
                mass_max_tokens=request.mass_max_tokens,
                chunk_size=self.chunk_size,
            )
            if head is None:
                value, stats = ce_loss(flat, targets, **options)
            else:
                value, stats = linear_ce_loss(flat, head, targets, preds=preds, **options)
            per_batch = count is None
        if preds is not None:
            report_token_acc(trainer, ctx.mode, preds, labels)
            outputs["logits"] = None  # they never existed: ms-swift skips its own token_acc
        if per_batch and ctx.mode == "train":
            steps = accumulation_steps(trainer)
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
    ) -> tuple[Tensor, Tensor, Tensor | None, CoordSlice | None] | None:
        """``(logits [N, V], targets [N], types, coord slice)`` of the step; records the pack size.

        With ``vocab`` (``materialize_logits: false``), ``logits`` are the hidden states ``[..., H]`` of a
        head with ``vocab`` outputs, returned as ``[N, H]``.

        Logits that do not line up with the labels raise when ``strict`` (the objective depends on
        them), else skip the step's diagnostics (warned once).
        """
        assert ctx.labels is not None
        flat = logits.reshape(-1, logits.shape[-1])
        vocab = logits.shape[-1] if vocab is None else vocab
        targets = next_token_targets(ctx.labels)
        if flat.shape[0] != targets.shape[0]:
            message = f"logits {tuple(logits.shape)} do not line up with labels {tuple(ctx.labels.shape)}"
            if strict:
                raise CoordObjectiveError(message)
            self._warn_once(
                "misaligned_logits", f"coordexp: {message}; the step's diagnostics are skipped (warned once)"
            )
            return None
        types = None
        token_types = ctx.extras.token_types
        if request.types and _usable_token_types(token_types, ctx.labels):
            assert isinstance(token_types, Tensor)
            types = next_token_types(token_types.to(device=ctx.labels.device, dtype=torch.long))
        coord = self.coord_slice(flat.device, vocab)
        pack = ctx.extras.pack_num_samples
        if isinstance(pack, Tensor) and pack.numel() > 0 and not pack.is_complex():
            ctx.device_values["pack_samples"] = pack.sum().to(torch.float32)
        return flat, targets, types, coord

    def _statistics(self, ctx: StepContext) -> None:
        request = self._request(ctx)
        logits = getattr(ctx.outputs, "logits", None)
        if ctx.labels is None or not isinstance(logits, Tensor):
            if self.coord_loss_enabled:
                missing = "the batch has no labels" if ctx.labels is None else "the model returned no logits"
                raise CoordObjectiveError(f"custom.coord_soft_ce_w1.enabled is true but {missing}")
            return
        if request is None and not self.coord_loss_enabled:
            return
        request = request or PassRequest()
        prepared = self._pass_inputs(ctx, logits, request, strict=self.coord_loss_enabled)
        if prepared is None:
            return
        flat, targets, types, coord = prepared

        if self.coord_loss_enabled:
            assert self.coord is not None
            if coord is None:
                raise CoordObjectiveError(
                    "custom.coord_soft_ce_w1.enabled is true but the coord vocabulary is unknown"
                )
            try:
                ctx.stats = self.coord.add_coord_loss(
                    ctx, coord, flat, targets, types, request, self.chunk_size
                )
            except CoordObjectiveError:
                raise
            except Exception as exc:
                raise CoordObjectiveError(
                    f"custom.coord_soft_ce_w1: the enabled coord loss failed ({type(exc).__name__}: {exc}); "
                    "refusing to train on without it"
                ) from exc
            return
        coord_cfg: CoordLossConfig | None = request.coord_cfg if self.best_effort.enabled(COORD) else None

        def diagnostics() -> dict[str, Tensor]:
            with torch.no_grad():
                return stage1_stats(
                    flat.detach(),
                    targets,
                    coord=coord,
                    types=types,
                    top5=request.top5,
                    mass=request.mass,
                    mass_max_tokens=request.mass_max_tokens,
                    coord_cfg=coord_cfg if coord is not None else None,
                    chunk_size=self.chunk_size,
                )

        stats = self.best_effort.run("stage1_statistics", diagnostics)
        if stats is not None:
            ctx.stats = stats

    def _to_host(self, ctx: StepContext) -> None:
        """The step's single device->host transfer."""
        names = list(ctx.device_values) + [k for k in STAT_KEYS if k in ctx.stats]
        if not names:
            return
        values = [ctx.device_values[n] if n in ctx.device_values else ctx.stats[n] for n in names]
        device = values[0].device
        stacked = torch.stack([v.reshape(()).to(device=device, dtype=torch.float32) for v in values])
        ctx.host = dict(zip(names, stacked.to("cpu", copy=True).tolist(), strict=True))

    def _host_phase(self, ctx: StepContext) -> None:
        has_stats = bool(ctx.stats)
        reporting: list[Component] = [] if self.runtime is None else [self.runtime]
        if has_stats:
            reporting += [c for c in (self.coord, self.token_metrics) if c is not None]
            if self.monitor is not None and "loss" in ctx.host:
                reporting.append(self.monitor)
        for comp in reporting:
            self.best_effort.run(comp.name, functools.partial(comp.report, ctx))
        self.reporter.write(ctx.trainer, ctx.mode, ctx.metrics, ctx.dataset_labels)
