"""Plain, slow references of issue 21's terms, written from the formulas of
shared/reference/upstream-stage1-additions.md §1-§4 (Python loops over positions, boxes and pairs;
torch autograd only for gradients). Independent of ``coordexp.functional``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

LIMIT = 1e4


def sanitize(x: Tensor) -> Tensor:
    return torch.clamp(torch.nan_to_num(x, nan=0.0, posinf=LIMIT, neginf=-LIMIT), -LIMIT, LIMIT)


def ref_text_gate(
    x: Tensor, rows: Sequence[int], coord_ids: Sequence[int], t: float
) -> tuple[Tensor, Tensor]:
    """``(Σ g, Σ m)`` over ``rows`` of ``x`` ``[N, V]`` (differentiable in ``x``, in ``x``'s dtype)."""
    g_sum = x.new_zeros(())
    m_sum = x.new_zeros(())
    ids = torch.tensor(list(coord_ids))
    for i in rows:
        u = sanitize(x[i]) / t
        a = torch.logsumexp(u, 0)
        c = torch.logsumexp(u[ids], 0)
        m = torch.exp(torch.clamp(c - a, -50.0, 0.0))
        g = -torch.log(torch.clamp(1 - m, 1e-6, 1.0))
        g_sum = g_sum + g
        m_sum = m_sum + m
    return g_sum, m_sum


def ref_groups(
    targets: Tensor, coord_ids: Sequence[int]
) -> tuple[list[list[int]], list[list[int]], int, int]:
    """``(positions, bins, skipped_rows, skipped_slots)``: boxes as lists of 4 flat positions / bins."""
    bin_of = {tok: k for k, tok in enumerate(coord_ids)}
    rows, n = targets.shape
    positions: list[int] = []
    bins: list[int] = []
    skipped_rows = skipped_slots = 0
    for b in range(rows):
        here = [(b * n + i, bin_of[int(targets[b, i])]) for i in range(n) if int(targets[b, i]) in bin_of]
        if len(here) % 4:
            skipped_rows += 1
            skipped_slots += len(here)
            continue
        positions += [p for p, _ in here]
        bins += [k for _, k in here]
    return (
        [positions[i : i + 4] for i in range(0, len(positions), 4)],
        [bins[i : i + 4] for i in range(0, len(bins), 4)],
        skipped_rows,
        skipped_slots,
    )


def ref_decode(z: Tensor, t: float) -> Tensor:
    """Expected coordinate of one slot's coord logits ``z`` ``[K]``."""
    p = torch.softmax(z / max(t, 1e-6), 0)
    k = z.shape[0]
    return sum(p[j] * (j / (k - 1)) for j in range(k))  # type: ignore[return-value]


def canon(b: Sequence[Tensor]) -> list[Tensor]:
    x1, y1, x2, y2 = b
    out = [torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)]
    return [v.clamp(0.0, 1.0) for v in out]


def sl1(d: Tensor) -> Tensor:
    return 0.5 * d * d if abs(float(d.detach())) < 1 else d.abs() - 0.5


def ref_ciou(p: Sequence[Tensor], g: Sequence[Tensor]) -> Tensor:
    eps = 1e-7
    pw, ph = p[2] - p[0], p[3] - p[1]
    gw, gh = g[2] - g[0], g[3] - g[1]
    iw = torch.clamp(torch.minimum(p[2], g[2]) - torch.maximum(p[0], g[0]), min=0)
    ih = torch.clamp(torch.minimum(p[3], g[3]) - torch.maximum(p[1], g[1]), min=0)
    inter = iw * ih
    iou = inter / torch.clamp(pw * ph + gw * gh - inter, min=eps)
    pcx, pcy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
    gcx, gcy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
    rho2 = (pcx - gcx) ** 2 + (pcy - gcy) ** 2
    ex = torch.maximum(p[2], g[2]) - torch.minimum(p[0], g[0])
    ey = torch.maximum(p[3], g[3]) - torch.minimum(p[1], g[1])
    c2 = torch.clamp(ex**2 + ey**2, min=eps)
    v = (4 / math.pi**2) * (
        torch.atan(torch.clamp(gw, min=eps) / torch.clamp(gh, min=eps))
        - torch.atan(torch.clamp(pw, min=eps) / torch.clamp(ph, min=eps))
    ) ** 2
    alpha = v / (1 - iou + v + eps)
    return 1 - iou + rho2 / c2 + alpha * v


def ref_geo_box(
    p: Sequence[Tensor], g: Sequence[Tensor], param: str, cw: float, sw: float
) -> tuple[Tensor, Tensor]:
    if param == "xyxy":
        reg = sum(sl1(p[j] - g[j]) for j in range(4)) / 4
    else:
        pcx, pcy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
        gcx, gcy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        pw, ph = torch.clamp(p[2] - p[0], min=1e-6), torch.clamp(p[3] - p[1], min=1e-6)
        gw, gh = torch.clamp(g[2] - g[0], min=1e-6), torch.clamp(g[3] - g[1], min=1e-6)
        center = (sl1(pcx - gcx) + sl1(pcy - gcy)) / 2
        size = (sl1(torch.log(pw) - torch.log(gw)) + sl1(torch.log(ph) - torch.log(gh))) / 2
        reg = cw * center + sw * size
    return reg, ref_ciou(p, g)  # type: ignore[return-value]


def ref_size_box(
    p: Sequence[Tensor],
    g: Sequence[Tensor],
    eps: float,
    tau_w: float | None,
    tau_h: float | None,
    tau_a: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    e = max(1e-9, eps)
    pw, ph = torch.clamp(p[2] - p[0], min=e), torch.clamp(p[3] - p[1], min=e)
    gw, gh = torch.clamp(g[2] - g[0], min=e), torch.clamp(g[3] - g[1], min=e)
    lwh = sl1(torch.log(pw) - torch.log(gw)) + sl1(torch.log(ph) - torch.log(gh))
    over = pw.new_zeros(())
    if tau_w is not None:
        over = over + torch.relu(torch.log(pw) - tau_w)
    if tau_h is not None:
        over = over + torch.relu(torch.log(ph) - tau_h)
    if tau_a is not None:
        over = over + torch.relu(pw * ph - tau_a)
    return lwh, over, pw, ph, torch.log(torch.clamp(pw * ph, min=e))


def ref_repulsion(
    z: Tensor, prev: Sequence[int], t: float, rho: float, margin: float
) -> tuple[Tensor, Tensor]:
    """``(pen, copy)`` of one pair: ``z`` ``[4, K]`` current logits, ``prev`` the previous GT bins."""
    k = z.shape[-1]
    w = max(1, abs(prev[2] - prev[0]))
    h = max(1, abs(prev[3] - prev[1]))
    hx = max(1, round(w * rho))  # Python's round is half-to-even, like torch.round
    hy = max(1, round(h * rho))
    halves = (hx, hy, hx, hy)
    overlaps = []
    for s in range(4):
        p = torch.softmax(z[s] / max(t, 1e-6), 0)
        kern = torch.tensor(
            [min(1.0, max(0.0, 1 - abs(j - prev[s]) / halves[s])) for j in range(k)], dtype=z.dtype
        )
        overlaps.append(torch.clamp((p * kern).sum(), 0, 1))
    prod = overlaps[0].clamp(1e-12, 1) * overlaps[1].clamp(1e-12, 1)
    prod = prod * overlaps[2].clamp(1e-12, 1) * overlaps[3].clamp(1e-12, 1)
    copy = prod**0.25
    return torch.clamp(copy - margin, min=0) ** 2, copy
