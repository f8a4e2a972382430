"""The coord loss (and optionally the base CE) as ONE ``torch.autograd.Function`` over the whole logits.

``loss = (ce_w Σ CE + soft_ce_w Σ softCE + w1_w Σ W1 + gate_w Σ gate) / coord_denominator
       [+ Σ_{supervised non-coord} (lse(x) - x[gt]) / base_denominator]``

The forward is the chunked, sync-free statistics pass of :mod:`coordexp.functional.stage1_pass` (the same
pass also returns every Stage-1 statistic) and saves only one ``logsumexp`` per row. The backward
recomputes each chunk in fp32 and writes its gradient into ONE preallocated tensor shaped like the
logits, so the extra memory is bounded by the chunk size, not by the sequence length:

- coord slice: the per-term gradients of :mod:`coordexp.functional.coord_math`, divided by ``T``;
- gate (where ``lse(all / T) - lse(z) >= 0``): ``+ softmax(all / T) / T`` over the full vocab;
- base CE: ``softmax(x) - onehot(gt)`` (raw logits, T = 1);
- zero wherever the coord-term sanitiser changed a logit of a coord row (non-finite or ``|x| > 1e4``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from coordexp.functional.coord_config import CoordLossConfig
from coordexp.functional.coord_math import (
    coord_terms,
    coord_terms_grad,
    sanitize_logits,
    sanitizer_passes_grad,
)
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.stage1_pass import (
    DEFAULT_CHUNK_SIZE,
    PassSpec,
    run_stage1_pass,
    sanitize_rows_,
    validate_inputs,
)
from coordexp.functional.targets import IGNORE_INDEX


@dataclass
class _Plan:
    spec: PassSpec
    coord: CoordSlice
    cfg: CoordLossConfig
    base_ce: bool
    stats: dict[str, Tensor] = field(default_factory=dict)


def _as_denominator(value: Tensor | float | None, default: Tensor) -> Tensor:
    if value is None:
        return default.clamp(min=1.0)
    if isinstance(value, Tensor):
        return value.detach().to(device=default.device, dtype=torch.float32).reshape(())
    return torch.full((), float(value), device=default.device)


def _weighted_coord_sum(stats: dict[str, Tensor], cfg: CoordLossConfig) -> Tensor:
    total = torch.zeros_like(stats["n_coord"])
    for weight, key in (
        (cfg.ce_weight, "ce_sum"),
        (cfg.soft_ce_weight, "soft_ce_sum"),
        (cfg.w1_weight, "w1_sum"),
        (cfg.gate_weight, "gate_sum"),
    ):
        if weight != 0:
            total = total + weight * stats[key]
    return total


class _CoordLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        logits: Tensor,
        targets: Tensor,
        types: Tensor | None,
        coord_denominator: Tensor | float | None,
        base_denominator: Tensor | float | None,
        plan: _Plan,
    ) -> Tensor:
        result = run_stage1_pass(logits, targets, types, plan.spec)
        stats = result.stats
        coord_den = _as_denominator(coord_denominator, stats["n_coord"])
        loss = _weighted_coord_sum(stats, plan.cfg) / coord_den
        base_den = _as_denominator(base_denominator, stats["n_base"])
        if plan.base_ce:
            loss = loss + stats["base_ce_sum"] / base_den
        plan.stats = stats
        lse_rows = result.lse_rows if result.lse_rows is not None else torch.zeros(0, device=logits.device)
        ctx.save_for_backward(logits, targets, lse_rows, coord_den, base_den)
        ctx.plan = plan  # type: ignore[attr-defined]
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        logits, targets, lse_rows, coord_den, base_den = ctx.saved_tensors
        plan: _Plan = ctx.plan
        grad = None
        if ctx.needs_input_grad[0]:
            grad = coord_loss_backward(
                logits,
                targets,
                lse_rows,
                grad_output.to(torch.float32) / coord_den,
                grad_output.to(torch.float32) / base_den,
                plan,
            )
        return grad, None, None, None, None, None


def coord_loss_backward(
    logits: Tensor, targets: Tensor, lse_rows: Tensor, coord_scale: Tensor, base_scale: Tensor, plan: _Plan
) -> Tensor:
    """``d loss / d logits`` scaled by ``coord_scale`` (coord terms) and ``base_scale`` (base CE)."""
    coord, cfg = plan.coord, plan.cfg
    temperature = float(cfg.temperature)
    full = cfg.gate_enabled or plan.base_ce
    grad = torch.empty_like(logits) if full else torch.zeros_like(logits)
    n_rows = logits.shape[0]
    for start in range(0, n_rows, plan.spec.chunk_size):
        size = min(plan.spec.chunk_size, n_rows - start)
        x = logits.narrow(0, start, size)
        tgt = targets.narrow(0, start, size)
        sup = tgt != IGNORE_INDEX
        tgt_coord, bins = coord.lookup(tgt)
        rows = sup & tgt_coord
        u = sanitize_rows_(x.to(torch.float32, copy=True), rows) if full else None
        raw = coord.take(u) if u is not None else coord.take(x).to(torch.float32)
        terms = coord_terms(sanitize_logits(raw), bins, cfg)
        zero = torch.zeros((), device=x.device)
        row_scale = torch.where(rows, coord_scale, zero)
        gate_scale = zero.expand(size)
        gate_active = torch.zeros_like(rows)
        if cfg.gate_enabled:
            lse = lse_rows.narrow(0, start, size)
            gate_active = rows & (lse - terms.lse_z >= 0)
            gate_scale = torch.where(gate_active, coord_scale * cfg.gate_weight, zero)
        coord_grad = coord_terms_grad(terms, bins, cfg, row_scale, gate_scale)
        if u is None:
            coord_grad.masked_fill_(~sanitizer_passes_grad(coord.take(x)), 0.0)
            _write_coord_columns(grad.narrow(0, start, size), coord, coord_grad)
            continue
        base_row = sup & ~tgt_coord if plan.base_ce else torch.zeros_like(rows)
        row_coef = gate_scale / temperature + torch.where(base_row, base_scale, zero)
        lse = lse_rows.narrow(0, start, size).unsqueeze(-1)
        if temperature != 1.0 and cfg.gate_enabled:
            u.div_(torch.where(rows, temperature, 1.0).unsqueeze(-1))
        probs = u.sub_(lse).exp_().mul_(row_coef.unsqueeze(-1))
        probs.masked_fill_(~(gate_active | base_row).unsqueeze(-1), 0.0)
        if plan.base_ce:
            gt = tgt.clamp(min=0).unsqueeze(-1)
            probs.scatter_add_(-1, gt, -torch.where(base_row, base_scale, zero).unsqueeze(-1))
        if coord.start is not None:
            coord.take(probs).add_(coord_grad)
        else:
            probs.index_add_(-1, coord.ids, coord_grad)
        probs.masked_fill_(rows.unsqueeze(-1) & ~sanitizer_passes_grad(x), 0.0)
        grad.narrow(0, start, size).copy_(probs)
    return grad


def _write_coord_columns(grad_rows: Tensor, coord: CoordSlice, values: Tensor) -> None:
    if coord.start is not None:
        coord.take(grad_rows).copy_(values)
    else:
        grad_rows.index_copy_(-1, coord.ids, values.to(grad_rows.dtype))


def coord_loss(
    logits: Tensor,
    targets: Tensor,
    coord: CoordSlice,
    cfg: CoordLossConfig,
    *,
    coord_denominator: Tensor | float | None = None,
    base_ce: bool = False,
    base_denominator: Tensor | float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    types: Tensor | None = None,
    top5: bool = True,
    mass: bool = False,
    mass_max_tokens: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Differentiable coord loss (plus, with ``base_ce``, the base CE) and every Stage-1 statistic.

    ``logits`` ``[N, V]`` (any float dtype, a view of the model's logits), ``targets`` ``[N]`` int64
    (-100 ignored; ``targets[i]`` is scored by ``logits[i]``). Returns ``(loss, stats)``:

    ``loss = Σ_term weight_term * Σ_{coord positions} term / coord_denominator`` (default: ``n_coord``
    clamped to >= 1), ``+ Σ_{supervised non-coord} CE / base_denominator`` (default ``n_base`` clamped to
    >= 1) when ``base_ce``; ``stats`` holds the keys of :data:`~coordexp.functional.stat_keys.STAT_KEYS`
    (those of :func:`~coordexp.functional.stage1_pass.stage1_stats` with ``coord_cfg=cfg``, plus
    ``base_ce_sum`` and ``n_base``). Sync-free; the gradient buffer is one tensor like ``logits``.
    No coord positions: the coord part is 0 with zero gradient.
    """
    validate_inputs(logits, targets, types, chunk_size)
    coord = coord.to(logits.device)
    coord.check_vocab(logits.shape[-1])
    spec = PassSpec(coord, cfg, top5, mass, mass_max_tokens, base_ce, True, chunk_size)
    plan = _Plan(spec, coord, cfg, base_ce)
    loss = _CoordLossFunction.apply(logits, targets, types, coord_denominator, base_denominator, plan)
    return loss, plan.stats
