"""Host-side reduction helpers for the sufficient statistics, plus a sync-free sorted quantile."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def safe_div(num: float, den: float, default: float = 0.0) -> float:
    """``num / den``, or ``default`` when ``den == 0``."""
    return num / den if den else default


def stats_to_host(stats: Mapping[str, Tensor]) -> dict[str, float]:
    """Move a dict of 0-d tensors to the host in ONE transfer (one device sync)."""
    if not stats:
        return {}
    values = torch.stack([v.reshape(()).to(torch.float32) for v in stats.values()]).tolist()
    return dict(zip(stats.keys(), values, strict=True))


def padded_quantile(values: Tensor, count: Tensor, q: float) -> Tensor:
    """``torch.quantile(valid, q)`` (linear interpolation) without a host sync.

    ``values`` is 1-D and holds the ``count`` valid entries, the rest being ``+inf`` (they sort last);
    ``count`` is a 0-d device tensor. Returns a 0-d float32 tensor, 0 when ``count == 0``.
    """
    if values.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=values.device)
    ordered = values.to(torch.float32).sort().values
    ranks = (count.to(torch.float32) - 1).clamp(min=0) * q
    below = ranks.to(torch.long).reshape(1)
    above = ranks.ceil().to(torch.long).reshape(1)
    low = ordered.gather(0, below).reshape(())
    high = ordered.gather(0, above).reshape(())
    value = torch.lerp(low, high, ranks - below.reshape(()).to(torch.float32))
    return torch.where(count > 0, value, 0.0)
