"""Toy logits / targets / types for the functional tests (V = 1200, 1000 coord bins)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

VOCAB = 1200
BINS = 1000
START = 100


def coord_ids(layout: str, vocab: int = VOCAB, bins: int = BINS, start: int = START) -> list[int]:
    """``consecutive``: ``start .. start + bins - 1``; ``permuted``: a fixed scattered, shuffled id set."""
    if layout == "consecutive":
        return list(range(start, start + bins))
    gen = torch.Generator().manual_seed(1234)
    return torch.randperm(vocab, generator=gen)[:bins].tolist()


@dataclass
class Batch:
    logits: Tensor
    targets: Tensor
    types: Tensor
    ids: list[int]


def make_batch(
    n: int,
    ids: list[int],
    *,
    seed: int = 0,
    vocab: int = VOCAB,
    coord_frac: float = 0.45,
    ignore_frac: float = 0.2,
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """Random logits with enough structure for hits, near misses and flips in every bucket.

    Types follow the targets (coord ids -> COORD, others DESC/FORMAT) except for a few untyped (-1) and
    a few deliberately inconsistent positions.
    """
    gen = torch.Generator().manual_seed(seed)
    id_t = torch.tensor(ids)
    non_coord = torch.tensor(sorted(set(range(vocab)) - set(ids)))
    u = torch.rand(n, generator=gen)
    is_coord = u < coord_frac
    coord_pick = id_t[torch.randint(0, len(ids), (n,), generator=gen)]
    text_pick = non_coord[torch.randint(0, len(non_coord), (n,), generator=gen)]
    targets = torch.where(is_coord, coord_pick, text_pick)
    targets[torch.rand(n, generator=gen) < ignore_frac] = -100
    logits = torch.randn(n, vocab, generator=gen) * 2.0
    for i in range(n):
        t = int(targets[i])
        r = float(torch.rand((), generator=gen))
        if t >= 0 and r < 0.5:
            logits[i, t] += 6.0 * r + 2.0  # a top-1 or top-5 hit
        if t in set(ids) and r > 0.3:
            b = ids.index(t)
            near = ids[min(len(ids) - 1, b + int(r * 6))]
            logits[i, near] += 7.0  # a nearby bin wins
        if t >= 0 and t not in set(ids) and r > 0.8:
            logits[i, ids[int(r * 997) % len(ids)]] += 12.0  # text slot predicted as coord
    types = torch.where(is_coord, 2, torch.where(torch.rand(n, generator=gen) < 0.5, 1, 3))
    types[torch.rand(n, generator=gen) < 0.1] = -1
    flip = torch.rand(n, generator=gen) < 0.05
    types[flip] = 3
    types[targets == -100] = -1
    return Batch(logits.to(dtype), targets, types.long(), ids)
