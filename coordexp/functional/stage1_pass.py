"""One fused, chunked, sync-free pass over the logits that yields every Stage-1 statistic.

The pass walks the rows of ``logits`` ``[N, V]`` in fixed-size chunks (``chunk_size`` rows, sizes known
on the host), upcasts each chunk to fp32 once and shares the work between the metrics:

- one ``topk(5)`` per chunk gives the argmax (index 0) and the top-5 membership;
- one full-vocab fp32 ``logsumexp`` per chunk serves the base CE, the coord-mass monitors and, when
  ``temperature == 1``, the gate;
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
from dataclasses import dataclass

import torch
from torch import Tensor

from coordexp.functional.coord_config import CoordLossConfig
from coordexp.functional.coord_math import SANITIZE_LIMIT, coord_terms, sanitize_logits
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.reduce import padded_quantile
from coordexp.functional.stat_keys import STAT_KEYS
from coordexp.functional.targets import IGNORE_INDEX, TYPE_COORD, TYPE_DESC, TYPE_FORMAT, TYPE_IGNORE

DEFAULT_CHUNK_SIZE = 2048
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
    save_lse: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE

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
        return self.base_ce and self.coord is not None

    @property
    def need_lse1(self) -> bool:
        return self.do_mass or self.do_base or (self.gate and self.temperature == 1.0)

    @property
    def need_full(self) -> bool:
        """Whether the full fp32 chunk is needed (anything beyond token stats and the coord slice)."""
        return self.need_lse1 or self.gate


@dataclass(frozen=True)
class PassResult:
    stats: dict[str, Tensor]
    """every key of :data:`STAT_KEYS`, 0-d float32"""
    lse_rows: Tensor | None
    """per row ``logsumexp`` for the backward: T-tempered on coord rows (gate), T = 1 elsewhere"""


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


def sanitize_rows_(values: Tensor, rows: Tensor) -> Tensor:
    """In place on fp32 ``values`` ``[n, V]``: sanitise the rows where ``rows`` is True, keep the others."""
    values.masked_fill_(rows.unsqueeze(-1) & values.isnan(), 0.0)
    limit = torch.where(rows, SANITIZE_LIMIT, math.inf).unsqueeze(-1)
    return values.clamp_(min=-limit, max=limit)


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


class _Chunk:
    """Statistics of one chunk of rows; fills ``cols`` (per-row float columns keyed by stat name)."""

    def __init__(self, spec: PassSpec, x: Tensor, tgt: Tensor, typ: Tensor | None, keep: Tensor | None):
        self.spec = spec
        self.cols: dict[str, Tensor] = {}
        self.err: Tensor | None = None
        self.lse_rows: Tensor | None = None
        sup = tgt != IGNORE_INDEX
        self._token_stats(x, tgt, typ, sup)
        self._instability(x, sup)
        if spec.coord is not None:
            self._coord_stats(spec.coord, x, tgt, sup, keep)

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

    def _instability(self, x: Tensor, sup: Tensor) -> None:
        magnitude = x.abs()
        finite = magnitude < math.inf  # False for NaN and ±inf, in one comparison
        nonfinite = x.shape[-1] - finite.sum(-1)
        self.put("n_nonfinite_logits", sup, nonfinite.to(torch.float32))
        absmax = magnitude.masked_fill_(~finite, 0).amax(-1).to(torch.float32)
        self.absmax = torch.where(sup, absmax, 0.0).amax()

    def _coord_stats(
        self, coord: CoordSlice, x: Tensor, tgt: Tensor, sup: Tensor, keep: Tensor | None
    ) -> None:
        spec = self.spec
        pred_coord = self.pred_coord
        self.put("n_gt_coord", self.gt_coord)
        self.put("n_flip_coord_to_noncoord", self.gt_coord & ~pred_coord)
        self.put("n_flip_text_to_coord", self.noncoord & pred_coord)
        if self.type_masks:
            self.put("n_flip_format_to_coord", self.type_masks["format"] & pred_coord)
            self.put("n_flip_desc_to_coord", self.type_masks["desc"] & pred_coord)
        base_row = sup & ~self.tgt_coord
        self.put("n_base", base_row)

        u: Tensor | None = None
        lse1: Tensor | None = None
        if spec.need_full:
            u = sanitize_rows_(x.to(torch.float32, copy=True), self.coord_row)
            if spec.need_lse1:
                lse1 = torch.logsumexp(u, dim=-1)
        if spec.do_mass and u is not None and lse1 is not None and keep is not None:
            mass = torch.exp((torch.logsumexp(coord.take(u), dim=-1) - lse1).clamp_(max=0.0))
            mass = mass.nan_to_num_(nan=0.0)
            buckets = {"coord": self.gt_coord, "text": self.noncoord}
            if self.type_masks:
                buckets.update(format=self.type_masks["format"], desc=self.type_masks["desc"])
            for name, mask in buckets.items():
                self.put(f"mass_n_{name}", keep & mask)
                self.put(f"mass_sum_{name}", keep & mask, mass)
        if spec.do_base and u is not None and lse1 is not None:
            gt_logit = u.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            self.put("base_ce_sum", base_row, lse1 - gt_logit)
        if spec.diag and spec.coord_cfg is not None:
            self._coord_diag(coord, spec.coord_cfg, x, u, lse1)
        elif spec.save_lse and lse1 is not None:
            self.lse_rows = lse1

    def _coord_diag(
        self, coord: CoordSlice, cfg: CoordLossConfig, x: Tensor, u: Tensor | None, lse1: Tensor | None
    ) -> None:
        rows, bins = self.coord_row, self.bins
        raw = coord.take(u) if u is not None else coord.take(x).to(torch.float32)
        terms = coord_terms(sanitize_logits(raw), bins, cfg)
        self.put("n_coord", rows)
        self.put("soft_ce_sum", rows, terms.soft_ce)
        self.put("w1_sum", rows, terms.w1)
        self.put("ce_sum", rows, terms.ce)
        lse_t: Tensor | None = None
        if self.spec.gate and u is not None:
            if cfg.temperature == 1.0 and lse1 is not None:
                lse_t = lse1
            else:
                lse_t = torch.logsumexp(u / cfg.temperature, dim=-1)
            gate_raw = lse_t - terms.lse_z
            self.put("gate_sum", rows, gate_raw.clamp(min=0.0))
            self.put("coord_vocab_mass_sum", rows, torch.exp(-gate_raw))
        if self.spec.save_lse:
            if lse_t is not None and lse1 is not None:
                self.lse_rows = torch.where(rows, lse_t, lse1)
            else:
                self.lse_rows = lse_t if lse_t is not None else lse1
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


def run_stage1_pass(logits: Tensor, targets: Tensor, types: Tensor | None, spec: PassSpec) -> PassResult:
    """Run the chunked pass (call under ``torch.no_grad()``); see the module docstring."""
    n_rows = logits.shape[0]
    device = logits.device
    keep = _mass_keep(targets, spec.mass_max_tokens) if spec.do_mass else None
    err_buf = torch.full((n_rows,), math.inf, device=device) if spec.diag else None
    lse_buf = torch.zeros((n_rows,), device=device) if spec.save_lse else None
    absmax = torch.zeros((), device=device)
    acc: Tensor | None = None
    acc_keys: list[str] = []
    for start in range(0, n_rows, spec.chunk_size):
        size = min(spec.chunk_size, n_rows - start)
        chunk = _Chunk(
            spec,
            logits.narrow(0, start, size),
            targets.narrow(0, start, size),
            None if types is None else types.narrow(0, start, size),
            None if keep is None else keep.narrow(0, start, size),
        )
        if acc is None:
            acc_keys = list(chunk.cols)
        sums = torch.stack([chunk.cols[key].to(torch.float32) for key in acc_keys]).sum(-1)
        acc = sums if acc is None else acc + sums
        absmax = torch.maximum(absmax, chunk.absmax)
        if err_buf is not None and chunk.err is not None:
            err_buf.narrow(0, start, size).copy_(chunk.err)
        if lse_buf is not None and chunk.lse_rows is not None:
            lse_buf.narrow(0, start, size).copy_(chunk.lse_rows)
    zero = torch.zeros((), device=device)
    found = dict(zip(acc_keys, acc.unbind(0), strict=True)) if acc is not None else {}
    found["max_abs_logit"] = absmax
    if err_buf is not None:
        found["bin_abs_err_p90"] = padded_quantile(err_buf, found.get("n_coord", zero), 0.9)
    packed = torch.stack([found.get(key, zero) for key in STAT_KEYS])
    stats = dict(zip(STAT_KEYS, packed.unbind(0), strict=True))
    return PassResult(stats, lse_buf)


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
