"""Plain, slow reference of the Stage-1 statistics and the coord loss (loops and boolean indexing allowed).

Written independently of ``coordexp.functional``: per-position Python loops for the statistics, torch
autograd on boolean-indexed rows for the loss and its gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from coordexp.functional import STAT_KEYS
from coordexp.generated.models.config import CoordSoftCEW1Config

LIMIT = 1e4
TYPE_CODES = {"desc": 1, "format": 3, "coord": 2}


def sanitize(x: Tensor) -> Tensor:
    return torch.clamp(torch.nan_to_num(x, nan=0.0, posinf=LIMIT, neginf=-LIMIT), -LIMIT, LIMIT)


def soft_target(t: int, k: int, sigma: float, truncate: int | None) -> Tensor:
    weights = []
    for j in range(k):
        w = math.exp(-0.5 * ((j - t) / sigma) ** 2)
        if truncate is not None and abs(j - t) > truncate:
            w = 0.0
        weights.append(w)
    total = sum(weights)
    return torch.tensor([w / total for w in weights], dtype=torch.float32)


def reference_stats(
    logits: Tensor,
    targets: Tensor,
    coord_ids: Sequence[int] | None,
    *,
    types: Tensor | None = None,
    top5: bool = True,
    mass: bool = False,
    mass_max_tokens: int = 0,
    cfg: CoordSoftCEW1Config | None = None,
    base_ce: bool = False,
) -> dict[str, float]:
    x = logits.detach().float()
    n, _ = x.shape
    ids = list(coord_ids) if coord_ids is not None else []
    bin_of = {tok: k for k, tok in enumerate(ids)}
    out: dict[str, float] = {}

    def add(key: str, value: float = 1.0) -> None:
        out[key] = out.get(key, 0.0) + float(value)

    sup_pos = [i for i in range(n) if int(targets[i]) != -100]
    keep = set(sup_pos)
    if mass_max_tokens > 0 and sup_pos:
        stride = max(1, math.ceil(len(sup_pos) / mass_max_tokens))
        keep = set(sup_pos[::stride])
    errs: list[float] = []
    max_abs = 0.0
    for i in sup_pos:
        t = int(targets[i])
        row = x[i]
        add("n_sup")
        finite = row[torch.isfinite(row)]
        add("n_nonfinite_logits", row.numel() - finite.numel())
        if finite.numel():
            max_abs = max(max_abs, float(finite.abs().max()))
        if top5:
            top = row.topk(min(5, row.numel())).indices.tolist()
            pred = top[0]
            in5 = t in top
        else:
            pred = int(row.argmax())
            in5 = False
        hit = pred == t
        add("n_top1", hit)
        add("n_top5", in5)
        typ = int(types[i]) if types is not None else -1
        is_coord_id = t in bin_of
        gt_coord = (typ == 2) if typ != -1 else is_coord_id
        if types is not None and typ != -1:
            add("n_typed")
        for name, code in TYPE_CODES.items():
            if typ == code:
                add(f"n_type_{name}")
                add(f"n_type_{name}_top1", hit)
                add(f"n_type_{name}_top5", in5)
        if not gt_coord:
            add("n_noncoord")
            add("n_noncoord_top1", hit)
        if not ids:
            continue
        pred_coord = pred in bin_of
        if gt_coord:
            add("n_gt_coord")
            add("n_flip_coord_to_noncoord", not pred_coord)
        else:
            add("n_flip_text_to_coord", pred_coord)
        if typ == 3:
            add("n_flip_format_to_coord", pred_coord)
        if typ == 1:
            add("n_flip_desc_to_coord", pred_coord)
        if not is_coord_id:
            add("n_base")
            if base_ce:
                add("base_ce_sum", float(torch.logsumexp(row, 0) - row[t]))
        used = sanitize(row) if is_coord_id else row
        if mass and i in keep:
            value = float(torch.exp(torch.logsumexp(used[ids], 0) - torch.logsumexp(used, 0)))
            value = 0.0 if math.isnan(value) else min(value, 1.0)
            buckets = ["coord" if gt_coord else "text"]
            buckets += {3: ["format"], 1: ["desc"]}.get(typ, [])
            for b in buckets:
                add(f"mass_n_{b}")
                add(f"mass_sum_{b}", value)
        if cfg is None or not is_coord_id:
            continue
        k = len(ids)
        tb = bin_of[t]
        z = sanitize(row)[ids] / cfg.temperature
        logp = torch.log_softmax(z, 0)
        p = logp.exp()
        q = soft_target(tb, k, cfg.target_sigma, cfg.target_truncate)
        add("n_coord")
        add("soft_ce_sum", float(-(q * logp).sum()))
        add("w1_sum", float((p.cumsum(0) - q.cumsum(0)).abs().sum() / k))
        add("ce_sum", float(-logp[tb]))
        if cfg.gate_weight != 0:
            gate_raw = float(torch.logsumexp(sanitize(row) / cfg.temperature, 0) - torch.logsumexp(z, 0))
            add("gate_sum", max(0.0, gate_raw))
            add("coord_vocab_mass_sum", math.exp(-gate_raw))
        add("acc_top5_hits", tb in z.topk(min(5, k)).indices.tolist())
        add("p_gt_sum", float(p[tb]))
        add("margin_sum", float(z.max() - z[tb]))
        grid = torch.arange(k, dtype=torch.float32)
        err = abs(float((p * grid).sum()) - tb)
        errs.append(err)
        add("bin_abs_err_sum", err)
        add("w1_to_delta_sum", float((p * (grid - tb).abs()).sum()))
    out["max_abs_logit"] = max_abs
    out["bin_abs_err_p90"] = float(torch.quantile(torch.tensor(errs), 0.9)) if errs else 0.0
    return out


def reference_loss(
    logits: Tensor,
    targets: Tensor,
    coord_ids: Sequence[int],
    cfg: CoordSoftCEW1Config,
    *,
    base_ce: bool = False,
    coord_denominator: float | None = None,
    base_denominator: float | None = None,
) -> Tensor:
    """Differentiable reference loss (autograd through boolean-indexed rows)."""
    x = logits.float()
    ids = list(coord_ids)
    k = len(ids)
    id_tensor = torch.tensor(ids)
    sup = targets != -100
    is_coord = torch.isin(targets, id_tensor)
    cmask = sup & is_coord
    rows = sanitize(x[cmask])
    bin_of = {tok: j for j, tok in enumerate(ids)}
    bins = torch.tensor([bin_of[int(t)] for t in targets[cmask]], dtype=torch.long)
    n_coord = int(cmask.sum())
    z = rows[:, id_tensor] / cfg.temperature
    logp = torch.log_softmax(z, -1)
    p = logp.exp()
    q = (
        torch.stack([soft_target(int(b), k, cfg.target_sigma, cfg.target_truncate) for b in bins])
        if n_coord
        else torch.zeros(0, k)
    )
    soft_ce = -(q * logp).sum(-1)
    w1 = (p.cumsum(-1) - q.cumsum(-1)).abs().sum(-1) / k
    ce = -logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
    gate = (torch.logsumexp(rows / cfg.temperature, -1) - torch.logsumexp(z, -1)).clamp(min=0)
    total = (
        cfg.soft_ce_weight * soft_ce.sum()
        + cfg.w1_weight * w1.sum()
        + cfg.ce_weight * ce.sum()
        + cfg.gate_weight * gate.sum()
    )
    den = coord_denominator if coord_denominator is not None else max(n_coord, 1)
    loss = total / den
    if base_ce:
        bmask = sup & ~is_coord
        bden = base_denominator if base_denominator is not None else max(int(bmask.sum()), 1)
        loss = loss + F.cross_entropy(x[bmask], targets[bmask], reduction="sum") / bden
    return loss


def reference_grad(logits: Tensor, *args: object, **kwargs: object) -> tuple[Tensor, Tensor]:
    """``(loss, d loss / d logits)`` of :func:`reference_loss` via autograd, in fp32."""
    leaf = logits.detach().float().requires_grad_(True)
    loss = reference_loss(leaf, *args, **kwargs)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    return loss.detach(), grad if grad is not None else torch.zeros_like(leaf)


def assert_stats_match(got: dict[str, torch.Tensor], ref: dict[str, float], tol: float = 1e-5) -> None:
    assert list(got) == list(STAT_KEYS)
    for key in STAT_KEYS:
        value = got[key]
        assert value.dim() == 0 and value.dtype == torch.float32, key
        expected = ref.get(key, 0.0)
        assert math.isclose(float(value), expected, rel_tol=tol, abs_tol=tol), (key, float(value), expected)
