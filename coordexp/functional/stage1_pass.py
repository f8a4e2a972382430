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
  one preallocated tensor (see :mod:`coordexp.functional.losses`);
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

Layout: :mod:`~coordexp.functional.pass_spec` says what a pass computes and where it reads,
:mod:`~coordexp.functional.chunk_stats` computes one chunk; this module runs the chunks and sums them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from coordexp.functional.chunk_stats import ChunkStats, Workspace
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.pass_spec import (
    DEFAULT_CHUNK_SIZE,
    ChunkSource,
    GradSpec,
    PassOptions,
    PassResult,
    PassSpec,
    pass_spec,
    tensor_source,
    validate_inputs,
)
from coordexp.functional.reduce import padded_quantile
from coordexp.functional.stat_keys import STAT_KEYS
from coordexp.functional.targets import IGNORE_INDEX
from coordexp.generated.models.config import CoordSoftCEW1Config

__all__ = [
    "CPU_CHUNK_ELEMENTS",
    "DEFAULT_CHUNK_SIZE",
    "ChunkSource",
    "GradSpec",
    "PassResult",
    "PassSpec",
    "chunk_rows",
    "process_chunk",
    "run_stage1_pass",
    "stage1_stats",
    "tensor_source",
    "validate_inputs",
]

CPU_CHUNK_ELEMENTS = 1 << 21
"""On CPU a chunk holds at most this many logits (8 MiB in fp32), so its scratch buffers stay in cache."""


def chunk_rows(vocab: int, chunk_size: int, device: torch.device) -> int:
    """Rows per chunk: ``chunk_size``, capped on CPU so a chunk stays cache-sized (see the docstring)."""
    if device.type == "cpu":
        return max(1, min(chunk_size, CPU_CHUNK_ELEMENTS // max(vocab, 1)))
    return chunk_size


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


def process_chunk(
    spec: PassSpec,
    ws: Workspace,
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
    chunk = ChunkStats(spec, ws, grad, grad_rows).run(x, tgt, typ, keep)
    return chunk.cols, chunk.absmax, chunk.err, chunk.pred


def _add_coord_extra(spec: PassSpec, grad_rows: Tensor, extra: Tensor) -> None:
    """Add ``extra`` ``[size, K]`` to the coord columns of the chunk's gradient rows."""
    coord = spec.coord
    if coord is None:
        raise ValueError("a coord-column gradient needs the coord slice")
    if coord.start is not None:
        coord.take(grad_rows).add_(extra)
    else:
        grad_rows.index_add_(-1, coord.ids, extra.to(grad_rows.dtype))


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
    rows = source.rows or chunk_rows(vocab, spec.chunk_size, device)
    ws = Workspace(spec, source, rows)
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
        if grad is not None and grad.monitor is not None:
            grad.monitor.at(start, size)
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
        if grad is not None and grad_rows is not None and grad.coord_extra is not None:
            _add_coord_extra(spec, grad_rows, grad.coord_extra.narrow(0, start, size))
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
    if grad is not None and grad.monitor is not None:
        stats.update(grad.monitor.stats())
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
    coord_cfg: CoordSoftCEW1Config | None = None,
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
    options = PassOptions(top5=top5, mass=mass, mass_max_tokens=mass_max_tokens, chunk_size=chunk_size)
    spec = pass_spec(
        coord, coord_cfg, vocab=logits.shape[-1], device=logits.device, options=options, base_ce=base_ce
    )
    return run_stage1_pass(logits, targets, types, spec).stats
