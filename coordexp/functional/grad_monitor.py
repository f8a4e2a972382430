"""Per-term gradient monitor of the one Stage-1 pass (``custom.grad_monitor``): no extra backward.

The pass writes ``d loss / d logits`` (``grad_output = 1``) chunk by chunk. On a monitored pass it also
splits each chunk's gradient rows into the loss terms' parts and adds their Gram matrix
``G[i, j] = Σ_rows <g_i, g_j>`` (fp32, on the device) to :attr:`GradMonitor.gram`, without a host sync;
the Gram entries ride the step's single device->host transfer as statistics
(:data:`GRAM_PREFIX` ``<term>:<term>``). On the host, :func:`monitor_values` turns them into each term's
gradient norm, its cosine to the total gradient (``Σ_j G[i, j]``) and the share of conflicting pairs.

Every part of a row is ``a Q + b S + c + d e_t`` (:class:`TermRows`): ``Q`` the pass's full-vocab softmax
rows times the sanitiser's gradient mask, ``S`` the tempered softmax of the text gate (T != 1 only),
``c`` ``[n, K]`` a coord-column part, ``e_t`` the one-hot of the row's target (a non-coord id: the base
CE's rows). The dot products are therefore per-row reductions over the non-coord columns (``<Q, Q>``,
and with ``S``: ``<S, S>``, ``<Q, S>``) plus dot products of the terms' ``[n, K]`` coord-column rows
(:func:`chunk_gram`); no ``[N, V]`` buffer and at most two extra chunk-sized ones. The box terms' parts
(``[N, K]`` each, from autograd on the small box tensor) are added by name, so any further part of
``box_terms_value`` is monitored without a change here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from coordexp.functional.coord_math import CoordTerms, coord_terms_grad_parts, sanitizer_passes_grad
from coordexp.functional.coord_slice import CoordSlice
from coordexp.generated.models.config import CoordSoftCEW1Config

__all__ = [
    "GRAM_PREFIX",
    "ChunkView",
    "FullRows",
    "GradMonitor",
    "TermRows",
    "chunk_gram",
    "coord_parts",
    "monitor_values",
]

GRAM_PREFIX = "gradmon:"
"""statistics ``gradmon:<term i>:<term j>`` (i <= j in the monitor's order) hold ``G[i, j]``"""


@dataclass(frozen=True)
class TermRows:
    """One term's gradient rows of a chunk: ``a Q + b S + c`` (coord columns) ``+ d e_target``; None:
    absent. ``a``, ``b``, ``d`` ``[n]``; ``c`` ``[n, K]``."""

    a: Tensor | None = None
    b: Tensor | None = None
    c: Tensor | None = None
    d: Tensor | None = None


@dataclass(frozen=True)
class FullRows:
    """What the terms' full-vocab rows share: ``Q`` (masked softmax rows) and optionally ``S``."""

    q: Tensor
    """``[n, V]`` fp32, 0 on the coord columns"""
    q_coord: Tensor
    """``[n, K]``: ``Q`` on the coord columns"""
    q_target: Tensor
    """``[n]``: ``q`` at each row's target (0 for an ignored target or a coord one)"""
    s: Tensor | None = None
    s_coord: Tensor | None = None
    s_target: Tensor | None = None


class ChunkView(Protocol):
    """What the monitor reads of a chunk of the pass (``chunk_stats.ChunkStats``) while it writes its
    gradient rows."""

    coord_row: Tensor
    """the chunk's coord-target rows ``[n]`` (bool)"""
    bins: Tensor
    tgt: Tensor
    grad_mask: Tensor | None
    """1.0 where the gradient flows, 0.0 where the sanitiser changed the logit ``[n, V]``"""
    grad: Any
    """the pass's ``GradSpec`` (``coord_scale``)"""


Full = tuple[
    Tensor, tuple[Tensor, Tensor], Tensor | None, Tensor, tuple[Tensor, Tensor, Tensor | None] | None
]
"""``(softmax rows, (gate's softmax coefficient, gate scale), base CE's coefficient or None, base rows,
text gate's (coord part, coefficient, tempered softmax or None) or None)``"""


def coord_parts(
    terms: CoordTerms, bins: Tensor, cfg: CoordSoftCEW1Config, row_scale: Tensor, keep: Tensor
) -> dict[str, TermRows]:
    """The coord-column parts (softCE, W1, CE with a non-zero weight) of a chunk's gradient rows,
    zero where the sanitiser changed the logit (``keep`` False)."""
    parts = coord_terms_grad_parts(terms, bins, cfg, row_scale)
    return {name: TermRows(c=part.masked_fill_(~keep, 0.0)) for name, part in parts.items()}


def _zero_coord_columns(coord: CoordSlice, rows: Tensor) -> Tensor:
    """``rows`` with its coord columns set to 0, in place."""
    if coord.start is not None:
        coord.take(rows).zero_()
        return rows
    return rows.index_fill_(-1, coord.ids, 0.0)


@dataclass
class GradMonitor:
    """The monitored terms of one pass (in this order) and their Gram matrix, summed over chunks."""

    names: tuple[str, ...]
    gram: Tensor
    box_parts: dict[str, Tensor] = field(default_factory=dict)
    """``[N, K]`` gradient of each box part on the coord columns (rows of the logits)"""
    start: int = 0
    size: int = 0
    scratch: list[Tensor] = field(default_factory=list)
    """chunk-sized fp32 scratch of a monitored pass (one, two with the tempered text gate)"""

    @classmethod
    def of(cls, names: tuple[str, ...], device: torch.device) -> GradMonitor:
        if len(set(names)) != len(names):
            raise ValueError(f"gradient monitor: duplicate term names {names}")
        return cls(names, torch.zeros((len(names), len(names)), dtype=torch.float32, device=device))

    def at(self, start: int, size: int) -> None:
        """The rows of the chunk the pass is about to compute."""
        self.start, self.size = start, size

    def add(self, parts: Mapping[str, TermRows], full: FullRows | None, n: int, k: int) -> None:
        """Add a chunk's Gram matrix (its parts by name, plus the box parts of its rows)."""
        rows = {name: parts.get(name) for name in self.names}
        for name, grad in self.box_parts.items():
            rows[name] = TermRows(c=grad.narrow(0, self.start, n))
        self.gram.add_(chunk_gram([rows[name] for name in self.names], full, n, k, self.gram.device))

    def add_chunk(
        self,
        chunk: ChunkView,
        coord: CoordSlice,
        cfg: CoordSoftCEW1Config,
        x: Tensor,
        terms: CoordTerms,
        full: Full | None = None,
    ) -> None:
        """Each term's part of a chunk's gradient rows ``x`` ``[n, V]``, as the pass sums them, into the
        Gram matrix: the coord terms', and with ``full`` (a chunk with the full-vocab softmax) the base
        CE's, the gate's and the text gate's (called before the pass scales its gradient mask)."""
        n = x.shape[0]
        keep = sanitizer_passes_grad(coord.take(x))
        row_scale = torch.where(chunk.coord_row, chunk.grad.coord_scale, 0.0)
        parts = coord_parts(terms, chunk.bins, cfg, row_scale, keep)
        if full is None:
            self.add(parts, None, n, coord.num_bins)
            return
        probs, gate, base, base_on, text = full
        assert chunk.grad_mask is not None
        if base is not None:
            parts["base_ce"] = TermRows(a=base, d=torch.where(base_on, -base, 0.0))
        if cfg.gate_weight != 0:
            gate_c = terms.p * (-gate[1] / cfg.temperature).unsqueeze(-1)
            parts["gate"] = TermRows(a=gate[0], c=gate_c.masked_fill_(~keep, 0.0))
        bufs = self._buffers(2 if text is not None and text[2] is not None else 1, probs)
        q = torch.mul(probs, chunk.grad_mask, out=bufs[0])
        q_coord = coord.take(q).clone()
        off = _zero_coord_columns(coord, q)
        target = chunk.tgt.clamp(min=0).unsqueeze(-1)
        s = s_coord = s_target = None
        if text is not None:
            text_c = text[0].masked_fill(~keep, 0.0)
            if text[2] is None:
                parts["text_gate"] = TermRows(a=text[1], c=text_c)
            else:
                s_coord = coord.take(text[2]).clone()
                s = _zero_coord_columns(coord, bufs[1].copy_(text[2]))
                s_target = s.gather(-1, target).squeeze(-1)
                parts["text_gate"] = TermRows(b=text[1], c=text_c)
        full_rows = FullRows(off, q_coord, off.gather(-1, target).squeeze(-1), s, s_coord, s_target)
        self.add(parts, full_rows, n, coord.num_bins)

    def _buffers(self, count: int, like: Tensor) -> list[Tensor]:
        """``count`` fp32 chunk-sized scratch buffers, allocated on the pass's first (largest) chunk and
        reused by every later one."""
        n, v = like.shape
        if self.scratch and self.scratch[0].shape[0] < n:
            self.scratch.clear()
        while len(self.scratch) < count:
            self.scratch.append(torch.empty((n, v), dtype=torch.float32, device=like.device))
        return [buf.narrow(0, 0, n) for buf in self.scratch[:count]]

    def stats(self) -> dict[str, Tensor]:
        """The Gram entries as 0-d statistics (upper triangle)."""
        out = {}
        for i, a in enumerate(self.names):
            for j in range(i, len(self.names)):
                out[f"{GRAM_PREFIX}{a}:{self.names[j]}"] = self.gram[i, j]
        return out


def chunk_gram(
    rows: list[TermRows | None], full: FullRows | None, n: int, k: int, device: torch.device
) -> Tensor:
    """``G[i, j] = Σ_rows <g_i, g_j>`` ``[t, t]`` of the terms' rows (module docstring; sync-free).

    The vocabulary is split into the non-coord columns (``full.q`` / ``full.s`` there, the target's
    one-hot) and the coord columns, where each term's rows ``a Q_C + b S_C + c`` are formed as the pass
    forms them: expanding ``|a Q + c|^2`` over the coord columns instead would cancel (the gate's two
    parts nearly do when the coord mass is near 1).
    """
    t = len(rows)
    zero_n = torch.zeros(n, dtype=torch.float32, device=device)
    zero_c = torch.zeros((n, k), dtype=torch.float32, device=device)

    def stack(attr: str) -> Tensor | None:
        cols = [getattr(r, attr) if r is not None else None for r in rows]
        if all(col is None for col in cols):
            return None
        return torch.stack([zero_n if col is None else col.to(torch.float32) for col in cols], dim=-1)

    def coord_rows(r: TermRows | None) -> Tensor:
        out = zero_c if r is None or r.c is None else r.c.to(torch.float32)
        if r is not None and r.a is not None and full is not None:
            out = out + full.q_coord * r.a.unsqueeze(-1)
        if r is not None and r.b is not None and full is not None and full.s_coord is not None:
            out = out + full.s_coord * r.b.unsqueeze(-1)
        return out

    flat = torch.stack([coord_rows(r) for r in rows], 0).reshape(t, n * k)
    gram = flat @ flat.t()
    if full is None:
        return gram
    a, b, d = stack("a"), stack("b"), stack("d")

    def cross(x: Tensor | None, y: Tensor | None, w: Tensor) -> Tensor:
        """``Σ_rows w (x_i y_j + y_i x_j)``."""
        if x is None or y is None:
            return torch.zeros((t, t), dtype=torch.float32, device=device)
        m = x.t() @ (y * w.unsqueeze(-1))
        return m + m.t()

    def square(x: Tensor | None, w: Tensor) -> Tensor:
        if x is None:
            return torch.zeros((t, t), dtype=torch.float32, device=device)
        return x.t() @ (x * w.unsqueeze(-1))

    one = torch.ones(n, dtype=torch.float32, device=device)
    gram = gram + square(a, _row_dots(full.q, full.q)) + square(d, one)
    gram = gram + cross(a, d, full.q_target)
    if full.s is not None and b is not None:
        assert full.s_target is not None
        gram = gram + square(b, _row_dots(full.s, full.s))
        gram = gram + cross(a, b, _row_dots(full.q, full.s)) + cross(b, d, full.s_target)
    return gram


def _row_dots(x: Tensor, y: Tensor) -> Tensor:
    """``Σ_j x[r, j] y[r, j]`` per row; a square is one fused reduction (no ``[n, V]`` temporary)."""
    if x is y:
        return torch.linalg.vector_norm(x, dim=-1).square()
    return (x * y).sum(-1)


@dataclass(frozen=True)
class MonitorValues:
    """Host values of a monitored step: per term its norm and (when defined) its cosine to the total."""

    norms: dict[str, float]
    cosines: dict[str, float]
    total_norm: float
    neg_pair_frac: float | None


def monitor_values(host: Mapping[str, float]) -> MonitorValues | None:
    """The monitor's values from the host statistics (None: no Gram entry, or a non-finite one)."""
    entries: dict[tuple[str, str], float] = {}
    names: list[str] = []
    for key, value in host.items():
        if not key.startswith(GRAM_PREFIX):
            continue
        a, b = key[len(GRAM_PREFIX) :].split(":")
        entries[(a, b)] = entries[(b, a)] = float(value)
        for name in (a, b):
            if name not in names:
                names.append(name)
    if not entries or not all(math.isfinite(v) for v in entries.values()):
        return None
    norms = {name: math.sqrt(max(entries[(name, name)], 0.0)) for name in names}
    to_total = {name: sum(entries[(name, other)] for other in names) for name in names}
    total_sq = max(sum(to_total.values()), 0.0)
    total = math.sqrt(total_sq)
    cosines = {}
    for name in names:
        if norms[name] > 0 and total > 0:
            cosines[name] = max(-1.0, min(1.0, to_total[name] / (norms[name] * total)))
    active = [name for name in names if norms[name] > 0]
    pairs = [(x, y) for i, x in enumerate(active) for y in active[i + 1 :]]
    frac = None
    if pairs:
        frac = sum(1 for x, y in pairs if entries[(x, y)] < 0) / len(pairs)
    return MonitorValues(norms, cosines, total, frac)
