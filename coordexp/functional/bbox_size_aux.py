"""The box size term (``custom.bbox_size_aux``): log width / height regression and an oversize penalty.

On canonical decoded boxes ``P`` and targets ``G`` (:mod:`coordexp.functional.box_groups`), widths and
heights clamped to ``>= e = max(1e-9, eps)``:

- ``log_wh``: ``ℓ_b = SL1(ln pw - ln gw) + SL1(ln ph - ln gh)`` (the sum, not the mean);
- ``oversize``: ``o_b = [τ_w set] relu(ln pw - τ_w) + [τ_h set] relu(ln ph - τ_h)
  + [τ_A set] relu(pw ph - τ_A)`` (no target; 0 with every threshold null);
- statistics: ``pw``, ``ph`` and ``ln max(pw ph, e)`` of the predictions.

The term is ``(log_wh_weight Σ ℓ_b + oversize_penalty_weight Σ o_b) / n_boxes`` over this batch's boxes,
fp32; per-box values go through ``nan_to_num`` (NaN, ±inf -> 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from coordexp.functional.bbox_geo import smooth_l1
from coordexp.generated.models.config import BBoxSizeAuxConfig

__all__ = ["BBoxSizeAuxWeights", "SizeTerms", "bbox_size_per_box"]


_SECTION: Final = BBoxSizeAuxConfig()


@dataclass(frozen=True)
class BBoxSizeAuxWeights:
    """The ``custom.bbox_size_aux`` fields but ``enabled``, with the schema's defaults."""

    log_wh_weight: float = _SECTION.log_wh_weight
    oversize_penalty_weight: float = _SECTION.oversize_penalty_weight
    oversize_area_frac_threshold: float | None = _SECTION.oversize_area_frac_threshold
    oversize_log_w_threshold: float | None = _SECTION.oversize_log_w_threshold
    oversize_log_h_threshold: float | None = _SECTION.oversize_log_h_threshold
    eps: float = _SECTION.eps

    @classmethod
    def of(cls, section: BBoxSizeAuxConfig) -> BBoxSizeAuxWeights:
        return cls(**section.model_dump(exclude={"enabled"}))


@dataclass(frozen=True)
class SizeTerms:
    """Per box ``[M]``, 0 where not valid."""

    log_wh: Tensor
    oversize: Tensor
    width: Tensor
    height: Tensor
    log_area: Tensor


def _clean(x: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid, x.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0), 0.0)


def bbox_size_per_box(pred: Tensor, target: Tensor, valid: Tensor, w: BBoxSizeAuxWeights) -> SizeTerms:
    """The per-box size terms of canonical ``pred`` / ``target`` ``[M, 4]`` fp32 (module docstring)."""
    e = max(1e-9, float(w.eps))
    pw = (pred[..., 2] - pred[..., 0]).clamp(min=e)
    ph = (pred[..., 3] - pred[..., 1]).clamp(min=e)
    gw = (target[..., 2] - target[..., 0]).clamp(min=e)
    gh = (target[..., 3] - target[..., 1]).clamp(min=e)
    pred_ok = valid & pred.isfinite().all(-1)
    both_ok = pred_ok & target.isfinite().all(-1)
    log_wh = smooth_l1(pw.log() - gw.log()) + smooth_l1(ph.log() - gh.log())
    over = torch.zeros_like(pw)
    if w.oversize_log_w_threshold is not None:
        over = over + torch.relu(pw.log() - w.oversize_log_w_threshold)
    if w.oversize_log_h_threshold is not None:
        over = over + torch.relu(ph.log() - w.oversize_log_h_threshold)
    if w.oversize_area_frac_threshold is not None:
        over = over + torch.relu(pw * ph - w.oversize_area_frac_threshold)
    return SizeTerms(
        log_wh=_clean(log_wh, both_ok),
        oversize=_clean(over, pred_ok),
        width=_clean(pw, pred_ok),
        height=_clean(ph, pred_ok),
        log_area=_clean((pw * ph).clamp(min=e).log(), pred_ok),
    )
