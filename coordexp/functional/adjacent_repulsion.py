"""Adjacent repulsion: against copying the previous object's box (in ``custom.coord_soft_ce_w1``).

Pairs (host side, :func:`repulsion_pairs`): within one sample's answer, object ``j >= 1`` is paired with
object ``j - 1``; the first object of each sample has none, so pairs never cross packed-sample
boundaries. ``pair_count`` counts every pair; a pair is *applied* under ``global``, or under
``same_desc`` when ``normalize_desc`` of the two descs are equal.

Penalty per applied pair (:func:`repulsion_per_pair`), with the current object's coord logits ``z_s``
(slots ``s = 1..4``) and the previous object's GT bins ``a``:

- ``P_s = softmax(z_s / max(T, 1e-6))`` (fp32);
- ``w = max(1, |a3 - a1|)``, ``h = max(1, |a4 - a2|)``, ``hx = max(1, round(w ρ))``,
  ``hy = max(1, round(h ρ))`` (round half to even), half-widths ``(hx, hy, hx, hy)``;
- ``K_s(k) = clamp(1 - |k - a_s| / h_s, 0, 1)``, ``o_s = clamp(Σ_k P_s(k) K_s(k), 0, 1)``;
- ``copy = (Π_s clamp(o_s, 1e-12, 1))^(1/4)``, ``pen = max(0, copy - copy_margin)²``.

The term is ``adjacent_repulsion_weight · Σ pen / max(1, n_applied)`` over this batch's applied pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RepulsionPairs", "normalize_desc", "repulsion_pairs", "repulsion_per_pair"]

_SEPARATORS = re.compile(r"[_/()]")
_SPACES = re.compile(r"\s+")


def normalize_desc(desc: str) -> str:
    """Lower-case and strip; ``_``, ``/``, ``(``, ``)`` become spaces; runs of whitespace one space."""
    text = _SEPARATORS.sub(" ", desc.lower().strip())
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class RepulsionPairs:
    """Pairs of a batch, as indices into its boxes (row-major box order)."""

    current: tuple[int, ...]
    """box index of each pair's current object"""
    previous: tuple[int, ...]
    """box index of the previous object of the same sample"""
    applied: tuple[bool, ...]

    @property
    def pair_count(self) -> int:
        return len(self.current)

    @property
    def applied_count(self) -> int:
        return sum(self.applied)


def repulsion_pairs(samples: Sequence[Sequence[str]], mode: str) -> RepulsionPairs:
    """Pairs from the descs of each sample's objects, in box order (``samples[i]`` lists the descs of
    sample ``i``'s objects; boxes are numbered consecutively over the samples)."""
    if mode not in ("same_desc", "global"):
        raise ValueError(f"adjacent_repulsion_filter_mode must be same_desc or global, got {mode!r}")
    current: list[int] = []
    previous: list[int] = []
    applied: list[bool] = []
    base = 0
    for descs in samples:
        names = [normalize_desc(d) for d in descs]
        for j in range(1, len(names)):
            current.append(base + j)
            previous.append(base + j - 1)
            applied.append(mode == "global" or names[j] == names[j - 1])
        base += len(names)
    return RepulsionPairs(tuple(current), tuple(previous), tuple(applied))


def repulsion_per_pair(
    z: Tensor, prev_bins: Tensor, *, temperature: float, margin_ratio: float, copy_margin: float
) -> tuple[Tensor, Tensor]:
    """``(pen, copy)`` per pair ``[P]`` from the current object's coord logits ``z`` ``[P, 4, K]`` and the
    previous object's GT bins ``prev_bins`` ``[P, 4]`` (see the module docstring)."""
    k = z.shape[-1]
    p = torch.softmax(z.to(torch.float32) / max(float(temperature), 1e-6), dim=-1)
    a = prev_bins.to(torch.float32)
    w = (a[:, 2] - a[:, 0]).abs().clamp(min=1.0)
    h = (a[:, 3] - a[:, 1]).abs().clamp(min=1.0)
    hx = torch.round(w * margin_ratio).clamp(min=1.0)
    hy = torch.round(h * margin_ratio).clamp(min=1.0)
    half = torch.stack([hx, hy, hx, hy], dim=-1)
    grid = torch.arange(k, device=z.device, dtype=torch.float32)
    kernel = (1.0 - (grid - a.unsqueeze(-1)).abs() / half.unsqueeze(-1)).clamp(0.0, 1.0)
    overlap = (p * kernel).sum(-1).clamp(0.0, 1.0)
    copy = overlap.clamp(1e-12, 1.0).log().mean(-1).exp()
    pen = torch.relu(copy - copy_margin) ** 2
    return pen, copy
