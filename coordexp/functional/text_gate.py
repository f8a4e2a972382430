"""The text gate (in ``custom.coord_soft_ce_w1``): coord-vocabulary mass penalised at text targets.

Eligible positions (:func:`text_gate_positions`): supervised targets that are not coord ids; when the
row is typed (type != -1) only DESC or FORMAT targets (IGNORE-typed rows are left out); never the
tokenizer's ``eos_token_id``. A batch without a coord target has no text gate.

Per eligible position with full-vocabulary logits ``x`` (sanitised: NaN -> 0, ±inf -> ±1e4, clamped to
±1e4), temperature ``T`` and the coord ids ``C`` (:func:`text_gate_rows`):

``a = lse_all(x / T)``, ``c = lse_C(x / T)``, ``m = exp(clamp(c - a, -50, 0))``,
``g = -log(clamp(1 - m, 1e-6, 1))``.

The term is ``text_gate_weight · Σ g / N_text`` (``N_text`` counted across ranks like the coord
positions). Gradient, with ``s = softmax(x / T)``: ``∂g/∂x_j = s_j / T`` for ``j ∈ C`` and
``-(m / (1 - m)) s_j / T`` otherwise; 0 where the ``1e-6`` clamp is active or the sanitiser changed
the logit (:func:`text_gate_grad`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from coordexp.functional.coord_math import sanitize_logits, sanitizer_passes_grad
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.targets import IGNORE_INDEX, TYPE_DESC, TYPE_FORMAT, TYPE_IGNORE

__all__ = ["text_gate_grad", "text_gate_positions", "text_gate_rows"]

MASS_FLOOR = 1e-6


def text_gate_positions(
    targets: Tensor, types: Tensor | None, coord: CoordSlice, eos_token_id: int | None
) -> Tensor:
    """Bool mask of the text-gate positions of ``targets`` ``[N]`` (``types`` ``[N]`` shifted like them)."""
    sup = targets != IGNORE_INDEX
    is_coord, _ = coord.lookup(targets)
    eligible = sup & ~is_coord
    if types is not None:
        eligible = eligible & (types != TYPE_IGNORE) & ((types == TYPE_DESC) | (types == TYPE_FORMAT))
    if eos_token_id is not None:
        eligible = eligible & (targets != eos_token_id)
    return eligible


def text_gate_rows(x: Tensor, coord: CoordSlice, temperature: float) -> tuple[Tensor, Tensor]:
    """``(g, m)`` per row ``[n]`` of full-vocabulary logits ``x`` ``[n, V]`` (fp32, module docstring).

    ``g`` is computed as ``clamp(a - lse_{V∖C}(x / T), 0, -log 1e-6)``, which equals
    ``-log(clamp(1 - m, 1e-6, 1))`` without the cancellation of ``1 - m`` when ``m`` is near 1.
    """
    u = sanitize_logits(x.to(torch.float32)) / temperature
    a = torch.logsumexp(u, dim=-1)
    c = torch.logsumexp(coord.take(u), dim=-1)
    m = torch.exp((c - a).clamp(-50.0, 0.0))
    outside = torch.zeros(u.shape[-1], dtype=torch.float32, device=u.device)
    outside[coord.ids] = -math.inf
    rest = torch.logsumexp(u + outside, dim=-1)  # log(1 - m) + a
    g = (a - rest).clamp(0.0, -math.log(MASS_FLOOR))
    return g.nan_to_num(nan=0.0, posinf=1e4), m


def text_gate_grad(x: Tensor, coord: CoordSlice, temperature: float) -> Tensor:
    """``∂g/∂x`` ``[n, V]`` per row (the analytic form of the module docstring), fp32.

    ``1 - m`` is summed over the non-coord columns directly (no cancellation when ``m`` is near 1).
    """
    xf = x.to(torch.float32)
    s = torch.softmax(sanitize_logits(xf) / temperature, dim=-1)
    outside = torch.ones(s.shape[-1], dtype=torch.float32, device=s.device)
    outside[coord.ids] = 0.0
    rest = (s * outside).sum(-1, keepdim=True)  # 1 - m
    m = coord.take(s).sum(-1, keepdim=True)
    grad = -(m / rest.clamp(min=MASS_FLOOR)) * s / temperature
    in_coord = coord.take(s) / temperature
    if coord.start is not None:
        coord.take(grad).copy_(in_coord)
    else:
        grad.index_copy_(-1, coord.ids, in_coord)
    grad = torch.where(rest > MASS_FLOOR, grad, 0.0)
    return torch.where(sanitizer_passes_grad(xf), grad, 0.0)
