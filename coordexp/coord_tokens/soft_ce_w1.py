"""Public facade of the coord-token loss ``coord_soft_ce_w1`` on ``[B, T, V]`` logits.

At every supervised next-token position whose label is a coord token of bin ``t`` (of ``K = 1000``
ordered bins), with the logits restricted to the coord ids in bin order, sanitised (NaN -> 0,
±inf -> ±1e4, clamp ±1e4) and divided by the temperature ``T`` (``z``), ``p = softmax(z)`` and the
Gaussian soft target ``q_t(k) ∝ exp(-0.5 ((k - t) / sigma)^2)`` (zero where ``|k - t| > truncate``):

- ``softCE = -Σ_k q_t(k) log p(k)``
- ``W1 = Σ_k |CDF_p(k) - CDF_q(k)| / K``
- ``CE = -log p(t)``
- ``gate = max(0, logsumexp(all logits / T) - logsumexp(z))`` (``-log`` of the coord-vocab mass)

Each term is averaged over the coord positions and weighted;
``loss = ce_weight CE + soft_ce_weight softCE + w1_weight W1 + gate_weight gate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from coordexp.functional.coord_config import CoordLossConfig
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.losses import coord_loss
from coordexp.functional.stage1_pass import DEFAULT_CHUNK_SIZE
from coordexp.functional.targets import next_token_targets
from coordexp.generated.models.config import CoordSoftCEW1Config

__all__ = ["CoordLossConfig", "CoordSoftCEW1Result", "coord_soft_ce_w1"]


@dataclass(frozen=True)
class CoordSoftCEW1Result:
    """Result of :func:`coord_soft_ce_w1`; every field is a 0-d float32 tensor on the logits' device."""

    loss: Tensor
    """differentiable ``soft_ce + w1 + ce + gate``"""
    soft_ce: Tensor
    """``soft_ce_weight * Σ softCE / denominator`` (detached)"""
    w1: Tensor
    """``w1_weight * Σ W1 / denominator``"""
    ce: Tensor
    """``ce_weight * Σ CE / denominator``"""
    gate: Tensor
    """``gate_weight * Σ gate / denominator``"""
    coord_tokens: Tensor
    """number of GT coord positions"""
    stats: Mapping[str, Tensor]
    """all sufficient statistics of the pass (see ``coordexp.functional.stat_keys``)"""


def _as_config(cfg: CoordSoftCEW1Config | Mapping[str, Any] | None) -> CoordSoftCEW1Config:
    if cfg is None:
        return CoordLossConfig()
    if isinstance(cfg, CoordSoftCEW1Config):  # the section model, as parsed
        return cfg
    return CoordLossConfig.from_mapping(cfg)


def _as_slice(coord_token_ids: CoordSlice | Sequence[int] | Tensor, logits: Tensor) -> CoordSlice:
    if isinstance(coord_token_ids, CoordSlice):
        return coord_token_ids.to(logits.device)
    return CoordSlice.from_ids(coord_token_ids, logits.device)


def coord_soft_ce_w1(
    logits: Tensor,
    labels: Tensor,
    coord_token_ids: CoordSlice | Sequence[int] | Tensor,
    *,
    cfg: CoordSoftCEW1Config | Mapping[str, Any] | None = None,
    coord_denominator: Tensor | float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> CoordSoftCEW1Result:
    """The coord loss of ``[B, T, V]`` logits against ``[B, T]`` labels (shifted here: ``logits[:, t]``
    scores ``labels[:, t + 1]``); see the module docstring for the formulas.

    ``coord_token_ids``: a :class:`CoordSlice` (preferred on the hot path) or the ids in bin order
    (validated on the host). ``coord_denominator`` replaces the number of coord positions (e.g. a
    count all-reduced across ranks). No coord positions: every term is 0 and the gradient is zero.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            "expected logits [B, T, V] and labels [B, T], "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    config = _as_config(cfg)
    coord = _as_slice(coord_token_ids, logits)
    flat = logits.reshape(-1, logits.shape[-1])
    loss, stats = coord_loss(
        flat,
        next_token_targets(labels),
        coord,
        config,
        coord_denominator=coord_denominator,
        chunk_size=chunk_size,
        top5=False,
    )
    den: Tensor | float
    if coord_denominator is None:
        den = stats["n_coord"].clamp(min=1.0)
    elif isinstance(coord_denominator, Tensor):
        den = coord_denominator.detach().to(device=logits.device, dtype=torch.float32)
    else:
        den = float(coord_denominator)
    return CoordSoftCEW1Result(
        loss=loss,
        soft_ce=config.soft_ce_weight * stats["soft_ce_sum"] / den,
        w1=config.w1_weight * stats["w1_sum"] / den,
        ce=config.ce_weight * stats["ce_sum"] / den,
        gate=config.gate_weight * stats["gate_sum"] / den,
        coord_tokens=stats["n_coord"],
        stats=stats,
    )
