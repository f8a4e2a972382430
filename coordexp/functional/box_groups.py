"""Boxes from coord slots: which supervised coord positions form each box, and the decoded boxes.

Grouping (sync-free; the number of box slots ``M = N // 4`` is known on the host):

1. coord positions: supervised targets (``!= -100``) that are coord ids; ``c_b`` per batch row ``b``;
2. a row with ``c_b mod 4 != 0`` (e.g. truncated by ``max_length``) is dropped whole
   (``skipped_rows``, ``skipped_slots``);
3. the remaining coord positions, row-major, are cut into consecutive quartets; slot ``j`` is the
   ``j``-th coordinate as written (x1, y1, x2, y2).

Every sample's answer contributes whole quartets, so a quartet never straddles two packed samples
(padding_free / packing rows) and the grouping per row is enough; pairs across samples are a matter of
:mod:`coordexp.functional.adjacent_repulsion`.

Decoding: ``p = softmax(z / T)`` over the ``K`` bins in fp32 (``T`` floored at 1e-6),
``ŝ = Σ_k p_k k / (K - 1)``; ``∂ŝ/∂z_k = p_k (k / (K - 1) - ŝ) / T``. Boxes are canonical:
``canon(x1, y1, x2, y2) = (min x, min y, max x, max y)`` clamped to ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.targets import IGNORE_INDEX

__all__ = ["BoxGroups", "box_groups", "canonical_boxes", "expected_coords"]


@dataclass(frozen=True)
class BoxGroups:
    """``M = N // 4`` box slots of a batch; the first ``n_boxes`` are real boxes (``valid``)."""

    positions: Tensor
    """``[M, 4]`` int64: flat index (into the ``[B * n]`` targets) of each slot; 0 where not valid"""
    bins: Tensor
    """``[M, 4]`` int64: the GT bin of each slot; 0 where not valid"""
    valid: Tensor
    """``[M]`` bool"""
    n_boxes: Tensor
    """0-d float32"""
    skipped_rows: Tensor
    """0-d float32: rows with a coord count that is not a multiple of 4"""
    skipped_slots: Tensor
    """0-d float32: their coord positions"""


def box_groups(targets: Tensor, coord: CoordSlice) -> BoxGroups:
    """Group the coord positions of ``targets`` ``[B, n]`` (next-token targets, -100 ignored) into boxes."""
    if targets.dim() != 2:
        raise ValueError(f"targets must be [B, n], got shape {tuple(targets.shape)}")
    rows, n = targets.shape
    flat = targets.reshape(-1)
    total = flat.shape[0]
    is_coord, bins = coord.lookup(flat)
    is_coord = is_coord & (flat != IGNORE_INDEX)
    per_row = is_coord.view(rows, n).sum(-1)
    incomplete = per_row.remainder(4) != 0
    keep = is_coord & ~incomplete.unsqueeze(-1).expand(rows, n).reshape(-1)
    m = total // 4
    dump = 4 * m  # scatter target of the positions that are not kept
    slot = torch.where(keep, keep.to(torch.long).cumsum(0) - 1, dump)
    slot = slot.clamp(max=dump)  # a kept position past 4 * m cannot exist; keeps the index in range
    positions = torch.zeros(dump + 1, dtype=torch.long, device=flat.device)
    positions.scatter_(0, slot, torch.arange(total, device=flat.device))
    gt = torch.zeros(dump + 1, dtype=torch.long, device=flat.device)
    gt.scatter_(0, slot, bins.to(torch.long))
    n_kept = keep.sum()
    n_boxes = torch.div(n_kept, 4, rounding_mode="floor")
    valid = torch.arange(m, device=flat.device) < n_boxes
    positions = torch.where(valid.unsqueeze(-1), positions[:dump].view(m, 4), 0)
    gt = torch.where(valid.unsqueeze(-1), gt[:dump].view(m, 4), 0)
    return BoxGroups(
        positions=positions,
        bins=gt,
        valid=valid,
        n_boxes=n_boxes.to(torch.float32),
        skipped_rows=incomplete.sum().to(torch.float32),
        skipped_slots=torch.where(incomplete, per_row, 0).sum().to(torch.float32),
    )


def expected_coords(z: Tensor, temperature: float) -> Tensor:
    """``ŝ = Σ_k softmax(z / T)_k k / (K - 1)`` over the last dim of ``z`` ``[..., K]`` (fp32)."""
    k = z.shape[-1]
    p = torch.softmax(z.to(torch.float32) / max(float(temperature), 1e-6), dim=-1)
    grid = torch.arange(k, device=z.device, dtype=torch.float32) / (k - 1)
    return (p * grid).sum(-1)


def canonical_boxes(box: Tensor) -> Tensor:
    """``canon`` of ``box`` ``[..., 4]`` (x1, y1, x2, y2): ordered corners, clamped to ``[0, 1]``."""
    x1, y1, x2, y2 = box.unbind(-1)
    out = torch.stack(
        [torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], dim=-1
    )
    return out.clamp(0.0, 1.0)
