"""Plain-torch references (boolean indexing, syncs allowed) and the checks of the stack against them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.stage1_steps import Batch
from coordexp.functional import CoordLossConfig, coord_loss, stats_to_host
from coordexp.functional.targets import IGNORE_INDEX

COORD_BINS = 1000


def _sanitize(x: Tensor) -> Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)


def reference_coord_loss(logits: Tensor, targets: Tensor, start: int, cfg: CoordLossConfig) -> Tensor:
    """Plain-torch coord loss (boolean indexing, syncs allowed): weighted Σ over coord rows / n_coord."""
    rows = (targets >= start) & (targets < start + COORD_BINS)
    u = _sanitize(logits[rows].float())
    bins = targets[rows] - start
    z = u[:, start : start + COORD_BINS] / cfg.temperature
    logp = torch.log_softmax(z, dim=-1)
    grid = torch.arange(COORD_BINS, device=u.device, dtype=torch.float32)
    dist = grid.unsqueeze(0) - bins.unsqueeze(1).float()
    q = torch.exp(-0.5 * (dist / cfg.target_sigma) ** 2)
    if cfg.target_truncate is not None:
        q = torch.where(dist.abs() > cfg.target_truncate, 0.0, q)
    q = q / q.sum(-1, keepdim=True)
    soft_ce = -(q * logp).sum(-1)
    w1 = (logp.exp().cumsum(-1) - q.cumsum(-1)).abs().sum(-1) / COORD_BINS
    ce = -logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
    gate = (torch.logsumexp(u / cfg.temperature, -1) - torch.logsumexp(z, -1)).clamp(min=0)
    total = (
        cfg.soft_ce_weight * soft_ce.sum()
        + cfg.w1_weight * w1.sum()
        + cfg.ce_weight * ce.sum()
        + cfg.gate_weight * gate.sum()
    )
    return total / max(int(rows.sum()), 1)


def text_ce(logits: Tensor, targets: Tensor, start: int, rows: int = 1024) -> float:
    """``F.cross_entropy`` (mean, fp32) over the non-coord targets, a few rows at a time."""
    text = torch.where(targets >= start, IGNORE_INDEX, targets)
    total, count = 0.0, int((text != IGNORE_INDEX).sum())
    for i in range(0, logits.shape[0], rows):
        part = logits[i : i + rows].float()
        total += float(F.cross_entropy(part, text[i : i + rows], ignore_index=IGNORE_INDEX, reduction="sum"))
    return total / max(count, 1)


def reference_loss(logits: Tensor, targets: Tensor, start: int, cfg: CoordLossConfig) -> Tensor:
    """Base CE over the non-coord targets (``F.cross_entropy``) + the reference coord loss."""
    text = torch.where(targets >= start, IGNORE_INDEX, targets)
    n_text = max(int((text != IGNORE_INDEX).sum()), 1)
    base = F.cross_entropy(logits.float(), text, ignore_index=IGNORE_INDEX, reduction="sum") / n_text
    return base + reference_coord_loss(logits, targets, start, cfg)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _close(got: float, want: float, rtol: float) -> bool:
    return math.isfinite(got) and abs(got - want) <= rtol * max(abs(want), 1.0)


def check_stack(batch: Batch, cfg: CoordLossConfig, chunk_size: int, check_rows: int) -> list[Check]:
    """The stack against the base path and the plain reference (see the module docstring)."""
    logits, targets, coord = batch.logits, batch.targets, batch.coord
    start = logits.shape[-1] - COORD_BINS
    leaf = logits.detach().requires_grad_(True)
    loss, stats = coord_loss(
        leaf,
        targets,
        coord,
        cfg,
        base_ce=True,
        types=batch.types,
        top5=True,
        mass=True,
        chunk_size=chunk_size,
    )
    host = stats_to_host({**stats, "loss": loss.detach()})
    base = text_ce(logits, targets, start)
    coord_ref = float(reference_coord_loss(logits, targets, start, cfg))
    checks = [
        Check(
            "base_ce_sum / n_base == F.cross_entropy(non-coord targets)",
            _close(host["base_ce_sum"] / max(host["n_base"], 1.0), base, 1e-4),
            f"{host['base_ce_sum'] / max(host['n_base'], 1.0):.6f} vs {base:.6f}",
        ),
        Check(
            "loss - coord part == F.cross_entropy(non-coord targets)",
            _close(host["loss"] - coord_ref, base, 1e-4),
            f"{host['loss'] - coord_ref:.6f} vs {base:.6f} (coord part {coord_ref:.6f})",
        ),
    ]
    first = int((targets != IGNORE_INDEX).to(torch.int8).argmax())  # skip the leading prompt
    first = max(0, min(first, logits.shape[0] - check_rows))
    rows = min(check_rows, logits.shape[0] - first)
    part = logits[first : first + rows].detach()
    part_targets = targets[first : first + rows]
    leaf = part.clone().requires_grad_(True)
    loss_part, _ = coord_loss(leaf, part_targets, coord, cfg, base_ce=True, chunk_size=chunk_size)
    loss_part.backward()
    ref_leaf = part.float().requires_grad_(True)
    ref_loss = reference_loss(ref_leaf, part_targets, start, cfg)
    ref_loss.backward()
    assert leaf.grad is not None and ref_leaf.grad is not None
    fp32 = logits.dtype == torch.float32
    rtol, atol = (1e-4, 1e-6) if fp32 else (2e-2, 1e-5)
    diff = (leaf.grad.float() - ref_leaf.grad).abs()
    bad = diff > atol + rtol * ref_leaf.grad.abs()
    got, want = float(loss_part.detach()), float(ref_loss.detach())
    checks.append(
        Check(
            f"gradient == autograd of the reference on rows {first}..{first + rows - 1}",
            not bool(bad.any()) and _close(got, want, 1e-4),
            f"max |diff| {float(diff.max()):.3g}, loss {got:.6f} vs {want:.6f}",
        )
    )
    return checks
