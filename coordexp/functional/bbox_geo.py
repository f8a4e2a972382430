"""The box geometry term (``custom.bbox_geo``): SmoothL1 regression and CIoU on decoded boxes.

Per box ``b`` with canonical prediction ``P`` (decoded, :mod:`coordexp.functional.box_groups`) and
canonical target ``G = canon(bins / 999)``, ``SL1(d) = 0.5 d^2`` if ``|d| < 1`` else ``|d| - 0.5``:

- ``xyxy``: ``r_b = (1/4) Σ_j SL1(P_j - G_j)``;
- ``center_size``: ``r_b = center_weight · ½[SL1(pcx - gcx) + SL1(pcy - gcy)]
  + size_weight · ½[SL1(ln pw - ln gw) + SL1(ln ph - ln gh)]`` (sides clamped >= 1e-6);
- CIoU (``eps = 1e-7``): ``IoU = inter / max(union, eps)``, ``ρ²`` the squared centre distance,
  ``c² = max(enclosing diagonal², eps)``, ``v = (4/π²)(atan(gw/gh) - atan(pw/ph))²`` (sides clamped >= eps),
  ``α = v / (1 - IoU + v + eps)`` (not detached), ``L_b = 1 - IoU + ρ²/c² + α v``.

A box counts (``v_b = 1``) when its 8 numbers are finite; every per-box value goes through
``nan_to_num`` (NaN, ±inf -> 0). The term is ``(smoothl1_weight Σ r_b + ciou_weight Σ L_b) / n_boxes``
over this batch's boxes, fp32. (The reference divides the regression by the finite boxes and the CIoU
by all boxes; they differ only when a decoded box is non-finite.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from coordexp.generated.models.config import BBoxGeoConfig

__all__ = ["BBoxGeoWeights", "bbox_geo_per_box", "ciou_loss", "smooth_l1"]

CIOU_EPS = 1e-7
SIZE_FLOOR = 1e-6


_SECTION: Final = BBoxGeoConfig()


@dataclass(frozen=True)
class BBoxGeoWeights:
    """The ``custom.bbox_geo`` fields but ``enabled``, with the schema's defaults."""

    smoothl1_weight: float = _SECTION.smoothl1_weight
    ciou_weight: float = _SECTION.ciou_weight
    parameterization: str = _SECTION.parameterization
    center_weight: float = _SECTION.center_weight
    size_weight: float = _SECTION.size_weight

    @classmethod
    def of(cls, section: BBoxGeoConfig) -> BBoxGeoWeights:
        return cls(**section.model_dump(exclude={"enabled"}))


def smooth_l1(d: Tensor) -> Tensor:
    """PyTorch's smooth L1 with beta 1, elementwise."""
    a = d.abs()
    return torch.where(a < 1.0, 0.5 * d * d, a - 0.5)


def ciou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Per-box CIoU loss ``[...]`` of canonical boxes ``[..., 4]`` (see the module docstring)."""
    px1, py1, px2, py2 = pred.unbind(-1)
    gx1, gy1, gx2, gy2 = target.unbind(-1)
    pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
    iw = (torch.minimum(px2, gx2) - torch.maximum(px1, gx1)).clamp(min=0.0)
    ih = (torch.minimum(py2, gy2) - torch.maximum(py1, gy1)).clamp(min=0.0)
    inter = iw * ih
    union = pw * ph + gw * gh - inter
    iou = inter / union.clamp(min=CIOU_EPS)
    rho2 = ((px1 + px2 - gx1 - gx2) ** 2 + (py1 + py2 - gy1 - gy2) ** 2) / 4.0
    cw = torch.maximum(px2, gx2) - torch.minimum(px1, gx1)
    ch = torch.maximum(py2, gy2) - torch.minimum(py1, gy1)
    c2 = (cw * cw + ch * ch).clamp(min=CIOU_EPS)
    v = (4.0 / math.pi**2) * (
        torch.atan(gw.clamp(min=CIOU_EPS) / gh.clamp(min=CIOU_EPS))
        - torch.atan(pw.clamp(min=CIOU_EPS) / ph.clamp(min=CIOU_EPS))
    ) ** 2
    alpha = v / (1.0 - iou + v + CIOU_EPS)
    return 1.0 - iou + rho2 / c2 + alpha * v


def _center_size(pred: Tensor, target: Tensor, w: BBoxGeoWeights) -> Tensor:
    def parts(box: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x1, y1, x2, y2 = box.unbind(-1)
        return (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1).clamp(min=SIZE_FLOOR), (y2 - y1).clamp(min=SIZE_FLOOR)

    pcx, pcy, pw, ph = parts(pred)
    gcx, gcy, gw, gh = parts(target)
    center = 0.5 * (smooth_l1(pcx - gcx) + smooth_l1(pcy - gcy))
    size = 0.5 * (smooth_l1(pw.log() - gw.log()) + smooth_l1(ph.log() - gh.log()))
    return w.center_weight * center + w.size_weight * size


def bbox_geo_per_box(pred: Tensor, target: Tensor, valid: Tensor, w: BBoxGeoWeights) -> tuple[Tensor, Tensor]:
    """``(r_b, L_b)`` per box ``[M]`` (unweighted by the two term weights), 0 where not ``valid`` or not
    finite; ``pred`` and ``target`` ``[M, 4]`` canonical fp32."""
    finite = valid & torch.cat([pred, target], -1).isfinite().all(-1)
    if w.parameterization == "center_size":
        reg = _center_size(pred, target, w)
    else:
        reg = smooth_l1(pred - target).mean(-1)
    ciou = ciou_loss(pred, target)
    reg = torch.where(finite, reg.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    ciou = torch.where(valid, ciou.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    return reg, ciou
