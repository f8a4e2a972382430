"""Adjacent repulsion: against copying the previous object's box (in ``custom.coord_soft_ce_w1``).

Pairs. Within one answer, a ``bbox_2d`` object whose previous object is a ``bbox_2d`` too forms a pair
with it (:func:`object_links`, host side, from the parsed answer: the ``box_pairs`` batch extra); the
first object of each answer has none, so pairs never cross packed-sample boundaries. In the pass
(:func:`repulsion_pairs`, sync-free) box ``m`` pairs with box ``m - 1`` when its link says so and both
are kept boxes of the same batch row. ``pair_count`` counts every pair; a pair is *applied* under
``global``, or under ``same_desc`` when :func:`normalize_desc` of the two descs are equal.

Penalty per applied pair (:func:`repulsion_per_pair`), with the current object's coord logits ``z_s``
(slots ``s = 1..4``) and the previous object's GT bins ``a``:

- ``P_s = softmax(z_s / max(T, 1e-6))`` (fp32);
- ``w = max(1, |a3 - a1|)``, ``h = max(1, |a4 - a2|)``, ``hx = max(1, round(w ρ))``,
  ``hy = max(1, round(h ρ))`` (round half to even), half-widths ``(hx, hy, hx, hy)``;
- ``K_s(k) = clamp(1 - |k - a_s| / h_s, 0, 1)``, ``o_s = clamp(Σ_k P_s(k) K_s(k), 0, 1)``;
- ``copy = (Π_s clamp(o_s, 1e-12, 1))^(1/4)``, ``pen = max(0, copy - copy_margin)²``.

The term is ``adjacent_repulsion_weight · Σ pen / n_applied`` over the batch's applied pairs (counted
across ranks with the coord positions under ``average_tokens_across_devices``; no applied pair: 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from coordexp.generated.batch_extras import BoxPair

__all__ = [
    "RepulsionWeights",
    "normalize_desc",
    "object_links",
    "repulsion_from_probs",
    "repulsion_pairs",
    "repulsion_per_pair",
]

_SEPARATORS = re.compile(r"[_/()]")
_SPACES = re.compile(r"\s+")
FILTER_MODES = ("same_desc", "global")


def normalize_desc(desc: str) -> str:
    """Lower-case and strip; ``_``, ``/``, ``(``, ``)`` become spaces; runs of whitespace one space."""
    text = _SEPARATORS.sub(" ", desc.lower().strip())
    return _SPACES.sub(" ", text).strip()


def object_links(objects: Sequence[tuple[str | None, bool]]) -> list[int]:
    """The :class:`BoxPair` code of each object of ONE answer, from ``(desc, is_box)`` in written order:
    ``NONE`` for an object that is no box, ``FIRST`` for a box without a previous box object,
    else ``SAME_DESC`` / ``OTHER_DESC`` (a missing desc equals no other)."""
    links: list[int] = []
    for j, (desc, is_box) in enumerate(objects):
        if not is_box:
            links.append(int(BoxPair.NONE))
            continue
        if j == 0 or not objects[j - 1][1]:
            links.append(int(BoxPair.FIRST))
            continue
        prev = objects[j - 1][0]
        same = desc is not None and prev is not None and normalize_desc(desc) == normalize_desc(prev)
        links.append(int(BoxPair.SAME_DESC if same else BoxPair.OTHER_DESC))
    return links


@dataclass(frozen=True)
class RepulsionWeights:
    """The repulsion's settings (``custom.coord_soft_ce_w1.adjacent_repulsion_*``)."""

    weight: float
    mode: str
    margin_ratio: float
    copy_margin: float

    def __post_init__(self) -> None:
        if self.mode not in FILTER_MODES:
            raise ValueError(f"adjacent_repulsion_filter_mode must be same_desc or global, got {self.mode!r}")

    @classmethod
    def of(cls, cfg: Any) -> RepulsionWeights | None:
        """From a parsed ``coord_soft_ce_w1`` section; None when the weight is 0 (off)."""
        weight = max(0.0, float(cfg.adjacent_repulsion_weight))
        if weight == 0.0:
            return None
        return cls(
            weight,
            str(cfg.adjacent_repulsion_filter_mode),
            float(cfg.adjacent_repulsion_margin_ratio),
            float(cfg.adjacent_repulsion_copy_margin),
        )


def repulsion_pairs(valid: Tensor, link: Tensor, row: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """``(paired, applied)`` ``[M]`` bool: box ``m`` pairs with box ``m - 1`` (see the module docstring)."""
    if mode not in FILTER_MODES:
        raise ValueError(f"adjacent_repulsion_filter_mode must be same_desc or global, got {mode!r}")
    prev_valid = torch.cat([valid.new_zeros(1), valid[:-1]])
    prev_row = torch.cat([row.new_full((1,), -1), row[:-1]])
    paired = valid & prev_valid & (prev_row == row) & (link >= int(BoxPair.OTHER_DESC))
    applied = paired if mode == "global" else paired & (link == int(BoxPair.SAME_DESC))
    return paired, applied


def repulsion_from_probs(
    p: Tensor, prev_bins: Tensor, *, margin_ratio: float, copy_margin: float
) -> tuple[Tensor, Tensor]:
    """``(pen, copy)`` per pair ``[P]`` from the current object's slot distributions ``p`` ``[P, 4, K]``
    (fp32, tempered) and the previous object's GT bins ``prev_bins`` ``[P, 4]``."""
    k = p.shape[-1]
    a = prev_bins.to(torch.float32)
    w = (a[:, 2] - a[:, 0]).abs().clamp(min=1.0)
    h = (a[:, 3] - a[:, 1]).abs().clamp(min=1.0)
    hx = torch.round(w * margin_ratio).clamp(min=1.0)
    hy = torch.round(h * margin_ratio).clamp(min=1.0)
    half = torch.stack([hx, hy, hx, hy], dim=-1)
    grid = torch.arange(k, device=p.device, dtype=torch.float32)
    kernel = (1.0 - (grid - a.unsqueeze(-1)).abs() / half.unsqueeze(-1)).clamp(0.0, 1.0)
    overlap = (p * kernel).sum(-1).clamp(0.0, 1.0)
    copy = overlap.clamp(1e-12, 1.0).log().mean(-1).exp()
    pen = torch.relu(copy - copy_margin) ** 2
    return pen, copy


def repulsion_per_pair(
    z: Tensor, prev_bins: Tensor, *, temperature: float, margin_ratio: float, copy_margin: float
) -> tuple[Tensor, Tensor]:
    """``(pen, copy)`` per pair ``[P]`` from the current object's coord logits ``z`` ``[P, 4, K]`` and the
    previous object's GT bins ``prev_bins`` ``[P, 4]`` (see the module docstring)."""
    p = torch.softmax(z.to(torch.float32) / max(float(temperature), 1e-6), dim=-1)
    return repulsion_from_probs(p, prev_bins, margin_ratio=margin_ratio, copy_margin=copy_margin)
