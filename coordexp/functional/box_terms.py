"""The terms scored on the box slots, as the one pass adds them to its loss: ``custom.bbox_geo``,
``custom.bbox_size_aux`` and the adjacent repulsion of ``custom.coord_soft_ce_w1``.

Before the statistics pass, the coord-slice logits of the box slots (``[M * 4, K]``, gathered from the
logits, or computed from the hidden states and the head's coord rows when the logits are not
materialised) are decoded (:mod:`coordexp.functional.box_groups`: one tempered softmax per slot) and
scored (:mod:`coordexp.functional.bbox_geo`, :mod:`coordexp.functional.bbox_size_aux`,
:mod:`coordexp.functional.adjacent_repulsion`) with autograd on that small tensor. The value is added
to the pass's loss and its gradient ``[M * 4, K]`` to the coord columns of the gradient rows the pass
writes (``GradSpec.coord_extra``), so no logits-sized buffer is added.

``loss_boxes = (smoothl1_weight Σ r_b + ciou_weight Σ L_b + log_wh_weight Σ ℓ_b
+ oversize_penalty_weight Σ o_b) / box_denominator + adjacent_repulsion_weight Σ pen / pair_denominator``
(the batch's boxes and applied pairs, counted across ranks like the coord positions under
``average_tokens_across_devices``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from coordexp.functional.adjacent_repulsion import RepulsionWeights, repulsion_from_probs, repulsion_pairs
from coordexp.functional.bbox_geo import BBoxGeoWeights, bbox_geo_per_box
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights, bbox_size_per_box
from coordexp.functional.box_groups import BoxGroups, canonical_boxes, slot_probs

__all__ = ["BOX_PARTS", "BoxBatch", "BoxTerms", "box_terms_value", "box_terms_with_grad"]

GEO_PART, SIZE_PART, REPULSION_PART = "bbox_geo", "bbox_size_aux", "adjacent_repulsion"
BOX_PARTS = (GEO_PART, SIZE_PART, REPULSION_PART)
"""the names of :func:`box_terms_value`'s parts (the terms' catalog conditions)"""


@dataclass(frozen=True)
class BoxTerms:
    """Which box terms are on, with their weights, and the decoding temperature."""

    temperature: float
    geo: BBoxGeoWeights | None = None
    size: BBoxSizeAuxWeights | None = None
    repulsion: RepulsionWeights | None = None

    @property
    def any(self) -> bool:
        return self.geo is not None or self.size is not None or self.repulsion is not None


@dataclass(frozen=True)
class BoxBatch:
    """A batch's boxes, its repulsion pairs and the denominators of the box terms."""

    terms: BoxTerms
    groups: BoxGroups
    denominator: Tensor
    """boxes (bbox_geo, bbox_size_aux)"""
    pair_denominator: Tensor | None = None
    """applied pairs (adjacent repulsion; None: this batch's own count, at least 1)"""

    @property
    def flat_positions(self) -> Tensor:
        return self.groups.positions.reshape(-1)

    def pairs(self) -> tuple[Tensor, Tensor] | None:
        """``(paired, applied)`` ``[M]`` bool of the repulsion (None when it is off)."""
        rep, g = self.terms.repulsion, self.groups
        return None if rep is None else repulsion_pairs(g.valid, g.link, g.row, rep.mode)

    def with_denominators(self, boxes: Tensor, pairs: Tensor | None) -> BoxBatch:
        return BoxBatch(self.terms, self.groups, boxes, pairs)


def box_terms_value(z: Tensor, boxes: BoxBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(parts, statistics)`` from the box slots' coord logits ``z`` ``[M * 4, K]`` (fp32; autograd
    flows through ``z``). ``parts`` maps each enabled term (``bbox_geo``, ``bbox_size_aux``,
    ``adjacent_repulsion``) to its weighted contribution to the loss; the loss adds their sum."""
    groups, terms = boxes.groups, boxes.terms
    m, k = groups.positions.shape[0], z.shape[-1]
    p = slot_probs(z.view(m, 4, k), terms.temperature)
    grid = torch.arange(k, device=z.device, dtype=torch.float32) / (k - 1)
    pred = canonical_boxes((p * grid).sum(-1))
    target = canonical_boxes(groups.bins.to(torch.float32) / (k - 1))
    parts: dict[str, Tensor] = {}
    stats = {
        "n_boxes": groups.n_boxes,
        "n_box_skipped_rows": groups.skipped_rows,
        "n_box_skipped_slots": groups.skipped_slots,
    }
    if terms.geo is not None:
        reg, ciou = bbox_geo_per_box(pred, target, groups.valid, terms.geo)
        stats["bbox_reg_sum"], stats["bbox_ciou_sum"] = reg.sum(), ciou.sum()
        numerator = terms.geo.smoothl1_weight * stats["bbox_reg_sum"]
        numerator = numerator + terms.geo.ciou_weight * stats["bbox_ciou_sum"]
        parts[GEO_PART] = numerator / boxes.denominator
    if terms.size is not None:
        size = bbox_size_per_box(pred, target, groups.valid, terms.size)
        stats["size_log_wh_sum"], stats["size_oversize_sum"] = size.log_wh.sum(), size.oversize.sum()
        stats["size_width_sum"], stats["size_height_sum"] = size.width.sum(), size.height.sum()
        stats["size_log_area_sum"] = size.log_area.sum()
        numerator = max(0.0, terms.size.log_wh_weight) * stats["size_log_wh_sum"]
        numerator = numerator + max(0.0, terms.size.oversize_penalty_weight) * stats["size_oversize_sum"]
        parts[SIZE_PART] = numerator / boxes.denominator
    rep, pairs = terms.repulsion, boxes.pairs()
    if rep is not None and pairs is not None:
        paired, applied = pairs
        # box m's previous box is m - 1 (row 0 has none: paired is False there)
        prev_bins = torch.cat([groups.bins[:1], groups.bins[:-1]])
        pen, copy = repulsion_from_probs(
            p, prev_bins, margin_ratio=rep.margin_ratio, copy_margin=rep.copy_margin
        )
        stats["n_repulsion_pairs"] = paired.sum().to(torch.float32)
        stats["n_repulsion_applied"] = applied.sum().to(torch.float32)
        stats["repulsion_sum"] = torch.where(applied, pen, 0.0).sum()
        stats["repulsion_copy_sum"] = torch.where(applied, copy, 0.0).sum()
        den = boxes.pair_denominator
        den = stats["n_repulsion_applied"].clamp(min=1.0) if den is None else den
        value = rep.weight * stats["repulsion_sum"] / den
        parts[REPULSION_PART] = value.nan_to_num(nan=0.0, posinf=1e4)
    return parts, {key: value.detach() for key, value in stats.items()}


def box_terms_with_grad(
    z: Tensor, boxes: BoxBatch, want_grad: bool
) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """``(loss_boxes detached, statistics, d loss_boxes / d z or None)`` for ``z`` ``[M * 4, K]`` (any
    float dtype); ``loss_boxes`` is the sum of the parts of :func:`box_terms_value`."""
    zf = z.detach().to(torch.float32)
    if not want_grad:
        with torch.no_grad():
            parts, stats = box_terms_value(zf, boxes)
            return _total(parts, zf), stats, None
    with torch.enable_grad():
        zf.requires_grad_(True)
        parts, stats = box_terms_value(zf, boxes)
        value = _total(parts, zf)
        (grad,) = torch.autograd.grad(value, zf)
    return value.detach(), stats, grad


def _total(parts: dict[str, Tensor], z: Tensor) -> Tensor:
    total = torch.zeros((), device=z.device)
    for value in parts.values():
        total = total + value
    return total
