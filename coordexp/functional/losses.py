"""The coord loss (and optionally the base CE) as ONE ``torch.autograd.Function`` over the whole logits.

``loss = (ce_w Σ CE + soft_ce_w Σ softCE + w1_w Σ W1 + gate_w Σ gate) / coord_denominator
       [+ Σ_{supervised non-coord} (lse(x) - x[gt]) / base_denominator]``

The forward is the chunked, sync-free statistics pass of :mod:`coordexp.functional.stage1_pass` (the same
pass also returns every Stage-1 statistic). When the logits need a gradient, that pass also writes
``d loss / d logits`` (for ``grad_output = 1``) chunk by chunk into ONE preallocated tensor shaped like
the logits, reusing each chunk's softmax (one full-vocab softmax per chunk in all); the backward scales
it in place by ``grad_output`` and hands it to autograd without a copy. The extra memory is that one
gradient-sized tensor (which any backward allocates) plus the chunk's scratch, not the sequence length.
The denominators (``n_coord`` / ``n_base`` by default) are counted from the targets before the pass.

- coord slice: the per-term gradients of :mod:`coordexp.functional.coord_math`, divided by ``T``;
- gate (where ``lse(all / T) - lse(z) >= 0``): ``+ softmax(all / T) / T`` over the full vocab;
- base CE: ``softmax(x) - onehot(gt)`` (raw logits, T = 1);
- zero wherever the coord-term sanitiser changed a logit of a coord row (non-finite or ``|x| > 1e4``).

A second backward through the same graph (``retain_graph=True``) recomputes the gradient with the pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from coordexp.functional.box_terms import BoxBatch
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.loss_plan import Denominator, LogitsInfo, LossPlan, ce_loss_plan, coord_loss_plan
from coordexp.functional.pass_spec import DEFAULT_CHUNK_SIZE, PassOptions, validate_inputs
from coordexp.functional.stage1_pass import run_stage1_pass
from coordexp.generated.models.config import CoordSoftCEW1Config


def _unit_gradient(
    logits: Tensor,
    targets: Tensor,
    types: Tensor | None,
    coord_den: Tensor,
    base_den: Tensor,
    plan: LossPlan,
    coord_extra: Tensor | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(d loss / d logits for grad_output = 1, stats)``: the statistics pass writing the gradient."""
    out = torch.empty_like(logits)
    spec, grad = plan.writing_gradient(out, coord_den, base_den, coord_extra)
    return out, run_stage1_pass(logits, targets, types, spec, grad).stats


def _box_rows(logits: Tensor, plan: LossPlan) -> Callable[[Tensor], Tensor]:
    """The coord-slice logits of some rows (the box slots), gathered: ``[P, K]``, never ``[N, V]``."""

    def rows(positions: Tensor) -> Tensor:
        coord = plan.coord
        assert coord is not None
        if coord.start is not None:  # a view of the coord columns, then the rows: [P, K] is all we copy
            return coord.take(logits).index_select(0, positions)
        return logits[positions.unsqueeze(-1), coord.ids.unsqueeze(0)]  # never [P, V]

    return rows


class _CoordLossFunction(torch.autograd.Function):
    """Forward: the statistics pass, which also writes the gradient for ``grad_output = 1`` into ONE
    tensor shaped like the logits (the softmax of each chunk is computed once, for the statistics and
    the gradient). Backward: scales that tensor in place by ``grad_output`` and hands it over."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        logits: Tensor,
        targets: Tensor,
        types: Tensor | None,
        coord_denominator: Denominator,
        base_denominator: Denominator,
        plan: LossPlan,
    ) -> Tensor:
        coord_den, base_den = plan.denominators(targets, coord_denominator, base_denominator)
        plan.prepare_text_gate(targets, types)
        extra = plan.box_terms(_box_rows(logits, plan), logits.shape[0])
        grad: Tensor | None = None
        if plan.want_grad:
            grad, stats = _unit_gradient(logits, targets, types, coord_den, base_den, plan, extra)
        else:
            stats = run_stage1_pass(logits, targets, types, plan.spec).stats
        ctx.save_for_backward(logits, targets, coord_den, base_den)
        ctx.coord_extra = extra  # type: ignore[attr-defined]
        ctx.types = types  # type: ignore[attr-defined]
        ctx.plan = plan  # type: ignore[attr-defined]
        ctx.unit_grad = grad  # type: ignore[attr-defined]
        return plan.loss(stats, coord_den, base_den, logits.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        grad: Tensor | None = ctx.unit_grad
        ctx.unit_grad = None  # hand the buffer over (no copy); a second backward recomputes it
        if grad is None:
            logits, targets, coord_den, base_den = ctx.saved_tensors
            grad, _ = _unit_gradient(
                logits, targets, ctx.types, coord_den, base_den, ctx.plan, ctx.coord_extra
            )
        grad.mul_(grad_output.to(torch.float32))
        return grad, None, None, None, None, None


def coord_loss(
    logits: Tensor,
    targets: Tensor,
    coord: CoordSlice,
    cfg: CoordSoftCEW1Config,
    *,
    coord_denominator: Denominator = None,
    base_ce: bool = False,
    base_denominator: Denominator = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    types: Tensor | None = None,
    top5: bool = True,
    mass: bool = False,
    mass_max_tokens: int = 0,
    boxes: BoxBatch | None = None,
    eos_token_id: int | None = None,
    text_denominator: Denominator = None,
    grad_monitor: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Differentiable coord loss (plus, with ``base_ce``, the base CE) and every Stage-1 statistic.

    ``logits`` ``[N, V]`` (any float dtype, a view of the model's logits), ``targets`` ``[N]`` int64
    (-100 ignored; ``targets[i]`` is scored by ``logits[i]``). Returns ``(loss, stats)``:

    ``loss = Σ_term weight_term * Σ_{coord positions} term / coord_denominator`` (default: ``n_coord``
    clamped to >= 1), ``+ Σ_{supervised non-coord} CE / base_denominator`` (default ``n_base`` clamped to
    >= 1) when ``base_ce``; ``stats`` holds the keys of :data:`~coordexp.functional.stat_keys.STAT_KEYS`
    (those of :func:`~coordexp.functional.stage1_pass.stage1_stats` with ``coord_cfg=cfg``, plus
    ``base_ce_sum`` and ``n_base``). Sync-free; the gradient buffer is one tensor like ``logits``.
    No coord positions: the coord part is 0 with zero gradient. ``boxes`` adds the box terms
    (:mod:`coordexp.functional.box_terms`) and their statistics. With ``cfg.text_gate_weight != 0``
    the text gate (:mod:`coordexp.functional.text_gate`) is added: ``text_gate_weight Σ g /
    text_denominator`` (default: the batch's text-gate positions; never ``eos_token_id``), 0 when the
    batch has no coord target. ``grad_monitor`` (with a gradient): the statistics also hold the Gram
    matrix of the terms' gradients with respect to the logits (:mod:`coordexp.functional.grad_monitor`).
    """
    validate_inputs(logits, targets, types, chunk_size)
    options = PassOptions(top5=top5, mass=mass, mass_max_tokens=mass_max_tokens, chunk_size=chunk_size)
    plan = coord_loss_plan(
        coord,
        cfg,
        LogitsInfo.of(logits),
        options,
        base_ce=base_ce,
        boxes=boxes,
        eos_token_id=eos_token_id,
        text_denominator=text_denominator,
        grad_monitor=grad_monitor,
    )
    loss = _CoordLossFunction.apply(logits, targets, types, coord_denominator, base_denominator, plan)
    return loss, plan.stats


def ce_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    denominator: Denominator = None,
    coord: CoordSlice | None = None,
    coord_cfg: CoordSoftCEW1Config | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    types: Tensor | None = None,
    top5: bool = True,
    mass: bool = False,
    mass_max_tokens: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Full-vocab cross-entropy over EVERY supervised target and every Stage-1 statistic, ONE pass.

    The coord-loss-off counterpart of :func:`coord_loss` with ``base_ce=True``: ``loss = Σ_{supervised}
    (lse(x) - x[gt]) / denominator`` (default: the supervised count clamped to >= 1) on the raw logits,
    as ``F.cross_entropy(..., reduction="sum")`` gives it; the gradient is one tensor like ``logits``.
    ``stats`` as :func:`~coordexp.functional.stage1_pass.stage1_stats` with the same arguments, except that
    ``base_ce_sum`` is the CE sum over every supervised target. ``coord_cfg`` (needs ``coord``) adds the
    coord diagnostics; they never enter the loss. On rows whose logits are non-finite or beyond ±1e4, the
    coord rows' full-vocab ``logsumexp`` (gate and mass diagnostics) uses the raw row, as the CE does.
    """
    validate_inputs(logits, targets, types, chunk_size)
    options = PassOptions(top5=top5, mass=mass, mass_max_tokens=mass_max_tokens, chunk_size=chunk_size)
    plan = ce_loss_plan(coord, coord_cfg, LogitsInfo.of(logits), options)
    loss = _CoordLossFunction.apply(logits, targets, types, None, denominator, plan)
    return loss, plan.stats
