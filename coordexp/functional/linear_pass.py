"""The Stage-1 pass from the final hidden states and the output head: the full logits never exist.

``logits = hidden @ weight.T (+ bias)`` is computed chunk by chunk (at most
:data:`LINEAR_CHUNK_ELEMENTS` logits at a time, :data:`CPU_LINEAR_CHUNK_ELEMENTS` on CPU). Each chunk
goes through the same statistics pass as materialised logits
(:func:`~coordexp.functional.stage1_pass.run_stage1_pass` with a :class:`ChunkSource`): base CE, coord
terms, every statistic. When a gradient is wanted, the pass writes the chunk's ``d loss / d logits``
into a chunk-sized fp32 buffer; this module turns it at once into the chunk's rows of
``d loss / d hidden`` and adds it into ``d loss / d weight`` (and ``bias``), summed in fp32 whatever the
parameters' dtype, as Liger's fused linear cross-entropy does. The backward only scales those
gradients by ``grad_output``: it recomputes nothing (a second backward through the same graph reruns
the pass). The memory beyond the parameters' own gradients is the chunk's scratch (a few
``[rows, V]`` fp32 buffers), independent of the sequence length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from coordexp.functional.box_terms import BoxBatch
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.loss_plan import (
    Denominator,
    LogitsInfo,
    LossPlan,
    ce_loss_plan,
    coord_loss_plan,
    wants_grad,
)
from coordexp.functional.pass_spec import DEFAULT_CHUNK_SIZE, ChunkSource, PassOptions, validate_targets
from coordexp.functional.stage1_pass import run_stage1_pass
from coordexp.generated.models.config import CoordSoftCEW1Config

LINEAR_CHUNK_ELEMENTS = 1 << 26
"""On an accelerator a chunk holds at most this many logits (256 MiB in fp32): the head weight is read
(twice) and its fp32 gradient updated once per chunk, so chunks must be large for a large head."""
CPU_LINEAR_CHUNK_ELEMENTS = 1 << 22
"""On CPU at most this many logits (16 MiB in fp32): the pass's elementwise work dominates there and
runs faster on near-cache-sized chunks (measured: 8,192 x 33,000, hidden 64, 1 thread)."""


@dataclass(frozen=True)
class OutputHead:
    """The output head: ``weight`` ``[V, H]`` (possibly the tied input embeddings) and ``bias`` ``[V]``."""

    weight: Tensor
    bias: Tensor | None = None


def linear_chunk_rows(vocab: int, chunk_size: int, device: torch.device) -> int:
    """Rows per chunk: ``chunk_size``, capped so that a chunk holds at most the device's element cap."""
    cap = CPU_LINEAR_CHUNK_ELEMENTS if device.type == "cpu" else LINEAR_CHUNK_ELEMENTS
    return max(1, min(chunk_size, cap // max(vocab, 1)))


class _Grads:
    """``d loss / d hidden`` (hidden's dtype), ``d loss / d weight`` and ``d loss / d bias`` (fp32
    accumulators), filled chunk by chunk from the pass's gradient rows; only those that are wanted."""

    def __init__(self, hidden: Tensor, head: OutputHead, rows: int, wants: tuple[bool, bool, bool]) -> None:
        weight = head.weight
        self.hidden, self.weight = hidden, weight
        self.rows_buf = torch.empty((rows, weight.shape[0]), dtype=torch.float32, device=hidden.device)
        self.hidden_grad = torch.empty_like(hidden) if wants[0] else None
        self.weight_grad = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants[1] else None
        )
        self.bias_grad = (
            torch.zeros(head.bias.shape, dtype=torch.float32, device=weight.device)
            if wants[2] and head.bias is not None
            else None
        )

    def rows(self, start: int, size: int) -> Tensor:
        return self.rows_buf.narrow(0, 0, size)

    def add_chunk(self, start: int, size: int, grad_rows: Tensor) -> None:
        if self.hidden_grad is not None:
            # in the head's dtype, as autograd through the materialised logits would compute it
            g = grad_rows if self.weight.dtype == torch.float32 else grad_rows.to(self.weight.dtype)
            self.hidden_grad.narrow(0, start, size).copy_(g @ self.weight)
        if self.weight_grad is not None:
            h = self.hidden.narrow(0, start, size)
            self.weight_grad.addmm_(grad_rows.t(), h if h.dtype == torch.float32 else h.to(torch.float32))
        if self.bias_grad is not None:
            self.bias_grad.add_(grad_rows.sum(0))


def _source(
    hidden: Tensor, head: OutputHead, rows: int, grads: _Grads | None, preds: Tensor | None
) -> ChunkSource:
    def read(start: int, size: int) -> Tensor:
        return F.linear(hidden.narrow(0, start, size), head.weight, head.bias)

    return ChunkSource(
        n_rows=hidden.shape[0],
        vocab=head.weight.shape[0],
        dtype=torch.result_type(hidden, head.weight),
        device=hidden.device,
        read=read,
        grad_rows=None if grads is None else grads.rows,
        done=None if grads is None else grads.add_chunk,
        preds=preds,
        rows=rows,
    )


def _run(
    hidden: Tensor,
    head: OutputHead,
    targets: Tensor,
    types: Tensor | None,
    coord_den: Tensor,
    base_den: Tensor,
    plan: LossPlan,
    wants: tuple[bool, bool, bool],
    preds: Tensor | None,
) -> tuple[_Grads | None, dict[str, Tensor]]:
    rows = linear_chunk_rows(head.weight.shape[0], plan.spec.chunk_size, hidden.device)
    grads = _Grads(hidden, head, rows, wants) if any(wants) else None
    source = _source(hidden, head, rows, grads, preds)
    extra = plan.box_terms(_box_rows(hidden, head, plan), hidden.shape[0])
    if grads is None:
        return None, run_stage1_pass(source, targets, types, plan.spec).stats
    spec, grad = plan.writing_gradient(grads.rows_buf, coord_den, base_den, extra)
    return grads, run_stage1_pass(source, targets, types, spec, grad).stats


def _box_rows(hidden: Tensor, head: OutputHead, plan: LossPlan) -> Callable[[Tensor], Tensor]:
    """The coord-slice logits of some rows from their hidden states and the head's coord rows: ``[P, K]``."""

    def rows(positions: Tensor) -> Tensor:
        coord = plan.coord
        assert coord is not None
        weight = head.weight.index_select(0, coord.ids)
        bias = None if head.bias is None else head.bias.index_select(0, coord.ids)
        return F.linear(hidden.index_select(0, positions), weight, bias)

    return rows


class _LinearPassFunction(torch.autograd.Function):
    """Forward: the chunked pass from ``hidden`` and the head, which also produces the gradients of
    ``hidden``, ``weight`` and ``bias`` for ``grad_output = 1``. Backward: scales them by ``grad_output``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        types: Tensor | None,
        coord_denominator: Denominator,
        base_denominator: Denominator,
        plan: LossPlan,
        preds: Tensor | None,
    ) -> Tensor:
        coord_den, base_den = plan.denominators(targets, coord_denominator, base_denominator)
        plan.prepare_text_gate(targets, types)
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        wants = (bool(needs[0]), bool(needs[1]), bool(needs[2])) if plan.want_grad else (False,) * 3
        head = OutputHead(weight, bias)
        grads, stats = _run(hidden, head, targets, types, coord_den, base_den, plan, wants, preds)
        ctx.save_for_backward(hidden, weight, targets, coord_den, base_den)
        ctx.bias = bias  # type: ignore[attr-defined]
        ctx.types = types  # type: ignore[attr-defined]
        ctx.plan = plan  # type: ignore[attr-defined]
        ctx.grads = grads  # type: ignore[attr-defined]
        return plan.loss(stats, coord_den, base_den, hidden.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        none = (None,) * 6
        needs = ctx.needs_input_grad
        if not any(needs[:3]):
            return (None, None, None, *none)
        grads: _Grads | None = ctx.grads
        ctx.grads = None  # hand the buffers over; a second backward reruns the pass
        hidden, weight, targets, coord_den, base_den = ctx.saved_tensors
        bias: Tensor | None = ctx.bias
        if grads is None:
            wants = (bool(needs[0]), bool(needs[1]), bool(needs[2]))
            head = OutputHead(weight, bias)
            grads, _ = _run(hidden, head, targets, ctx.types, coord_den, base_den, ctx.plan, wants, None)
            assert grads is not None
        scale = grad_output.to(torch.float32)
        out: list[Tensor | None] = []
        for grad, like in ((grads.hidden_grad, hidden), (grads.weight_grad, weight), (grads.bias_grad, bias)):
            if grad is None or like is None:
                out.append(None)
                continue
            grad = grad.mul_(scale) if grad.dtype == torch.float32 else grad.mul_(scale.to(grad.dtype))
            out.append(grad if grad.dtype == like.dtype else grad.to(like.dtype))
        return (*out, *none)


def _check(hidden: Tensor, head: OutputHead, targets: Tensor, types: Tensor | None, chunk_size: int) -> None:
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [N, H], got shape {tuple(hidden.shape)}")
    if head.weight.dim() != 2 or head.weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"head weight {tuple(head.weight.shape)} does not match hidden {tuple(hidden.shape)}"
        )
    if head.bias is not None and tuple(head.bias.shape) != (head.weight.shape[0],):
        raise ValueError(
            f"head bias {tuple(head.bias.shape)} does not match weight {tuple(head.weight.shape)}"
        )
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0] or targets.dtype != torch.long:
        raise ValueError(
            f"targets must be int64 [N={hidden.shape[0]}], got {tuple(targets.shape)} {targets.dtype}"
        )
    validate_targets(hidden.shape[0], targets, types, chunk_size)


def _logits_info(hidden: Tensor, head: OutputHead) -> LogitsInfo:
    return LogitsInfo(head.weight.shape[0], hidden.device, wants_grad(hidden, head.weight, head.bias))


def _apply(
    hidden: Tensor,
    head: OutputHead,
    targets: Tensor,
    types: Tensor | None,
    coord_denominator: Denominator,
    base_denominator: Denominator,
    plan: LossPlan,
    preds: Tensor | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    loss = _LinearPassFunction.apply(
        hidden, head.weight, head.bias, targets, types, coord_denominator, base_denominator, plan, preds
    )
    return loss, plan.stats


def linear_coord_loss(
    hidden: Tensor,
    head: OutputHead,
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
    preds: Tensor | None = None,
    boxes: BoxBatch | None = None,
    eos_token_id: int | None = None,
    text_denominator: Denominator = None,
    grad_monitor: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`~coordexp.functional.losses.coord_loss` of ``hidden @ head.weight.T (+ bias)`` without
    those logits: the same loss, statistics and (through ``hidden`` and the head) gradients.

    ``hidden`` ``[N, H]``; ``preds`` (optional, ``[N]`` int64) receives each row's argmax.
    """
    _check(hidden, head, targets, types, chunk_size)
    options = PassOptions(top5=top5, mass=mass, mass_max_tokens=mass_max_tokens, chunk_size=chunk_size)
    plan = coord_loss_plan(
        coord,
        cfg,
        _logits_info(hidden, head),
        options,
        base_ce=base_ce,
        boxes=boxes,
        eos_token_id=eos_token_id,
        text_denominator=text_denominator,
        grad_monitor=grad_monitor,
    )
    return _apply(hidden, head, targets, types, coord_denominator, base_denominator, plan, preds)


def linear_ce_loss(
    hidden: Tensor,
    head: OutputHead,
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
    preds: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`~coordexp.functional.losses.ce_loss` of ``hidden @ head.weight.T (+ bias)`` without
    those logits (see :func:`linear_coord_loss`)."""
    _check(hidden, head, targets, types, chunk_size)
    options = PassOptions(top5=top5, mass=mass, mass_max_tokens=mass_max_tokens, chunk_size=chunk_size)
    plan = ce_loss_plan(coord, coord_cfg, _logits_info(hidden, head), options)
    return _apply(hidden, head, targets, types, None, denominator, plan, preds)
