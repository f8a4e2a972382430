"""Boxes from coord slots: which supervised coord positions form each box, and the decoded boxes.

Grouping (sync-free; the number of box slots ``M = N // 4`` is known on the host):

1. coord positions: supervised targets (``!= -100``) that are coord ids; ``c_b`` per batch row ``b``;
2. box positions: with the ``box_slots`` batch extra (the answer parser's reading of each sample,
   :mod:`coordexp.rows.box_slots`), the coord positions it marks as a slot of a ``bbox_2d`` object
   (a poly's coordinates are no box); without it, every coord position (the reference's reading);
3. a row with ``c_b > 0`` is dropped whole (``skipped_rows``; ``skipped_slots`` sums their ``c_b``) when
   its box positions are not a multiple of 4 (e.g. truncated by ``max_length``), when a sample of it
   could not be read (``UNREAD``), or when its slots are not x1, y1, x2, y2 in turn;
4. the remaining box positions, row-major, are cut into consecutive quartets; slot ``j`` is the
   ``j``-th coordinate as written (x1, y1, x2, y2).

Every object contributes a whole quartet, so a quartet never straddles two objects or two packed
samples (padding_free / packing rows). Each box also carries its link to the previous object of its
answer (``box_pairs``: :class:`~coordexp.generated.batch_extras.BoxPair`; ``FIRST`` without the extra)
and its batch row, which is what :mod:`coordexp.functional.adjacent_repulsion` pairs by.

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
from coordexp.generated.batch_extras import BoxPair, BoxSlot

__all__ = ["BoxGroups", "box_groups", "canonical_boxes", "expected_coords", "slot_probs"]


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
    link: Tensor
    """``[M]`` int64: each box's :class:`BoxPair` code (``FIRST`` without ``box_pairs``)"""
    row: Tensor
    """``[M]`` int64: each box's batch row (-1 where not valid)"""


def _bad_rows(box: Tensor, slots: Tensor, coord_pos: Tensor, rows: int, n: int) -> Tensor:
    """``[rows]`` bool: rows with an unread sample or box slots out of turn (x1, y1, x2, y2, x1, ...)."""
    unread = (coord_pos & (slots == int(BoxSlot.UNREAD))).view(rows, n).any(-1)
    turn = (box.view(rows, n).to(torch.long).cumsum(-1) - 1).remainder(4).reshape(-1)
    misordered = (box & (slots != turn)).view(rows, n).any(-1)
    return unread | misordered


def box_groups(
    targets: Tensor, coord: CoordSlice, slots: Tensor | None = None, links: Tensor | None = None
) -> BoxGroups:
    """Group the coord positions of ``targets`` ``[B, n]`` (next-token targets, -100 ignored) into boxes;
    ``slots`` / ``links``: the next-token ``box_slots`` / ``box_pairs`` codes, flat ``[B * n]``."""
    if targets.dim() != 2:
        raise ValueError(f"targets must be [B, n], got shape {tuple(targets.shape)}")
    rows, n = targets.shape
    flat = targets.reshape(-1)
    total = flat.shape[0]
    is_coord, bins = coord.lookup(flat)
    is_coord = is_coord & (flat != IGNORE_INDEX)
    per_row = is_coord.view(rows, n).sum(-1)
    box = is_coord if slots is None else is_coord & (slots >= 0)
    incomplete = box.view(rows, n).sum(-1).remainder(4) != 0
    if slots is not None:
        incomplete = (incomplete | _bad_rows(box, slots, is_coord, rows, n)) & (per_row > 0)
    keep = box & ~incomplete.unsqueeze(-1).expand(rows, n).reshape(-1)
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
    first = positions[:, 0]
    link = torch.full_like(first, int(BoxPair.FIRST)) if links is None else links.index_select(0, first)
    return BoxGroups(
        positions=positions,
        bins=gt,
        valid=valid,
        n_boxes=n_boxes.to(torch.float32),
        skipped_rows=incomplete.sum().to(torch.float32),
        skipped_slots=torch.where(incomplete, per_row, 0).sum().to(torch.float32),
        link=torch.where(valid, link, int(BoxPair.NONE)),
        row=torch.where(valid, torch.div(first, n, rounding_mode="floor"), -1),
    )


def slot_probs(z: Tensor, temperature: float) -> Tensor:
    """``softmax(z / T)`` over the last dim of ``z`` ``[..., K]`` (fp32, ``T`` floored at 1e-6)."""
    return torch.softmax(z.to(torch.float32) / max(float(temperature), 1e-6), dim=-1)


def expected_coords(z: Tensor, temperature: float) -> Tensor:
    """``ŝ = Σ_k softmax(z / T)_k k / (K - 1)`` over the last dim of ``z`` ``[..., K]`` (fp32)."""
    k = z.shape[-1]
    grid = torch.arange(k, device=z.device, dtype=torch.float32) / (k - 1)
    return (slot_probs(z, temperature) * grid).sum(-1)


def canonical_boxes(box: Tensor) -> Tensor:
    """``canon`` of ``box`` ``[..., 4]`` (x1, y1, x2, y2): ordered corners, clamped to ``[0, 1]``."""
    x1, y1, x2, y2 = box.unbind(-1)
    out = torch.stack(
        [torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], dim=-1
    )
    return out.clamp(0.0, 1.0)
