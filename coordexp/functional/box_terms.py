"""The box terms (``custom.bbox_geo``, ``custom.bbox_size_aux``) as the one pass adds them to its loss.

Before the statistics pass, the coord-slice logits of the box slots (``[M * 4, K]``, gathered from the
logits, or computed from the hidden states and the head's coord rows when the logits are not
materialised) are decoded (:mod:`coordexp.functional.box_groups`) and scored
(:mod:`coordexp.functional.bbox_geo`, :mod:`coordexp.functional.bbox_size_aux`) with autograd on that
small tensor. The value is added to the pass's loss and its gradient ``[M * 4, K]`` to the coord columns
of the gradient rows the pass writes (``GradSpec.coord_extra``), so no logits-sized buffer is added.

``loss_boxes = (smoothl1_weight Σ r_b + ciou_weight Σ L_b + log_wh_weight Σ ℓ_b
+ oversize_penalty_weight Σ o_b) / box_denominator`` (the batch's boxes, counted across ranks like the
coord positions under ``average_tokens_across_devices``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from coordexp.functional.bbox_geo import BBoxGeoWeights, bbox_geo_per_box
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights, bbox_size_per_box
from coordexp.functional.box_groups import BoxGroups, canonical_boxes, expected_coords

__all__ = ["BoxBatch", "BoxTerms", "box_terms_value", "box_terms_with_grad"]


@dataclass(frozen=True)
class BoxTerms:
    """Which box terms are on, with their weights, and the decoding temperature."""

    temperature: float
    geo: BBoxGeoWeights | None = None
    size: BBoxSizeAuxWeights | None = None

    def merge(self, other: BoxTerms) -> BoxTerms:
        if self.temperature != other.temperature:
            raise ValueError("two components asked for different box decoding temperatures")
        return BoxTerms(self.temperature, self.geo or other.geo, self.size or other.size)


@dataclass(frozen=True)
class BoxBatch:
    """A batch's boxes and the denominator of the box terms."""

    terms: BoxTerms
    groups: BoxGroups
    denominator: Tensor

    @property
    def flat_positions(self) -> Tensor:
        return self.groups.positions.reshape(-1)


def box_terms_value(z: Tensor, boxes: BoxBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(parts, statistics)`` from the box slots' coord logits ``z`` ``[M * 4, K]`` (fp32; autograd
    flows through ``z``). ``parts`` maps each enabled term (``bbox_geo``, ``bbox_size_aux``) to its
    weighted contribution to the loss; the loss adds their sum."""
    groups, terms = boxes.groups, boxes.terms
    m, k = groups.positions.shape[0], z.shape[-1]
    pred = canonical_boxes(expected_coords(z.view(m, 4, k), terms.temperature))
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
        numerator = (
            terms.geo.smoothl1_weight * stats["bbox_reg_sum"] + terms.geo.ciou_weight * stats["bbox_ciou_sum"]
        )
        parts["bbox_geo"] = numerator / boxes.denominator
    if terms.size is not None:
        size = bbox_size_per_box(pred, target, groups.valid, terms.size)
        stats["size_log_wh_sum"], stats["size_oversize_sum"] = size.log_wh.sum(), size.oversize.sum()
        stats["size_width_sum"], stats["size_height_sum"] = size.width.sum(), size.height.sum()
        stats["size_log_area_sum"] = size.log_area.sum()
        numerator = max(0.0, terms.size.log_wh_weight) * stats["size_log_wh_sum"]
        numerator = numerator + max(0.0, terms.size.oversize_penalty_weight) * stats["size_oversize_sum"]
        parts["bbox_size_aux"] = numerator / boxes.denominator
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
