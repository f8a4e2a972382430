"""A plain, slow reference of the whole Stage-1 objective of a real ms-swift micro-batch, from the model's
full logits (shared/reference/upstream-stage1-additions.md §1-§4, written in torch autograd with loops
over boxes and pairs; no ``coordexp.functional`` code). Boxes and pairs are read off the batch's
``box_slots`` / ``box_pairs`` (the collator's answer parser, tested against the payloads on its own).
Used by the Qwen3 and Qwen3-VL reference tests. Not a test module."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS, BOX_PAIRS_KEY, BOX_SLOTS_KEY, TOKEN_TYPES_KEY
from tests.functional import objective_reference as ref

K_BINS = 1000
TYPE_DESC, TYPE_FORMAT = 1, 3
SAME_DESC, OTHER_DESC = 2, 1

ReferenceParts = dict[str, tuple[torch.Tensor, float]]
"""term -> (weighted numerator, denominator) of one micro-batch"""


def model_logits(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The model's full fp32 logits for the collated batch (no labels, no extras)."""
    inputs = {k: v for k, v in batch.items() if k not in BATCH_EXTRAS_KEYS and k != "labels"}
    return model(**inputs).logits.float()


def reference_parts(
    logits: torch.Tensor, batch: dict[str, Any], tokenizer: Any, custom: dict[str, Any], *, typed: bool
) -> ReferenceParts:
    """Each term of one micro-batch as (weighted numerator, denominator)."""
    coord_cfg = custom["coord_soft_ce_w1"]
    t = float(coord_cfg.get("temperature", 1.0))
    sigma = float(coord_cfg.get("target_sigma", 2.0))
    weights = {
        k: float(coord_cfg.get(f"{k}_weight", d))
        for k, d in (("soft_ce", 1.0), ("w1", 1.0), ("ce", 0.0), ("gate", 1.0))
    }
    ids = torch.tensor(get_coord_token_ids(tokenizer))
    bin_of = {int(v): k for k, v in enumerate(ids.tolist())}
    labels = batch["labels"]
    x, targets = logits[:, :-1], labels[:, 1:]
    rows, n, v = x.shape
    flat_x, flat_t = x.reshape(-1, v), targets.reshape(-1)
    sup = flat_t != -100
    is_coord = torch.isin(flat_t, ids) & sup
    base = sup & ~is_coord
    parts: ReferenceParts = {
        "base_ce": (F.cross_entropy(flat_x[base], flat_t[base], reduction="sum"), float(base.sum()))
    }
    z = flat_x[is_coord][:, ids] / t
    gt = torch.tensor([bin_of[int(y)] for y in flat_t[is_coord]])
    q = torch.exp(-0.5 * ((torch.arange(K_BINS)[None] - gt[:, None]) / sigma) ** 2)
    q = q / q.sum(-1, keepdim=True)
    logp = torch.log_softmax(z, -1)
    coord_sum = (
        weights["soft_ce"] * -(q * logp).sum()
        + weights["w1"] * (logp.exp().cumsum(-1) - q.cumsum(-1)).abs().sum() / K_BINS
        + weights["ce"] * -logp.gather(-1, gt[:, None]).sum()
        + weights["gate"]
        * (torch.logsumexp(flat_x[is_coord] / t, -1) - torch.logsumexp(z, -1)).clamp(min=0).sum()
    )
    parts["coord"] = (coord_sum, float(is_coord.sum()))
    if coord_cfg.get("text_gate_weight", 0.0):
        text = base & (flat_t != tokenizer.eos_token_id)
        if typed:
            types = batch[TOKEN_TYPES_KEY][:, 1:].reshape(-1)
            text &= (types == TYPE_DESC) | (types == TYPE_FORMAT)
        g_sum, _ = ref.ref_text_gate(flat_x, torch.nonzero(text).flatten().tolist(), ids.tolist(), t)
        parts["text_gate"] = (coord_cfg["text_gate_weight"] * g_sum, float(text.sum()))
    # boxes: consecutive slot-marked coord targets of a row, x1 y1 x2 y2 in turn
    slots = batch[BOX_SLOTS_KEY][:, 1:]
    links = batch[BOX_PAIRS_KEY][:, 1:]
    assert not (slots == -2).any(), "the reference expects every sample read"
    boxes: list[tuple[list[int], list[int], int, int]] = []  # positions, bins, row, link
    for r in range(rows):
        marked = [i for i in range(n) if int(slots[r, i]) >= 0 and bool(is_coord[r * n + i])]
        assert len(marked) % 4 == 0
        for j in range(0, len(marked), 4):
            pos = [r * n + i for i in marked[j : j + 4]]
            assert [int(slots[r, i]) for i in marked[j : j + 4]] == [0, 1, 2, 3]
            boxes.append((pos, [bin_of[int(flat_t[p])] for p in pos], r, int(links[r, marked[j]])))
    geo_cfg, size_cfg = custom.get("bbox_geo"), custom.get("bbox_size_aux")
    geo = size = flat_x.new_zeros(())
    grid = torch.arange(K_BINS, dtype=flat_x.dtype) / (K_BINS - 1)
    for pos, bins, _, _ in boxes:
        p = ref.canon([(torch.softmax(flat_x[q_, ids] / t, -1) * grid).sum() for q_ in pos])
        g = ref.canon([torch.tensor(b / (K_BINS - 1)) for b in bins])
        if geo_cfg:
            reg, ciou = ref.ref_geo_box(p, g, "xyxy", 1.0, 1.0)
            geo = geo + geo_cfg["smoothl1_weight"] * reg + geo_cfg["ciou_weight"] * ciou
        if size_cfg:
            lwh, over, *_ = ref.ref_size_box(
                p,
                g,
                size_cfg["eps"],
                size_cfg["oversize_log_w_threshold"],
                size_cfg["oversize_log_h_threshold"],
                size_cfg["oversize_area_frac_threshold"],
            )
            size = size + size_cfg["log_wh_weight"] * lwh + size_cfg["oversize_penalty_weight"] * over
    if geo_cfg:
        parts["bbox_geo"] = (geo, float(len(boxes)))
    if size_cfg:
        parts["bbox_size_aux"] = (size, float(len(boxes)))
    weight = float(coord_cfg.get("adjacent_repulsion_weight", 0.0))
    if weight:
        mode = coord_cfg.get("adjacent_repulsion_filter_mode", "same_desc")
        rho = float(coord_cfg.get("adjacent_repulsion_margin_ratio", 0.05))
        margin = float(coord_cfg.get("adjacent_repulsion_copy_margin", 0.8))
        rep = flat_x.new_zeros(())
        applied = 0
        for m in range(1, len(boxes)):
            pos, _, row, link = boxes[m]
            if boxes[m - 1][2] != row or link not in (OTHER_DESC, SAME_DESC):
                continue
            if mode == "same_desc" and link != SAME_DESC:
                continue
            applied += 1
            rep = rep + ref.ref_repulsion(flat_x[pos][:, ids], boxes[m - 1][1], t, rho, margin)[0]
        parts["adjacent_repulsion"] = (weight * rep, float(applied))
    return parts


def window_objective(parts: list[ReferenceParts]) -> torch.Tensor:
    """The window's objective as the trainer optimises it: each micro-batch's own means, divided by the
    micro-batches (the accumulation steps)."""
    total = torch.zeros(())
    for micro in parts:
        for num, den in micro.values():
            total = total + num / max(den, 1.0)
    return total / len(parts)


def window_values(parts: list[ReferenceParts]) -> dict[str, float]:
    """Each term's exact window value (Σ numerators / Σ denominators), as the keys log it."""
    out = {}
    for term in parts[0]:
        den = sum(p[term][1] for p in parts)
        out[term] = float(sum(float(p[term][0].detach()) for p in parts) / den) if den else math.nan
    return out
