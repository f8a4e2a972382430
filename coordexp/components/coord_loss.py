"""The coord component: ``coord_soft_ce_w1`` as loss (enabled) or as diagnostics of a pure-CE run.

Objective path (fail fast). On an ms-swift trainer (the one-pass ``compute_loss_func`` seam,
:meth:`CoordLossComponent.fused_loss`): the base CE over the non-coord targets and the coord terms from
ONE autograd function over the logits. Elsewhere (two-pass): mask coord targets in the labels the model
sees, so the model's own CE is the base CE, then add the coord terms through that autograd function.
Either way the train loss stays comparable across gradient-accumulation settings. Reporting is
best-effort like every diagnostic.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor

from coordexp.components.base import BaseComponent, PassRequest
from coordexp.components.box_terms import BoxTermsPart
from coordexp.components.context import StepContext
from coordexp.components.pass_inputs import PassInputs
from coordexp.components.runtime import current_accumulation_steps
from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.functional import IGNORE_INDEX, CoordSlice, coord_loss
from coordexp.functional.box_terms import BoxBatch
from coordexp.functional.grad_monitor import GRAM_PREFIX, monitor_values
from coordexp.functional.linear_pass import OutputHead, linear_coord_loss
from coordexp.functional.text_gate import text_gate_positions
from coordexp.generated import metric_keys as K
from coordexp.generated.metric_catalog import METRIC_SPECS
from coordexp.generated.models.config import CoordSoftCEW1Config, GradMonitorConfig
from coordexp.reporting.aggregation import Ratio, StepValue

_ALIASES = (
    (K.COORD_SOFTCE_W1_LOSS, K.COORD_DIAG_LOSS),
    (K.COORD_SOFTCE_W1_SOFT_CE, K.COORD_DIAG_SOFT_CE),
    (K.COORD_SOFTCE_W1_W1, K.COORD_DIAG_W1),
    (K.COORD_SOFTCE_W1_CE, K.COORD_DIAG_CE),
    (K.COORD_SOFTCE_W1_GATE, K.COORD_DIAG_GATE),
)


logger = logging.getLogger("coordexp.components.coord_loss")


class CoordObjectiveError(RuntimeError):
    """The enabled coord loss cannot be computed; training must not go on without it."""


def averages_tokens_across_devices(trainer: Any) -> bool:
    args = getattr(trainer, "args", None)
    return (
        bool(getattr(args, "average_tokens_across_devices", False))
        and bool(getattr(trainer, "model_accepts_loss_kwargs", False))
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def _global(count: Tensor, trainer: Any) -> Tensor:
    if averages_tokens_across_devices(trainer):
        count = count.clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return count


class CoordLossComponent(BaseComponent):
    name: ClassVar[str] = "coord_soft_ce_w1"
    feature: ClassVar[str] = "coord_soft_ce_w1"
    objective_conditions: ClassVar[frozenset[str]] = frozenset({"coord_loss"})

    def __init__(
        self,
        cfg: CoordSoftCEW1Config,
        boxes: BoxTermsPart | None = None,
        grad_monitor: GradMonitorConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.enabled = bool(cfg.enabled)
        self.loss_cfg = cfg  # the parsed section is what the loss functions read
        self.gate_on = self.loss_cfg.gate_weight != 0.0
        self.boxes = boxes if boxes is not None and self.enabled else BoxTermsPart(None)
        """the box terms (``custom.bbox_geo`` / ``custom.bbox_size_aux``) this objective adds"""
        self.text_gate_on = self.enabled and self.loss_cfg.text_gate_weight != 0.0
        self._warned = WarnOnce()
        self.eos_token_id: int | None = None
        """the tokenizer's eos id (set by the pipeline): never a text-gate position"""
        self.grad_monitor = grad_monitor if grad_monitor is not None and self.enabled else None
        """``custom.grad_monitor`` when on (it needs the coord loss: the config loader refuses it without)"""
        self._warned_two_pass = False

    def monitors(self, ctx: StepContext) -> bool:
        """Whether this step's pass monitors the per-term gradients: the monitor is on, the step trains
        and its optimizer step is a multiple of ``interval`` (host values only: no sync)."""
        monitor = self.grad_monitor
        if monitor is None or not monitor.enabled or ctx.mode != "train":
            return False
        step = int(getattr(getattr(ctx.trainer, "state", None), "global_step", 0) or 0)
        return step % monitor.interval == 0

    def _text_count(self, inputs: PassInputs, coord: CoordSlice) -> Tensor | None:
        """This batch's text-gate positions (None when the text gate is off)."""
        if not self.text_gate_on:
            return None
        rows = text_gate_positions(inputs.targets, inputs.types, coord, self.eos_token_id)
        return rows.sum().to(torch.float32)

    def _box_batch(self, ctx: StepContext, inputs: PassInputs, coord: CoordSlice) -> BoxBatch | None:
        """The batch's boxes (None when no box term is on); the denominators are set by the caller."""
        if self.boxes.terms is None:
            return None
        assert ctx.labels is not None
        if self.boxes.needs_links and inputs.box_slots is None:
            raise CoordObjectiveError(
                "custom.coord_soft_ce_w1.adjacent_repulsion_weight is on but the batch has no box_slots / "
                "box_pairs extras (the answer parser's boxes); build the collator with coordexp's "
                "enrichers (DatasetMetricsCollatorMixin / build_dataset_metrics_collator)"
            )
        if inputs.box_slots is None and self._warned.first("label_quartets"):
            logger.warning(
                "box terms: the batch has no box_slots extra (a collator without coordexp's enrichers), "
                "so boxes are consecutive quartets of coord labels, as the reference groups them (a "
                "poly's coordinates count as boxes); warned once"
            )
        groups = self.boxes.groups(
            inputs.targets, ctx.labels.shape[0], coord, inputs.box_slots, inputs.box_links
        )
        return BoxBatch(self.boxes.terms, groups, groups.n_boxes)

    @staticmethod
    def _box_counts(boxes: BoxBatch | None) -> list[Tensor]:
        """The box terms' counts to sum across ranks with the coord positions: boxes, applied pairs."""
        if boxes is None:
            return []
        pairs = boxes.pairs()
        return [boxes.denominator] + ([] if pairs is None else [pairs[1].sum().to(torch.float32)])

    @staticmethod
    def _with_box_counts(boxes: BoxBatch | None, counts: tuple[Tensor, ...]) -> BoxBatch | None:
        """``boxes`` with the denominators summed across ranks (the last entries of ``counts``)."""
        if boxes is None:
            return None
        if boxes.terms.repulsion is None:
            return boxes.with_denominators(counts[-1], None)
        return boxes.with_denominators(counts[-2], counts[-1])

    # -- objective path ----------------------------------------------------------------------
    def require(self, ctx: StepContext, coord: CoordSlice | None) -> CoordSlice:
        """Before the forward: the enabled loss needs labels and the coord vocabulary."""
        if ctx.labels is None:
            raise CoordObjectiveError("custom.coord_soft_ce_w1.enabled is true but the batch has no labels")
        if coord is None:
            raise CoordObjectiveError(
                "custom.coord_soft_ce_w1.enabled is true but the coord vocabulary is unknown"
            )
        return coord

    def prepare(self, ctx: StepContext, coord: CoordSlice | None) -> None:
        """Two-pass path, before the forward: mask coord targets for the model's CE and set its count."""
        if not self.enabled:
            return
        coord = self.require(ctx, coord)
        assert ctx.labels is not None
        is_coord, _ = coord.lookup(ctx.labels.reshape(-1))
        masked = ctx.labels.masked_fill(is_coord.view_as(ctx.labels), IGNORE_INDEX)
        ctx.inputs["labels"] = masked
        count = (masked[..., 1:] != IGNORE_INDEX).sum()
        ctx.forward_num_items = _global(count, ctx.trainer)
        ctx.device_values["base_den"] = ctx.forward_num_items.to(torch.float32)

    def add_coord_loss(self, ctx: StepContext, inputs: PassInputs) -> dict[str, Tensor]:
        """After the forward: base CE + coord terms (one gradient), and the step's statistics."""
        assert ctx.loss is not None
        coord, targets = self.require(ctx, inputs.coord), inputs.targets
        if self.monitors(ctx) and not self._warned_two_pass:
            self._warned_two_pass = True
            warnings.warn(
                "coordexp: custom.grad_monitor needs the one-pass seam (an ms-swift trainer): here the "
                "model computes the base CE outside the pass, so no gradmon/* key is written (warned once)",
                RuntimeWarning,
                stacklevel=2,
            )
        is_coord, _ = coord.lookup(targets)
        boxes = self._box_batch(ctx, inputs, coord)
        text = self._text_count(inputs, coord)
        parts = [(is_coord & (targets != IGNORE_INDEX)).sum().to(torch.float32)]
        parts += ([] if text is None else [text]) + self._box_counts(boxes)
        counts = _global(torch.stack(parts), ctx.trainer).clamp(min=1.0).unbind(0)  # one collective
        text_den = counts[1] if text is not None else None
        boxes = self._with_box_counts(boxes, counts)
        value, stats = coord_loss(
            inputs.logits,
            targets,
            coord,
            self.loss_cfg,
            coord_denominator=counts[0],
            types=inputs.types,
            boxes=boxes,
            eos_token_id=self.eos_token_id,
            text_denominator=text_den,
            **inputs.options,
        )
        if averages_tokens_across_devices(ctx.trainer):
            # Global denominator on every rank; DDP averages gradients over ranks, so scale back up.
            value = value * dist.get_world_size()
        ctx.loss = ctx.loss + value.to(ctx.loss.dtype)
        return stats

    def fused_loss(
        self,
        ctx: StepContext,
        inputs: PassInputs,
        head: OutputHead | None = None,
        preds: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The seam's objective: base CE over the non-coord targets + coord terms, one autograd function.

        Each part is a mean over this batch's own rows (counted across ranks under
        ``average_tokens_across_devices``), as in the two-pass path. ms-swift multiplies the returned loss
        by the process count itself when it got a ``num_items_in_batch``. With ``head``, ``inputs.logits``
        are the final hidden states and the logits are computed chunk by chunk (``materialize_logits:
        false``); ``preds`` then receives each row's argmax.
        """
        coord, targets = self.require(ctx, inputs.coord), inputs.targets
        is_coord, _ = coord.lookup(targets)
        sup = targets != IGNORE_INDEX
        boxes = self._box_batch(ctx, inputs, coord)
        text = self._text_count(inputs, coord)
        parts = [(is_coord & sup).sum().to(torch.float32), (sup & ~is_coord).sum().to(torch.float32)]
        parts += ([] if text is None else [text]) + self._box_counts(boxes)
        counts = _global(torch.stack(parts), ctx.trainer).clamp(min=1.0).unbind(0)  # one collective
        coord_den, base_den = counts[0], counts[1]
        boxes = self._with_box_counts(boxes, counts)
        options: dict[str, Any] = dict(
            coord_denominator=coord_den,
            base_ce=True,
            base_denominator=base_den,
            types=inputs.types,
            boxes=boxes,
            eos_token_id=self.eos_token_id,
            text_denominator=counts[2] if text is not None else None,
            grad_monitor=self.monitors(ctx),
            **inputs.options,
        )
        if head is None:
            value, stats = coord_loss(inputs.logits, targets, coord, self.loss_cfg, **options)
        else:
            value, stats = linear_coord_loss(
                inputs.logits, head, targets, coord, self.loss_cfg, preds=preds, **options
            )
        if averages_tokens_across_devices(ctx.trainer) and ctx.num_items_in_batch is None:
            value = value * dist.get_world_size()  # ms-swift scales only when it had a count
        return value, stats

    def scale_for_accumulation(self, ctx: StepContext) -> None:
        """Divide the train loss by the current accumulation steps when the Trainer no longer will.

        The upstream Trainer skips its own division when it passed ``num_items_in_batch`` to a model
        that accepts loss kwargs (the loss is then a sum over the whole accumulation window). We
        replaced that count by this batch's own, making the loss a per-batch mean, so the division
        is ours - exactly in that case, never twice.
        """
        trainer = ctx.trainer
        if not self.enabled or ctx.mode != "train" or ctx.loss is None:
            return
        if ctx.num_items_in_batch is None or not getattr(trainer, "model_accepts_loss_kwargs", False):
            return
        if getattr(trainer, "compute_loss_func", None) is not None:
            return
        steps = current_accumulation_steps(trainer)
        if steps > 1:
            ctx.loss = ctx.loss / steps

    # -- reporting ---------------------------------------------------------------------------
    def pass_request(self, ctx: StepContext) -> PassRequest | None:
        # the text gate reads the batch's token types when it has them (DESC / FORMAT targets only)
        return PassRequest(
            coord_cfg=self.loss_cfg, types=self.text_gate_on, boxes=self.boxes.terms is not None
        )

    def report(self, ctx: StepContext) -> None:
        """The coord and base-CE keys of the step: each ratio as its numerator and denominator
        statistics (see the catalog's ``aggregation``), so a window's value is exact."""
        s = ctx.host
        samples = s.get("pack_samples", 0.0)
        if not (math.isfinite(samples) and samples > 0):
            samples = float(len(ctx.dataset_labels)) or 1.0
        out: dict[str, StepValue] = {}
        n = s["n_coord"]
        coord_loss_sum = 0.0  # Σ weighted coord terms over the batch's coord targets
        if n > 0:
            w = self.loss_cfg
            soft = w.soft_ce_weight * s["soft_ce_sum"]
            w1 = w.w1_weight * s["w1_sum"]
            ce = w.ce_weight * s["ce_sum"]
            gate = w.gate_weight * s["gate_sum"]
            coord_loss_sum = soft + w1 + ce + gate
            out[K.COORD_DIAG_ENABLED] = 1.0 if self.enabled else 0.0
            out[K.COORD_DIAG_LOSS] = Ratio(coord_loss_sum, n)
            out[K.COORD_DIAG_SOFT_CE] = Ratio(soft, n)
            out[K.COORD_DIAG_W1] = Ratio(w1, n)
            if self.enabled:
                out[K.COORD_DIAG_CE] = Ratio(ce, n)
            if self.gate_on:
                out[K.COORD_DIAG_GATE] = Ratio(gate, n)
                out[K.COORD_DIAG_COORD_VOCAB_MASS] = Ratio(s["coord_vocab_mass_sum"], n)
            out[K.COORD_DIAG_COORD_TOKENS] = n
            out[K.COORD_DIAG_ACC_TOP5] = Ratio(s["acc_top5_hits"], n)
            out[K.COORD_DIAG_P_GT_MEAN] = Ratio(s["p_gt_sum"], n)
            out[K.COORD_DIAG_MARGIN_MEAN] = Ratio(s["margin_sum"], n)
            out[K.COORD_DIAG_EXPECTED_BIN_MAE] = Ratio(s["bin_abs_err_sum"], n)
            out[K.COORD_DIAG_EXPECTED_BIN_ABS_ERR_P90] = s["bin_abs_err_p90"]
            out[K.COORD_DIAG_W1_TO_DELTA] = Ratio(s["w1_to_delta_sum"], n)
            out[K.COORD_DIAG_COORD_TOKENS_PER_SAMPLE] = Ratio(n, samples)
            out[K.COORD_DIAG_LOSS_PER_SAMPLE] = Ratio(coord_loss_sum, samples)
            out.update(self.boxes.report(s, samples))
            n_text = s["n_text_gate"]
            if self.text_gate_on and n_text > 0:
                text_gate = Ratio(self.loss_cfg.text_gate_weight * s["text_gate_sum"], n_text)
                out[K.COORD_DIAG_TEXT_GATE] = out[K.COORD_SOFTCE_W1_TEXT_GATE] = text_gate
                out[K.COORD_DIAG_TEXT_COORD_VOCAB_MASS] = Ratio(s["text_coord_mass_sum"], n_text)
            if self.enabled:
                for alias, key in _ALIASES:
                    if key in out:
                        out[alias] = out[key]
        else:  # no coord target: the batch's samples still count in the window's per-sample keys
            out[K.COORD_DIAG_COORD_TOKENS_PER_SAMPLE] = Ratio(0.0, samples, observed=False)
            out[K.COORD_DIAG_LOSS_PER_SAMPLE] = Ratio(0.0, samples, observed=False)
        if self.enabled:
            out[K.PACK_NUM_SAMPLES] = samples
            base_sum = 0.0  # Σ base CE over the batch's non-coord targets
            n_base = s["n_base"]
            if n_base > 0:
                if "base_loss" in s:  # two-pass path: the model's CE, rescaled by ms-swift
                    world = dist.get_world_size() if averages_tokens_across_devices(ctx.trainer) else 1
                    base_sum = s["base_loss"] * s.get("base_den", n_base) / world
                else:  # one-pass path: the pass's own sum over this batch's non-coord targets
                    base_sum = s["base_ce_sum"]
                out[K.BASE_CE_NONCOORD_TOKENS] = n_base
                out[K.BASE_CE_NONCOORD_TOKENS_PER_SAMPLE] = Ratio(n_base, samples)
                if not math.isfinite(base_sum):
                    # The model's own loss is NaN/inf (the monitor records it): skip, never write it.
                    ctx.metrics.update(out)
                    return
                out[K.BASE_CE_LOSS] = Ratio(base_sum, n_base)
                out[K.BASE_CE_LOSS_PER_SAMPLE] = Ratio(base_sum, samples)
            else:
                out[K.BASE_CE_NONCOORD_TOKENS_PER_SAMPLE] = Ratio(0.0, samples, observed=False)
                out[K.BASE_CE_LOSS_PER_SAMPLE] = Ratio(0.0, samples, observed=False)
            box_sum = self.boxes.loss_sum(s) if n > 0 else 0.0
            out[K.STAGE1_TOTAL_LOSS_PER_SAMPLE_EST] = Ratio(
                base_sum + coord_loss_sum + box_sum, samples, observed=s["n_sup"] > 0
            )
            out.update(_gradmon_report(s))
        ctx.metrics.update(out)


_GRADMON_WARNED = WarnOnce()


def _warn_once(kind: str, message: str) -> None:
    _GRADMON_WARNED.warn(kind, message, RuntimeWarning, stacklevel=3)


def _gradmon_report(s: dict[str, float]) -> dict[str, StepValue]:
    """The ``gradmon/*`` keys of a monitored step (none on other steps, or when a Gram entry is not
    finite): each term's norm, its cosine to the total when both are non-zero, the total norm and the
    share of conflicting pairs of active terms (with at least two)."""
    if not any(key.startswith(GRAM_PREFIX) for key in s):
        return {}
    values = monitor_values(s)
    if values is None:
        return {}
    out: dict[str, StepValue] = {}
    for name, norm in values.norms.items():
        key = f"gradmon/grad_norm/{name}"
        if key not in METRIC_SPECS:  # a box part the catalog does not declare yet: never an unknown key
            _warn_once(
                f"gradmon_{name}",
                f"coordexp: the gradient monitor's term {name!r} has no {key} in the metric catalog; "
                "it still counts in the total and the pair share but has no key of its own (warned once)",
            )
            continue
        out[key] = norm
        if name in values.cosines:
            out[f"gradmon/cos_to_total/{name}"] = values.cosines[name]
    out[K.GRADMON_TOTAL_GRAD_NORM] = values.total_norm
    if values.neg_pair_frac is not None:
        out[K.GRADMON_NEG_COSINE_PAIR_FRAC] = values.neg_pair_frac
    return out
