"""Per-position math of the coord loss over the ``K`` ordered coord bins (row-wise, no reductions).

For a GT coord position with bin ``t``, sanitised coord logits ``zc`` (``[n, K]``) and temperature
``T``: ``z = zc / T``, ``p = softmax(z)`` and the Gaussian soft target
``q_t(k) ∝ exp(-0.5 ((k - t) / sigma)^2)`` (zero where ``|k - t| > truncate`` when set), normalised.

- softCE ``= -Σ_k q_t(k) log p(k)``;  ``∂/∂z = p - q``
- W1 ``= Σ_k |CDF_p(k) - CDF_q(k)| / K``;  with ``g_j = (1/K) Σ_{k>=j} sign(CDF_p(k) - CDF_q(k))``,
  ``∂/∂z = p * (g - Σ_j p_j g_j)``
- CE ``= -log p(t)``;  ``∂/∂z = p - onehot(t)``
- gate ``= max(0, logsumexp(all / T) - logsumexp(z))``; its coord-slice part is ``∂/∂z = -p``
  (the full-vocab part ``softmax(all / T)`` is added by the caller).

Gradients with respect to the coord logits are ``∂/∂z / T``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from coordexp.generated.models.config import CoordSoftCEW1Config

SANITIZE_LIMIT: Final = 1e4
"""Non-finite coord-term logits are replaced (NaN -> 0, ±inf -> ±limit) and all are clamped to ±limit."""


def sanitize_logits(x: Tensor) -> Tensor:
    """``clamp(nan_to_num(x, nan=0, posinf=1e4, neginf=-1e4), -1e4, 1e4)`` as a new tensor."""
    return torch.nan_to_num(x, nan=0.0, posinf=SANITIZE_LIMIT, neginf=-SANITIZE_LIMIT).clamp_(
        -SANITIZE_LIMIT, SANITIZE_LIMIT
    )


def sanitizer_passes_grad(x: Tensor) -> Tensor:
    """Where the sanitiser is the identity (finite and ``|x| <= 1e4``): the gradient flows only there."""
    return x.abs() <= SANITIZE_LIMIT


def gaussian_soft_targets(bins: Tensor, num_bins: int, sigma: float, truncate: int | None) -> Tensor:
    """``q[i, k] ∝ exp(-0.5 ((k - bins[i]) / sigma)^2)``, zero where ``|k - bins[i]| > truncate``.

    Rows sum to 1 (the centre bin always has weight 1 before normalising).
    """
    k = torch.arange(num_bins, device=bins.device, dtype=torch.float32)
    dist = k.unsqueeze(0) - bins.unsqueeze(1).to(torch.float32)
    q = torch.exp(-0.5 * (dist / sigma) ** 2)
    if truncate is not None:
        q = q.masked_fill(dist.abs() > truncate, 0.0)
    return q / q.sum(-1, keepdim=True)


@functools.lru_cache(maxsize=8)
def _soft_target_table(
    num_bins: int, sigma: float, truncate: int | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(q, cumsum(q))`` for every GT bin, ``[K, K]`` each, computed once per shape and device.

    The Gaussian's far tail makes ``exp`` take its slow underflow path (~15x a normal ``exp``), so the
    per-chunk rows are gathered from this table instead of being recomputed.
    """
    with torch.inference_mode(False), torch.no_grad():
        q = gaussian_soft_targets(torch.arange(num_bins, device=device), num_bins, sigma, truncate)
        return q, q.cumsum(-1)


def soft_target_rows(
    bins: Tensor, num_bins: int, sigma: float, truncate: int | None
) -> tuple[Tensor, Tensor]:
    """``(gaussian_soft_targets(bins, ...), its cumsum)`` gathered from a cached table (new tensors)."""
    q, q_cdf = _soft_target_table(num_bins, float(sigma), truncate, bins.device)
    return q.index_select(0, bins), q_cdf.index_select(0, bins)


def w1_distance(p: Tensor, q: Tensor) -> Tensor:
    """1-D Wasserstein-1 between distributions over ``K`` ordered bins: ``Σ_k |CDF_p(k) - CDF_q(k)| / K``."""
    return (p.cumsum(-1) - q.cumsum(-1)).abs().sum(-1) / p.shape[-1]


@dataclass(frozen=True)
class CoordTerms:
    """Per-row coord loss terms (unweighted) and the intermediates their gradients need."""

    z: Tensor
    """tempered coord logits ``[n, K]``"""
    logp: Tensor
    p: Tensor
    q: Tensor
    lse_z: Tensor
    """``logsumexp(z)`` per row ``[n]``"""
    cdf_gap: Tensor
    """``CDF_p - CDF_q`` ``[n, K]``"""
    soft_ce: Tensor
    w1: Tensor
    ce: Tensor


def coord_terms(coord_logits: Tensor, bins: Tensor, cfg: CoordSoftCEW1Config) -> CoordTerms:
    """softCE, W1 and CE per row from *sanitised* fp32 coord logits ``[n, K]`` and GT bins ``[n]``."""
    z = coord_logits / cfg.temperature
    lse_z = torch.logsumexp(z, dim=-1)
    logp = torch.log_softmax(z, dim=-1)  # not z - lse_z: that loses digits when |z| ~ 1e4
    p = logp.exp()
    q, q_cdf = soft_target_rows(bins, z.shape[-1], cfg.target_sigma, cfg.target_truncate)
    cdf_gap = p.cumsum(-1) - q_cdf
    soft_ce = -(q * logp).sum(-1)
    w1 = cdf_gap.abs().sum(-1) / z.shape[-1]
    ce = -logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
    return CoordTerms(z, logp, p, q, lse_z, cdf_gap, soft_ce, w1, ce)


def coord_terms_grad(
    terms: CoordTerms, bins: Tensor, cfg: CoordSoftCEW1Config, row_scale: Tensor, gate_scale: Tensor
) -> Tensor:
    """Gradient w.r.t. the (sanitised, untempered) coord logits of
    ``row_scale * (w_soft softCE + w_ce CE + w_w1 W1) - gate_scale * logsumexp(z)`` per row.

    ``gate_scale`` carries the gate's weight, activity and row scale; the ``1 / T`` of the temperature is
    applied here.
    """
    p = terms.p
    k = p.shape[-1]
    coef_p = row_scale * (cfg.soft_ce_weight + cfg.ce_weight) - gate_scale
    grad = p * coef_p.unsqueeze(-1)
    if cfg.soft_ce_weight != 0:
        grad = grad - (row_scale * cfg.soft_ce_weight).unsqueeze(-1) * terms.q
    if cfg.ce_weight != 0:
        grad = grad.scatter_add(-1, bins.unsqueeze(-1), -(row_scale * cfg.ce_weight).unsqueeze(-1))
    if cfg.w1_weight != 0:
        sign = torch.sign(terms.cdf_gap)
        g = (sign.sum(-1, keepdim=True) - sign.cumsum(-1) + sign) / k
        w1_grad = p * (g - (p * g).sum(-1, keepdim=True))
        grad = grad + (row_scale * cfg.w1_weight).unsqueeze(-1) * w1_grad
    return grad / cfg.temperature


def coord_terms_grad_parts(
    terms: CoordTerms, bins: Tensor, cfg: CoordSoftCEW1Config, row_scale: Tensor
) -> dict[str, Tensor]:
    """The parts of :func:`coord_terms_grad` without the gate, one per term with a non-zero weight:
    ``soft_ce``, ``w1``, ``ce`` (each ``row_scale * weight * ∂term/∂z / T``, ``[n, K]``)."""
    p = terms.p
    k = p.shape[-1]
    parts: dict[str, Tensor] = {}
    if cfg.soft_ce_weight != 0:
        parts["soft_ce"] = (p - terms.q) * (row_scale * cfg.soft_ce_weight).unsqueeze(-1)
    if cfg.w1_weight != 0:
        sign = torch.sign(terms.cdf_gap)
        g = (sign.sum(-1, keepdim=True) - sign.cumsum(-1) + sign) / k
        parts["w1"] = p * (g - (p * g).sum(-1, keepdim=True)) * (row_scale * cfg.w1_weight).unsqueeze(-1)
    if cfg.ce_weight != 0:
        onehot = torch.zeros_like(p).scatter_(-1, bins.unsqueeze(-1), 1.0)
        parts["ce"] = (p - onehot) * (row_scale * cfg.ce_weight).unsqueeze(-1)
    return {name: part / cfg.temperature for name, part in parts.items()}
