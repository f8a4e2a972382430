"""One fused, chunked, sync-free pass over the logits that yields every Stage-1 statistic.

The pass walks the rows of ``logits`` ``[N, V]`` in fixed-size chunks (at most ``chunk_size`` rows; on
CPU also at most :data:`CPU_CHUNK_ELEMENTS` logits, so the chunk's fp32 scratch stays in cache; sizes known
on the host), reuses a few fp32 scratch buffers for every chunk and shares the work between the metrics:

- one ``topk(5)`` per chunk gives the argmax (index 0), the top-5 membership and the raw row max;
- the instability statistics use float-only passes (``|x|``, ``|x| < inf`` as 1.0 / 0.0, ``amax``):
  boolean reductions and masked broadcasts are several times slower on CPU;
- ONE full-vocab fp32 softmax per chunk serves every ``logsumexp`` (``lse = max + log Σ exp(u - max)``
  with ``Σ = 1 / max(softmax)``): the base CE, the coord-mass monitors, the gate (tempered rows divided
  by ``T`` before it) and, with ``grad``, the full-vocab gradient, which is written chunk by chunk into
  one preallocated tensor (see :mod:`coordexp.functional.coord_loss`);
- every statistic is a masked per-row column; a chunk's columns are summed in ONE reduction into a
  device accumulator. No ``.item()``, boolean indexing, ``nonzero`` or host copy is used.

Row semantics. Rows whose target is a coord id ("coord rows") are sanitised (NaN -> 0, ±inf -> ±1e4,
clamped to ±1e4) before the full-vocab ``logsumexp``, exactly as the coord loss sees them; other rows
are used raw (as the base CE sees them). The coord-vocab mass of a row is
``exp(lse(coord logits) - lse(all logits))`` at T = 1 on those row values, and counts as 0 where it is
not finite (non-finite logits in a non-coord row).

GT coord vs non-coord (``n_noncoord``, flips, mass buckets): a supervised position with a token type
(!= -1) is decided by its type (``COORD`` or not); an untyped one by looking its target up in the coord
ids. For a batch that is fully typed (or fully untyped) this is "types when present, else ids".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from coordexp.functional.coord_config import CoordLossConfig
from coordexp.functional.coord_math import (
    SANITIZE_LIMIT,
    CoordTerms,
    coord_terms,
    coord_terms_grad,
    sanitize_logits,
    sanitizer_passes_grad,
)
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.reduce import padded_quantile
from coordexp.functional.stat_keys import STAT_KEYS
from coordexp.functional.targets import IGNORE_INDEX, TYPE_COORD, TYPE_DESC, TYPE_FORMAT, TYPE_IGNORE

DEFAULT_CHUNK_SIZE = 2048
CPU_CHUNK_ELEMENTS = 1 << 21
"""On CPU a chunk holds at most this many logits (8 MiB in fp32), so its scratch buffers stay in cache."""
_FLOAT_MAX = torch.finfo(torch.float32).max
_TYPE_NAMES = (("desc", TYPE_DESC), ("format", TYPE_FORMAT), ("coord", TYPE_COORD))


@dataclass(frozen=True)
class PassSpec:
    """What one pass computes. Host-side booleans only: the work done never depends on the data."""

    coord: CoordSlice | None = None
    coord_cfg: CoordLossConfig | None = None
    top5: bool = True
    mass: bool = False
    mass_max_tokens: int = 0
    base_ce: bool = False
    grad: bool = False
    """also write ``d loss / d logits`` of the coord loss (+ base CE) chunk by chunk (see ``GradSpec``)"""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    base_all: bool = False
    """the base CE over EVERY supervised target on raw rows (the coord loss is off): no row is sanitised
    in the full-vocab softmax, the coord terms are diagnostics only (never in the gradient); needs no
    coord slice"""

    @property
    def diag(self) -> bool:
        return self.coord is not None and self.coord_cfg is not None

    @property
    def gate(self) -> bool:
        return self.diag and self.coord_cfg is not None and self.coord_cfg.gate_enabled

    @property
    def temperature(self) -> float:
        return 1.0 if self.coord_cfg is None else float(self.coord_cfg.temperature)

    @property
    def do_mass(self) -> bool:
        return self.mass and self.coord is not None

    @property
    def do_base(self) -> bool:
        return (self.base_ce and self.coord is not None) or self.base_all

    @property
    def need_full(self) -> bool:
        """Whether the full-vocab softmax pass is needed (anything beyond token stats and the coord slice)."""
        return self.do_mass or self.do_base or self.gate

    @property
    def tempered(self) -> bool:
        """Whether the gate needs a ``1 / T`` tempered full-vocab ``logsumexp`` of the coord rows."""
        return self.gate and self.temperature != 1.0

    def chunk_rows(self, vocab: int, device: torch.device) -> int:
        """Rows per chunk: ``chunk_size``, capped on CPU so a chunk stays cache-sized (see the docstring)."""
        if device.type == "cpu":
            return max(1, min(self.chunk_size, CPU_CHUNK_ELEMENTS // max(vocab, 1)))
        return self.chunk_size


@dataclass(frozen=True)
class GradSpec:
    """Where and how the pass writes the gradient: ``out`` shaped like the logits; coord-term rows are
    scaled by ``coord_scale`` (``1 / coord_denominator``), base-CE rows by ``base_scale``."""

    out: Tensor
    coord_scale: Tensor
    base_scale: Tensor


@dataclass(frozen=True)
class PassResult:
    stats: dict[str, Tensor]
    """every key of :data:`STAT_KEYS`, 0-d float32"""


def validate_inputs(logits: Tensor, targets: Tensor, types: Tensor | None, chunk_size: int) -> None:
    """Host-side shape / dtype checks (no device sync)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be [N={logits.shape[0]}], got shape {tuple(targets.shape)}")
    if targets.dtype != torch.long:
        raise TypeError(f"targets must be int64, got {targets.dtype}")
    if types is not None and (types.shape != targets.shape or types.dtype != torch.long):
        raise ValueError("types must be an int64 tensor shaped like targets")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _mass_keep(targets: Tensor, max_tokens: int) -> Tensor:
    """Deterministic strided subsample of at most ``max_tokens`` supervised positions (all if <= 0).

    ``rank = cumsum(supervised) - 1``, ``stride = ceil(n_sup / max_tokens)``, keep ``rank % stride == 0``.
    """
    sup = targets != IGNORE_INDEX
    if max_tokens <= 0:
        return sup
    rank = sup.to(torch.long).cumsum(0) - 1
    stride = torch.div(sup.sum() + (max_tokens - 1), max_tokens, rounding_mode="floor").clamp(min=1)
    return sup & (torch.remainder(rank, stride) == 0)


class _Workspace:
    """fp32 ``[rows, V]`` scratch buffers, allocated once per pass and reused by every chunk.

    ``a``: ``|x|`` (instability), later the softmax; ``c``: finite flags, later the gradient mask;
    ``u``: the sanitised row values; ``xf``: the fp32 upcast of non-fp32 logits.
    """

    def __init__(self, spec: PassSpec, source: ChunkSource, rows: int) -> None:
        shape = (min(rows, source.n_rows), source.vocab)

        def make(needed: bool) -> Tensor | None:
            return torch.empty(shape, dtype=torch.float32, device=source.device) if needed else None

        self.xf = make(source.dtype != torch.float32)
        self.a = make(True)
        self.c = make(True)
        self.u = make(spec.need_full)
        # base_all keeps the shared softmax untempered (the CE needs it): the gate's tempered rows go here
        self.t = make(spec.base_all and spec.tempered)

    @staticmethod
    def take(buf: Tensor | None, size: int) -> Tensor:
        assert buf is not None
        return buf.narrow(0, 0, size)


class _Chunk:
    """Statistics of one chunk of rows; fills ``cols`` (per-row float columns keyed by stat name) and,
    with ``grad``, writes the chunk's rows of the gradient."""

    def __init__(
        self,
        spec: PassSpec,
        ws: _Workspace,
        x: Tensor,
        tgt: Tensor,
        typ: Tensor | None,
        keep: Tensor | None,
        grad: GradSpec | None,
        grad_rows: Tensor | None,
    ):
        self.spec = spec
        self.ws = ws
        self.size = x.shape[0]
        self.cols: dict[str, Tensor] = {}
        self.err: Tensor | None = None
        self.grad = grad
        self.grad_rows = grad_rows
        self.tgt = tgt
        sup = tgt != IGNORE_INDEX
        self._token_stats(x, tgt, typ, sup)
        xf = x if x.dtype == torch.float32 else _Workspace.take(ws.xf, self.size).copy_(x)
        self._instability(xf, sup)
        if spec.coord is not None:
            self._coord_stats(spec.coord, x, xf, tgt, sup, keep)
        elif spec.base_all:
            self._full_vocab(None, x, xf, tgt, sup, None, sup)

    def put(self, name: str, mask: Tensor, value: Tensor | None = None) -> None:
        self.cols[name] = mask if value is None else torch.where(mask, value, 0.0)

    def _token_stats(self, x: Tensor, tgt: Tensor, typ: Tensor | None, sup: Tensor) -> None:
        spec = self.spec
        in5: Tensor | None = None
        if spec.top5:
            top = x.topk(min(5, x.shape[-1]), dim=-1, sorted=True).indices
            pred = top[:, 0]
            in5 = sup & (top == tgt.unsqueeze(-1)).any(-1)
        else:
            pred = x.argmax(-1)
        hit1 = sup & (pred == tgt)
        self.sup, self.pred, self.hit1, self.in5 = sup, pred, hit1, in5
        self.put("n_sup", sup)
        self.put("n_top1", hit1)
        if in5 is not None:
            self.put("n_top5", in5)
        if spec.coord is not None:
            self.tgt_coord, self.bins = spec.coord.lookup(tgt)
            self.pred_coord = spec.coord.lookup(pred)[0]
        else:
            self.tgt_coord = torch.zeros_like(sup)
            self.bins = torch.zeros_like(tgt)
            self.pred_coord = torch.zeros_like(sup)
        self.coord_row = sup & self.tgt_coord
        # rows whose full-vocab softmax sees the coord-term sanitiser (none when the CE covers them raw)
        self.sanitised_row = torch.zeros_like(sup) if spec.base_all else self.coord_row
        self.type_masks: dict[str, Tensor] = {}
        if typ is not None:
            typed = typ != TYPE_IGNORE
            gt_coord = sup & torch.where(typed, typ == TYPE_COORD, self.tgt_coord)
            self.put("n_typed", sup & typed)
            for name, code in _TYPE_NAMES:
                mask = sup & (typ == code)
                self.type_masks[name] = mask
                self.put(f"n_type_{name}", mask)
                self.put(f"n_type_{name}_top1", mask & hit1)
                if in5 is not None:
                    self.put(f"n_type_{name}_top5", mask & in5)
        else:
            gt_coord = self.coord_row
        self.gt_coord = gt_coord
        self.noncoord = sup & ~gt_coord
        self.put("n_noncoord", self.noncoord)
        self.put("n_noncoord_top1", self.noncoord & hit1)

    def _instability(self, xf: Tensor, sup: Tensor) -> None:
        """Non-finite count and finite ``max |x|`` with float ops only (bool reductions are slow on CPU).

        With the full-vocab gradient, also the sanitiser's gradient mask (``c``): 1 where the gradient
        flows (coord rows: ``|x| <= 1e4``; other rows: not NaN), 0 elsewhere.
        """
        magnitude = torch.abs(xf, out=_Workspace.take(self.ws.a, self.size))
        finite = torch.lt(magnitude, math.inf, out=_Workspace.take(self.ws.c, self.size))
        nonfinite = xf.shape[-1] - finite.sum(-1)
        self.put("n_nonfinite_logits", sup, nonfinite)
        self.grad_mask: Tensor | None = None
        if self.grad is not None and self.spec.need_full:
            limit = torch.where(self.sanitised_row, SANITIZE_LIMIT, math.inf).unsqueeze(-1)
            self.grad_mask = torch.le(magnitude, limit, out=finite)
        absmax = magnitude.nan_to_num_(nan=0.0, posinf=0.0).amax(-1)
        self.absmax = torch.where(sup, absmax, 0.0).amax()

    def _sanitised(self, xf: Tensor) -> Tensor:
        """Coord rows sanitised (NaN -> 0, clamp to ±1e4), other rows NaN -> 0 and ±inf -> ±float max.

        Every value is finite, so the softmax of any row is; the raw semantics of the non-coord rows
        (``logsumexp`` NaN / ±inf, as ``torch.logsumexp`` of the raw row) are restored per row.
        """
        u = torch.nan_to_num(xf, nan=0.0, out=_Workspace.take(self.ws.u, self.size))
        limit = torch.where(self.sanitised_row, SANITIZE_LIMIT, _FLOAT_MAX).unsqueeze(-1)
        torch.minimum(u, limit, out=u)
        return torch.maximum(u, -limit, out=u)

    def _row_lse(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(softmax(u), logsumexp(u), fix)`` per row from ONE softmax kernel (no separate exp pass).

        ``s = Σ exp(u - max) = 1 / max(softmax)``, ``lse = log(s) + max`` (the order ``torch.logsumexp``
        uses); ``fix = exp(log(s) - (lse - max))`` turns ``softmax`` into ``exp(u - lse)``, i.e. the
        softmax as autograd of ``logsumexp`` sees it, with the rounding of ``lse`` (which is up to ~1e-3
        relative at ``|u| ~ 1e4``). The softmax goes into the ``a`` buffer (``|x|`` is no longer needed).
        """
        top = u.amax(-1)
        probs = torch.softmax(u, dim=-1, out=_Workspace.take(self.ws.a, self.size))
        log_s = probs.amax(-1).log().neg_()
        lse = log_s + top
        return probs, lse, torch.exp(log_s - (lse - top))

    def _coord_stats(
        self, coord: CoordSlice, x: Tensor, xf: Tensor, tgt: Tensor, sup: Tensor, keep: Tensor | None
    ) -> None:
        spec = self.spec
        pred_coord = self.pred_coord
        self.put("n_gt_coord", self.gt_coord)
        self.put("n_flip_coord_to_noncoord", self.gt_coord & ~pred_coord)
        self.put("n_flip_text_to_coord", self.noncoord & pred_coord)
        if self.type_masks:
            self.put("n_flip_format_to_coord", self.type_masks["format"] & pred_coord)
            self.put("n_flip_desc_to_coord", self.type_masks["desc"] & pred_coord)
        noncoord_row = sup & ~self.tgt_coord
        self.put("n_base", noncoord_row)
        if not spec.need_full:
            if spec.diag and spec.coord_cfg is not None:
                raw = coord.take(x).to(torch.float32)
                terms = coord_terms(sanitize_logits(raw), self.bins, spec.coord_cfg)
                self._coord_diag(spec.coord_cfg, terms, None)
                self._write_coord_only_grad(coord, spec.coord_cfg, x, terms)
            return
        self._full_vocab(coord, x, xf, tgt, sup, keep, sup if spec.base_all else noncoord_row)

    def _full_vocab(
        self,
        coord: CoordSlice | None,
        x: Tensor,
        xf: Tensor,
        tgt: Tensor,
        sup: Tensor,
        keep: Tensor | None,
        base_row: Tensor,
    ) -> None:
        """The shared full-vocab softmax: base CE, coord-mass, gate and, with ``grad``, the gradient."""
        spec = self.spec
        u = self._sanitised(xf)
        # the raw row max (NaN if the row has a NaN, as topk / argmax rank NaN first): no extra pass
        raw_top = x.gather(-1, self.pred.unsqueeze(-1)).squeeze(-1).to(torch.float32)
        full_terms: CoordTerms | None = None
        if coord is not None and spec.diag and spec.coord_cfg is not None:
            full_terms = coord_terms(sanitize_logits(coord.take(u)), self.bins, spec.coord_cfg)
        lse_c: Tensor | None = None
        if coord is not None and spec.do_mass:
            lse_c = torch.logsumexp(coord.take(u), dim=-1)
            # a raw row of -inf only has a -inf coord lse (its mass is then NaN -> 0), not ~-float max
            lse_c = torch.where(~self.sanitised_row & (raw_top == -math.inf), -math.inf, lse_c)
        lse1_coord: Tensor | None = None
        lse_gate: Tensor | None = None
        if spec.tempered and spec.base_all:
            tempered = torch.div(u, spec.temperature, out=_Workspace.take(self.ws.t, self.size))
            lse_gate = torch.logsumexp(tempered, dim=-1)
        elif spec.tempered:
            if spec.do_mass:
                lse1_coord = torch.logsumexp(u, dim=-1)
            u.div_(torch.where(self.coord_row, spec.temperature, 1.0).unsqueeze(-1))
        probs, lse_v, lse_fix = self._row_lse(u)
        # raw semantics of the non-coord rows, as torch.logsumexp of the raw row gives them
        raw_lse = torch.where(raw_top.isinf(), raw_top, lse_v)
        raw_lse = torch.where(raw_top.isnan(), math.nan, raw_lse)
        lse1 = torch.where(self.sanitised_row, lse_v, raw_lse)
        if lse1_coord is not None:
            lse1 = torch.where(self.coord_row, lse1_coord, lse1)
        if spec.do_mass and lse_c is not None and keep is not None:
            mass = torch.exp((lse_c - lse1).clamp_(max=0.0))
            mass = mass.nan_to_num_(nan=0.0)
            buckets = {"coord": self.gt_coord, "text": self.noncoord}
            if self.type_masks:
                buckets.update(format=self.type_masks["format"], desc=self.type_masks["desc"])
            for name, mask in buckets.items():
                self.put(f"mass_n_{name}", keep & mask)
                self.put(f"mass_sum_{name}", keep & mask, mass)
        gt_logit = xf.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        if spec.do_base:
            self.put("base_ce_sum", base_row, raw_lse - gt_logit)
        gate_raw: Tensor | None = None
        if full_terms is not None and spec.coord_cfg is not None:
            lse_t = (lse_v if lse_gate is None else lse_gate) if spec.gate else None
            gate_raw = self._coord_diag(spec.coord_cfg, full_terms, lse_t)
        if self.grad is not None:
            loss_terms = None if spec.base_all else full_terms  # base_all: coord terms are diagnostics
            self._write_full_grad(
                coord, spec.coord_cfg, x, probs, lse_fix, loss_terms, gate_raw, base_row, raw_top
            )

    def _coord_diag(self, cfg: CoordLossConfig, terms: CoordTerms, lse_t: Tensor | None) -> Tensor | None:
        """Coord-term statistics of the coord rows; returns the gate's ``lse_t - lse_z`` (with ``lse_t``)."""
        rows, bins = self.coord_row, self.bins
        self.put("n_coord", rows)
        self.put("soft_ce_sum", rows, terms.soft_ce)
        self.put("w1_sum", rows, terms.w1)
        self.put("ce_sum", rows, terms.ce)
        gate_raw: Tensor | None = None
        if lse_t is not None:
            gate_raw = lse_t - terms.lse_z
            self.put("gate_sum", rows, gate_raw.clamp(min=0.0))
            self.put("coord_vocab_mass_sum", rows, torch.exp(-gate_raw))
        k = terms.z.shape[-1]
        gt = bins.unsqueeze(-1)
        top = terms.z.topk(min(5, k), dim=-1).indices
        self.put("acc_top5_hits", rows & (top == gt).any(-1))
        z_gt = terms.z.gather(-1, gt).squeeze(-1)
        self.put("p_gt_sum", rows, terms.p.gather(-1, gt).squeeze(-1))
        self.put("margin_sum", rows, terms.z.amax(-1) - z_gt)
        grid = torch.arange(k, device=bins.device, dtype=torch.float32)
        bin_f = bins.to(torch.float32)
        err = ((terms.p * grid).sum(-1) - bin_f).abs()
        self.put("bin_abs_err_sum", rows, err)
        self.put("w1_to_delta_sum", rows, (terms.p * (grid - bin_f.unsqueeze(-1)).abs()).sum(-1))
        self.err = torch.where(rows, err, math.inf)
        return gate_raw

    def _coord_grad(
        self, cfg: CoordLossConfig, terms: CoordTerms, gate_raw: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(d loss / d coord logits [n, K], per-row gate scale)`` of the coord terms, scaled."""
        assert self.grad is not None
        rows = self.coord_row
        zero = torch.zeros((), device=rows.device)
        row_scale = torch.where(rows, self.grad.coord_scale, zero)
        gate_scale = zero.expand(self.size)
        if cfg.gate_enabled and gate_raw is not None:
            gate_scale = torch.where(rows & (gate_raw >= 0), self.grad.coord_scale * cfg.gate_weight, zero)
        return coord_terms_grad(terms, self.bins, cfg, row_scale, gate_scale), gate_scale

    def _write_coord_only_grad(
        self, coord: CoordSlice, cfg: CoordLossConfig, x: Tensor, terms: CoordTerms
    ) -> None:
        """No full-vocab term: the gradient is zero outside the coord columns."""
        if self.grad is None or self.grad_rows is None:
            return
        coord_grad, _ = self._coord_grad(cfg, terms, None)
        coord_grad.masked_fill_(~sanitizer_passes_grad(coord.take(x)), 0.0)
        out = self.grad_rows.zero_()
        if coord.start is not None:
            coord.take(out).copy_(coord_grad)
        else:
            out.index_copy_(-1, coord.ids, coord_grad.to(out.dtype))

    def _write_full_grad(
        self,
        coord: CoordSlice | None,
        cfg: CoordLossConfig | None,
        x: Tensor,
        probs: Tensor,
        lse_fix: Tensor,
        terms: CoordTerms | None,
        gate_raw: Tensor | None,
        base_row: Tensor,
        raw_top: Tensor,
    ) -> None:
        """``softmax * row coefficient`` (gate rows: ``gate_scale * fix / T``; base rows: ``base_scale``, NaN
        when the raw row has a NaN or a ±inf max, as cross-entropy gives), ``- base_scale`` at the target
        of base rows, plus the coord-slice gradient; zero where the coord-term sanitiser changed a logit."""
        assert self.grad is not None and self.grad_rows is not None and self.grad_mask is not None
        spec, out = self.spec, self.grad_rows
        zero = torch.zeros((), device=x.device)
        coord_grad: Tensor | None = None
        gate_scale = zero.expand(self.size)
        if terms is not None and cfg is not None:
            coord_grad, gate_scale = self._coord_grad(cfg, terms, gate_raw)
        base_on = base_row if spec.do_base else torch.zeros_like(base_row)
        base_coef = torch.where(base_on, self.grad.base_scale, zero)
        row_coef = gate_scale * lse_fix / spec.temperature + base_coef
        row_coef = torch.where(base_on & ~raw_top.isfinite(), math.nan, row_coef)
        mask = self.grad_mask.mul_(row_coef.unsqueeze(-1))
        work = out if out.dtype == torch.float32 else probs
        torch.mul(probs, mask, out=work)
        if spec.do_base:
            work.scatter_add_(-1, self.tgt.clamp(min=0).unsqueeze(-1), -base_coef.unsqueeze(-1))
        if coord_grad is not None and coord is not None:
            coord_grad.masked_fill_(~sanitizer_passes_grad(coord.take(x)), 0.0)
            if coord.start is not None:
                coord.take(work).add_(coord_grad)
            else:
                work.index_add_(-1, coord.ids, coord_grad)
        if work is not out:
            out.copy_(work)


def process_chunk(
    spec: PassSpec,
    ws: _Workspace,
    x: Tensor,
    tgt: Tensor,
    typ: Tensor | None,
    keep: Tensor | None,
    grad: GradSpec | None,
    grad_rows: Tensor | None,
) -> tuple[dict[str, Tensor], Tensor, Tensor | None, Tensor]:
    """One chunk: ``(per-row stat columns, max finite |logit| of its supervised rows, bin errors,
    per-row argmax)``.

    A module-level function so that it can be swapped for a compiled version (the benchmark's
    ``--compile``); the pass looks it up at every chunk.
    """
    chunk = _Chunk(spec, ws, x, tgt, typ, keep, grad, grad_rows)
    return chunk.cols, chunk.absmax, chunk.err, chunk.pred


@dataclass(frozen=True)
class ChunkSource:
    """Where the pass reads each chunk's logits and puts its gradient rows.

    By default (:func:`tensor_source`) the rows of a logits tensor and of ``GradSpec.out``;
    :mod:`coordexp.functional.linear_pass` computes each chunk from the hidden states and the output head
    instead (``read``), and turns each chunk's gradient rows into hidden-state and head gradients
    (``done``), so that the full logits never exist.
    """

    n_rows: int
    vocab: int
    dtype: torch.dtype
    device: torch.device
    read: Callable[[int, int], Tensor]
    """``(start, size) -> [size, V]`` logits of rows ``start .. start + size``"""
    grad_rows: Callable[[int, int], Tensor] | None = None
    """``(start, size) -> [size, V]`` where the pass writes those rows' gradient (with ``GradSpec``)"""
    done: Callable[[int, int, Tensor], None] | None = None
    """``(start, size, gradient rows)``: called after each chunk whose gradient rows were written"""
    preds: Tensor | None = None
    """``[n_rows]`` int64: filled with each row's argmax (ms-swift's token accuracy reads it)"""
    rows: int | None = None
    """rows per chunk (default :meth:`PassSpec.chunk_rows`)"""


def tensor_source(logits: Tensor, grad: GradSpec | None = None) -> ChunkSource:
    """The rows of ``logits`` ``[N, V]`` (and of ``grad.out``)."""
    return ChunkSource(
        n_rows=logits.shape[0],
        vocab=logits.shape[1],
        dtype=logits.dtype,
        device=logits.device,
        read=lambda start, size: logits.narrow(0, start, size),
        grad_rows=None if grad is None else (lambda start, size: grad.out.narrow(0, start, size)),
    )


def run_stage1_pass(
    logits: Tensor | ChunkSource,
    targets: Tensor,
    types: Tensor | None,
    spec: PassSpec,
    grad: GradSpec | None = None,
) -> PassResult:
    """Run the chunked pass (call under ``torch.no_grad()``); see the module docstring.

    ``logits``: a ``[N, V]`` tensor or a :class:`ChunkSource`. With ``grad`` (and ``spec.grad``), also
    write every row of the gradient (``grad.out``, or the source's ``grad_rows``).
    """
    source = logits if isinstance(logits, ChunkSource) else tensor_source(logits, grad)
    n_rows, vocab, device = source.n_rows, source.vocab, source.device
    rows = source.rows or spec.chunk_rows(vocab, device)
    ws = _Workspace(spec, source, rows)
    keep = _mass_keep(targets, spec.mass_max_tokens) if spec.do_mass else None
    err_buf = torch.full((n_rows,), math.inf, device=device) if spec.diag else None
    absmax = torch.zeros((), device=device)
    acc: Tensor | None = None
    acc_keys: list[str] = []
    n_counts = 0
    for start in range(0, n_rows, rows):
        size = min(rows, n_rows - start)
        x = source.read(start, size)
        grad_rows = None if grad is None or source.grad_rows is None else source.grad_rows(start, size)
        cols, chunk_absmax, err, pred = process_chunk(
            spec,
            ws,
            x,
            targets.narrow(0, start, size),
            None if types is None else types.narrow(0, start, size),
            None if keep is None else keep.narrow(0, start, size),
            grad,
            grad_rows,
        )
        if source.preds is not None:
            source.preds.narrow(0, start, size).copy_(pred)
        if source.done is not None and grad_rows is not None:
            source.done(start, size, grad_rows)
        if acc is None:  # counts (bool columns) first, then sums; the same keys for every chunk
            count_keys = [key for key, col in cols.items() if col.dtype == torch.bool]
            acc_keys = count_keys + [key for key in cols if key not in set(count_keys)]
            n_counts = len(count_keys)
        parts = []
        if n_counts:
            parts.append(torch.stack([cols[key] for key in acc_keys[:n_counts]]).sum(-1).to(torch.float32))
        if n_counts < len(acc_keys):
            parts.append(torch.stack([cols[key].to(torch.float32) for key in acc_keys[n_counts:]]).sum(-1))
        sums = torch.cat(parts)
        acc = sums if acc is None else acc + sums
        absmax = torch.maximum(absmax, chunk_absmax)
        if err_buf is not None and err is not None:
            err_buf.narrow(0, start, size).copy_(err)
    zero = torch.zeros((), device=device)
    found = dict(zip(acc_keys, acc.unbind(0), strict=True)) if acc is not None else {}
    found["max_abs_logit"] = absmax
    if err_buf is not None:
        found["bin_abs_err_p90"] = padded_quantile(err_buf, found.get("n_coord", zero), 0.9)
    packed = torch.stack([found.get(key, zero) for key in STAT_KEYS])
    stats = dict(zip(STAT_KEYS, packed.unbind(0), strict=True))
    return PassResult(stats)


@torch.no_grad()
def stage1_stats(
    logits: Tensor,
    targets: Tensor,
    *,
    coord: CoordSlice | None = None,
    types: Tensor | None = None,
    top5: bool = True,
    mass: bool = False,
    mass_max_tokens: int = 0,
    coord_cfg: CoordLossConfig | None = None,
    base_ce: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Tensor]:
    """Every Stage-1 sufficient statistic of ``logits`` ``[N, V]`` against ``targets`` ``[N]`` (sync-free).

    ``targets[i]`` is the label scored by ``logits[i]`` (-100 = ignored, see ``next_token_targets``);
    ``types`` ``[N]`` the shifted token types (-1 untyped). Returns the keys of :data:`STAT_KEYS`
    (0-d float32 tensors on the logits' device; 0 for anything off or empty). Token stats always;
    flips / ``n_base`` need ``coord``; mass sums need ``coord`` and ``mass`` (``mass_max_tokens > 0``
    subsamples every ``ceil(n_sup / mass_max_tokens)``-th supervised position); coord diagnostics need
    ``coord`` and ``coord_cfg``; ``base_ce_sum`` (``Σ lse(x) - x[gt]`` over supervised non-coord targets,
    raw logits) needs ``coord`` and ``base_ce``.
    """
    validate_inputs(logits, targets, types, chunk_size)
    if coord is not None:
        coord = coord.to(logits.device)
        coord.check_vocab(logits.shape[-1])
    spec = PassSpec(coord, coord_cfg, top5, mass, mass_max_tokens, base_ce, False, chunk_size)
    return run_stage1_pass(logits, targets, types, spec).stats
