"""The coord component: ``coord_soft_ce_w1`` as loss (enabled) or as diagnostics of a pure-CE run.

Objective path (fail fast). On an ms-swift trainer (the one-pass ``compute_loss_func`` seam,
:meth:`CoordLossComponent.fused_loss`): the base CE over the non-coord targets and the coord terms from
ONE autograd function over the logits. Elsewhere (two-pass): mask coord targets in the labels the model
sees, so the model's own CE is the base CE, then add the coord terms through that autograd function.
Either way the train loss stays comparable across gradient-accumulation settings. Reporting is
best-effort like every diagnostic.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor

from coordexp.components.base import PassRequest
from coordexp.components.context import StepContext
from coordexp.config import CoordSoftCEW1Config
from coordexp.functional import IGNORE_INDEX, CoordLossConfig, CoordSlice, coord_loss
from coordexp.generated import metric_keys as K

_ALIASES = (
    (K.COORD_SOFTCE_W1_LOSS, K.COORD_DIAG_LOSS),
    (K.COORD_SOFTCE_W1_SOFT_CE, K.COORD_DIAG_SOFT_CE),
    (K.COORD_SOFTCE_W1_W1, K.COORD_DIAG_W1),
    (K.COORD_SOFTCE_W1_CE, K.COORD_DIAG_CE),
    (K.COORD_SOFTCE_W1_GATE, K.COORD_DIAG_GATE),
)


class CoordObjectiveError(RuntimeError):
    """The enabled coord loss cannot be computed; training must not go on without it."""


def loss_config(cfg: CoordSoftCEW1Config) -> CoordLossConfig:
    return CoordLossConfig(
        ce_weight=float(cfg.ce_weight),
        soft_ce_weight=float(cfg.soft_ce_weight),
        w1_weight=float(cfg.w1_weight),
        gate_weight=float(cfg.gate_weight),
        temperature=float(cfg.temperature),
        target_sigma=float(cfg.target_sigma),
        target_truncate=cfg.target_truncate,
    )


def averages_tokens_across_devices(trainer: Any) -> bool:
    args = getattr(trainer, "args", None)
    return (
        bool(getattr(args, "average_tokens_across_devices", False))
        and bool(getattr(trainer, "model_accepts_loss_kwargs", False))
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def accumulation_steps(trainer: Any) -> int:
    """The micro-batches of the current optimizer step (the last window of an epoch may be shorter)."""
    configured = int(getattr(getattr(trainer, "args", None), "gradient_accumulation_steps", 1) or 1)
    return int(getattr(trainer, "current_gradient_accumulation_steps", configured) or configured)


def _global(count: Tensor, trainer: Any) -> Tensor:
    if averages_tokens_across_devices(trainer):
        count = count.clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return count


class CoordLossComponent:
    name: ClassVar[str] = "coord_soft_ce_w1"

    def __init__(self, cfg: CoordSoftCEW1Config) -> None:
        self.cfg = cfg
        self.enabled = bool(cfg.enabled)
        self.loss_cfg = loss_config(cfg)
        self.gate_on = self.loss_cfg.gate_weight != 0.0

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

    def add_coord_loss(
        self,
        ctx: StepContext,
        coord: CoordSlice,
        logits: Tensor,
        targets: Tensor,
        types: Tensor | None,
        request: PassRequest,
        chunk_size: int,
    ) -> dict[str, Tensor]:
        """After the forward: base CE + coord terms (one gradient), and the step's statistics."""
        assert ctx.loss is not None
        is_coord, _ = coord.lookup(targets)
        local = (is_coord & (targets != IGNORE_INDEX)).sum().to(torch.float32)
        denominator = _global(local, ctx.trainer).clamp(min=1.0)
        value, stats = coord_loss(
            logits,
            targets,
            coord,
            self.loss_cfg,
            coord_denominator=denominator,
            types=types,
            top5=request.top5,
            mass=request.mass,
            mass_max_tokens=request.mass_max_tokens,
            chunk_size=chunk_size,
        )
        if averages_tokens_across_devices(ctx.trainer):
            # Global denominator on every rank; DDP averages gradients over ranks, so scale back up.
            value = value * dist.get_world_size()
        ctx.loss = ctx.loss + value.to(ctx.loss.dtype)
        return stats

    def fused_loss(
        self,
        ctx: StepContext,
        coord: CoordSlice,
        logits: Tensor,
        targets: Tensor,
        types: Tensor | None,
        request: PassRequest,
        chunk_size: int,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The seam's objective: base CE over the non-coord targets + coord terms, one autograd function.

        Each part is a mean over this batch's own rows (counted across ranks under
        ``average_tokens_across_devices``), as in the two-pass path. ms-swift multiplies the returned loss
        by the process count itself when it got a ``num_items_in_batch``.
        """
        is_coord, _ = coord.lookup(targets)
        sup = targets != IGNORE_INDEX
        counts = torch.stack([(is_coord & sup).sum(), (sup & ~is_coord).sum()]).to(torch.float32)
        coord_den, base_den = _global(counts, ctx.trainer).clamp(min=1.0).unbind(0)  # one collective
        value, stats = coord_loss(
            logits,
            targets,
            coord,
            self.loss_cfg,
            coord_denominator=coord_den,
            base_ce=True,
            base_denominator=base_den,
            types=types,
            top5=request.top5,
            mass=request.mass,
            mass_max_tokens=request.mass_max_tokens,
            chunk_size=chunk_size,
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
        steps = accumulation_steps(trainer)
        if steps > 1:
            ctx.loss = ctx.loss / steps

    # -- reporting ---------------------------------------------------------------------------
    def pass_request(self, ctx: StepContext) -> PassRequest | None:
        return PassRequest(coord_cfg=self.loss_cfg)

    def report(self, ctx: StepContext) -> None:
        s = ctx.host
        samples = s.get("pack_samples", 0.0)
        if not (math.isfinite(samples) and samples > 0):
            samples = float(len(ctx.dataset_labels)) or 1.0
        out: dict[str, float] = {}
        n = s["n_coord"]
        coord_loss_per_sample = 0.0
        if n > 0:
            w = self.loss_cfg
            soft = w.soft_ce_weight * s["soft_ce_sum"] / n
            w1 = w.w1_weight * s["w1_sum"] / n
            ce = w.ce_weight * s["ce_sum"] / n
            gate = w.gate_weight * s["gate_sum"] / n
            total = soft + w1 + ce + gate
            coord_loss_per_sample = total * n / samples
            out[K.COORD_DIAG_ENABLED] = 1.0 if self.enabled else 0.0
            out[K.COORD_DIAG_LOSS] = total
            out[K.COORD_DIAG_SOFT_CE] = soft
            out[K.COORD_DIAG_W1] = w1
            if self.enabled:
                out[K.COORD_DIAG_CE] = ce
            if self.gate_on:
                out[K.COORD_DIAG_GATE] = gate
                out[K.COORD_DIAG_COORD_VOCAB_MASS] = s["coord_vocab_mass_sum"] / n
            out[K.COORD_DIAG_COORD_TOKENS] = n
            out[K.COORD_DIAG_ACC_TOP5] = s["acc_top5_hits"] / n
            out[K.COORD_DIAG_P_GT_MEAN] = s["p_gt_sum"] / n
            out[K.COORD_DIAG_MARGIN_MEAN] = s["margin_sum"] / n
            out[K.COORD_DIAG_EXPECTED_BIN_MAE] = s["bin_abs_err_sum"] / n
            out[K.COORD_DIAG_EXPECTED_BIN_ABS_ERR_P90] = s["bin_abs_err_p90"]
            out[K.COORD_DIAG_W1_TO_DELTA] = s["w1_to_delta_sum"] / n
            out[K.COORD_DIAG_COORD_TOKENS_PER_SAMPLE] = n / samples
            out[K.COORD_DIAG_LOSS_PER_SAMPLE] = coord_loss_per_sample
            if self.enabled:
                for alias, key in _ALIASES:
                    if key in out:
                        out[alias] = out[key]
        if self.enabled:
            out[K.PACK_NUM_SAMPLES] = samples
            base_per_sample = 0.0
            n_base = s["n_base"]
            if n_base > 0:
                if "base_loss" in s:  # two-pass path: the model's CE, rescaled by ms-swift
                    world = dist.get_world_size() if averages_tokens_across_devices(ctx.trainer) else 1
                    base = s["base_loss"] * s.get("base_den", n_base) / (n_base * world)
                else:  # one-pass path: the pass's own sum over this batch's non-coord targets
                    base = s["base_ce_sum"] / n_base
                out[K.BASE_CE_NONCOORD_TOKENS] = n_base
                out[K.BASE_CE_NONCOORD_TOKENS_PER_SAMPLE] = n_base / samples
                if not math.isfinite(base):
                    # The model's own loss is NaN/inf (the monitor records it): skip, never write it.
                    ctx.metrics.update(out)
                    return
                base_per_sample = base * n_base / samples
                out[K.BASE_CE_LOSS] = base
                out[K.BASE_CE_LOSS_PER_SAMPLE] = base_per_sample
            if s["n_sup"] > 0:
                out[K.STAGE1_TOTAL_LOSS_PER_SAMPLE_EST] = base_per_sample + coord_loss_per_sample
        ctx.metrics.update(out)
