"""The benchmark's packed row and its four step variants (base CE, stack with the coord loss on or
off, metrics only), each a full step: forward, backward and the one host transfer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from coordexp.functional import (
    IGNORE_INDEX,
    TYPE_COORD,
    TYPE_DESC,
    TYPE_FORMAT,
    TYPE_IGNORE,
    CoordLossConfig,
    CoordSlice,
    coord_loss,
    next_token_targets,
    next_token_types,
    stage1_stats,
    stats_to_host,
)

COORD_BINS = 1000


# --------------------------------------------------------------------------------------------- batch


@dataclass
class Batch:
    logits: Tensor
    """``[L, V]``, row ``i`` scores ``targets[i]``"""
    targets: Tensor
    types: Tensor
    coord: CoordSlice
    samples: int
    supervised_frac: float
    coord_frac: float


def build_packed_batch(
    length: int, vocab: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> Batch:
    """One packed row of ``length`` tokens: samples of 160..640 tokens, each ~21% prompt (ignored) and
    an answer of JSON-like objects ``3 format, 2-3 desc, 4 coord, 2 format`` (~35% coord)."""
    if vocab <= COORD_BINS + 16:
        raise ValueError(f"vocab must exceed {COORD_BINS + 16} (the coord block sits at its end)")
    gen = torch.Generator().manual_seed(seed)
    start = vocab - COORD_BINS
    labels: list[int] = []
    types: list[int] = []
    samples = 0

    def rand(hi: int) -> int:
        return int(torch.randint(0, hi, (1,), generator=gen))

    while len(labels) < length:
        samples += 1
        size = 160 + rand(481)
        prompt = round(0.21 * size)
        labels += [IGNORE_INDEX] * prompt
        types += [TYPE_IGNORE] * prompt
        answer: list[tuple[int, int]] = []
        while len(answer) < size - prompt:
            answer += [(TYPE_FORMAT, rand(start)) for _ in range(3)]
            answer += [(TYPE_DESC, rand(start)) for _ in range(2 + rand(2))]
            answer += [(TYPE_COORD, start + rand(COORD_BINS)) for _ in range(4)]
            answer += [(TYPE_FORMAT, rand(start)) for _ in range(2)]
        answer = answer[: size - prompt]
        labels += [tok for _, tok in answer]
        types += [typ for typ, _ in answer]
    label_t = torch.tensor(labels[:length]).unsqueeze(0)
    type_t = torch.tensor(types[:length]).unsqueeze(0)
    targets = next_token_targets(label_t)
    shifted_types = next_token_types(type_t)
    logits = torch.randn(length, vocab, generator=gen) * 2.0
    sup = targets != IGNORE_INDEX
    boost = torch.where(sup & (torch.rand(length, generator=gen) < 0.6), 6.0, 0.0)
    logits.scatter_add_(1, targets.clamp(min=0).unsqueeze(1), boost.unsqueeze(1))
    n_sup = int(sup.sum())
    n_coord = int((sup & (targets >= start)).sum())
    return Batch(
        logits=logits.to(device=device, dtype=dtype),
        targets=targets.to(device),
        types=shifted_types.to(device),
        coord=CoordSlice.from_ids(range(start, vocab), device=device),
        samples=samples,
        supervised_frac=n_sup / length,
        coord_frac=n_coord / max(n_sup, 1),
    )


# ------------------------------------------------------------------------------------------ variants

Step = Callable[[], dict[str, float]]


def make_steps(batch: Batch, cfg: CoordLossConfig, chunk_size: int) -> dict[str, Step]:
    """One callable per variant; each is a full step (forward, backward, the one host transfer)."""
    logits, targets, types, coord = batch.logits, batch.targets, batch.types, batch.coord

    def leaf() -> Tensor:
        return logits.detach().requires_grad_(True)

    def base() -> dict[str, float]:
        x = leaf()
        F.cross_entropy(x, targets, ignore_index=IGNORE_INDEX).backward()
        return {}

    def stack_on() -> dict[str, float]:
        x = leaf()
        loss, stats = coord_loss(
            x, targets, coord, cfg, base_ce=True, types=types, top5=True, mass=True, chunk_size=chunk_size
        )
        loss.backward()
        return stats_to_host({**stats, "loss": loss.detach()})

    def metric_stats() -> dict[str, Tensor]:
        return stage1_stats(
            logits,
            targets,
            coord=coord,
            types=types,
            top5=True,
            mass=True,
            coord_cfg=cfg,
            chunk_size=chunk_size,
        )

    def stack_off() -> dict[str, float]:
        x = leaf()
        loss = F.cross_entropy(x, targets, ignore_index=IGNORE_INDEX)
        loss.backward()
        return stats_to_host({**metric_stats(), "loss": loss.detach()})

    def metrics() -> dict[str, float]:
        return stats_to_host(metric_stats())

    return {"base": base, "stack_on": stack_on, "stack_off": stack_off, "metrics": metrics}
