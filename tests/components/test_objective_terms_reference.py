"""Issue 21's objective at the trainer: the loss and every parameter's gradient of a step with every term
on (base CE, softCE, W1, CE, gate, text gate, bbox_geo, bbox_size_aux, adjacent repulsion) equal a plain,
slow reference written from the formulas (shared/reference/upstream-stage1-additions.md §1-§4) in torch
autograd, to 1e-5 relative in fp32: padded and packed rows, accumulation 1 and 4, with and without token
types, the two-pass path, the one-pass seam and the pass without materialised logits.

The reference reads the boxes off the payloads (each object's ``bbox_2d`` is the next four coord
targets of its sample, a ``poly``'s coordinates are skipped), never through coordexp's parser or
grouping, and pairs each box with the previous object of the same sample when that is a box.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coordexp.coord_tokens.codec import coord_token, get_coord_token_ids
from coordexp.swift_seam.assembly import build_trainer_cls
from tests.components.stage1_fixtures import (
    BatchSpec,
    StandInTrainer,
    SwiftLikeTrainer,
    ToyLM,
    make_batch,
    tokenizer,
)
from tests.functional import objective_reference as ref

K_BINS = 1000
TYPE_DESC, TYPE_FORMAT = 1, 3


def _box(base: int, w: int = 60, h: int = 90) -> list[str]:
    return [coord_token(v) for v in (base, base + 5, base + w, base + h)]


# Dense scenes: neighbours with the same desc (after normalisation), a poly between boxes, a box with a
# poly of its own; three samples (padded: three rows; packed: one row of three samples).
PAYLOADS: list[dict[str, Any]] = [
    {
        "objects": [
            {"desc": "cat", "bbox_2d": _box(100)},
            {"desc": "Cat", "bbox_2d": _box(104)},
            {"desc": "dog", "bbox_2d": _box(300, 200, 100)},
            {"desc": "dog", "poly": [coord_token(v) for v in (5, 6, 30, 8, 60, 90)]},
            {"desc": "dog", "bbox_2d": _box(310, 200, 100)},
        ]
    },
    {
        "objects": [
            {
                "desc": "small_cat",
                "bbox_2d": _box(400),
                "poly": [coord_token(v) for v in (400, 405, 460, 490)],
            },
            {"desc": "small (cat)", "bbox_2d": _box(402)},
        ]
    },
    {"objects": [{"desc": "tree", "bbox_2d": _box(700, 100, 250)}]},
]

COORD: dict[str, Any] = {
    "enabled": True,
    "temperature": 0.9,
    "soft_ce_weight": 1.0,
    "w1_weight": 1.0,
    "ce_weight": 0.5,
    "gate_weight": 1.0,
    "text_gate_weight": 6.0,
    "adjacent_repulsion_weight": 6000.0,  # random logits copy little: make the term count
    "adjacent_repulsion_margin_ratio": 0.3,
    "adjacent_repulsion_copy_margin": 0.0,
}
GEO = {"enabled": True, "smoothl1_weight": 0.5, "ciou_weight": 1.0}
SIZE = {
    "enabled": True,
    "log_wh_weight": 0.2,
    "oversize_penalty_weight": 0.1,
    "oversize_area_frac_threshold": 0.01,
    "oversize_log_w_threshold": None,
    "oversize_log_h_threshold": None,
    "eps": 1e-6,
}


class HeadLM(ToyLM):
    """The toy LM with HF's ``get_output_embeddings`` (what ``materialize_logits: false`` needs)."""

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def _custom(mode: str, filter_mode: str) -> dict[str, Any]:
    return {
        "coord_soft_ce_w1": {**COORD, "adjacent_repulsion_filter_mode": filter_mode},
        "bbox_geo": dict(GEO),
        "bbox_size_aux": dict(SIZE),
        "stage1_pass": {"materialize_logits": mode != "no_logits"},
    }


def _norm(desc: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_/()]", " ", desc.lower().strip())).strip()


def _decode(z: torch.Tensor, t: float) -> torch.Tensor:
    """Expected coordinate per slot of ``z`` ``[4, K]``."""
    p = torch.softmax(z / t, -1)
    return (p * (torch.arange(K_BINS, dtype=z.dtype) / (K_BINS - 1))).sum(-1)


def _reference(
    model: nn.Module, batch: dict[str, Any], packed: bool, typed: bool, filter_mode: str
) -> torch.Tensor:
    tok = tokenizer()
    ids = torch.tensor(get_coord_token_ids(tok))
    bin_of = {int(t): k for k, t in enumerate(ids.tolist())}
    t = COORD["temperature"]
    logits = model(batch["input_ids"]).logits.float()
    x, targets = logits[:, :-1], batch["labels"][:, 1:]
    rows, n, v = x.shape
    flat_x, flat_t = x.reshape(-1, v), targets.reshape(-1)
    sup = flat_t != -100
    is_coord = torch.isin(flat_t, ids) & sup
    # base CE over the non-coord targets; the coord terms over the coord targets
    total = F.cross_entropy(flat_x[sup & ~is_coord], flat_t[sup & ~is_coord])
    z = flat_x[is_coord][:, ids] / t
    gt = torch.tensor([bin_of[int(y)] for y in flat_t[is_coord]])
    q = torch.exp(-0.5 * ((torch.arange(K_BINS)[None] - gt[:, None]) / 2.0) ** 2)
    q = q / q.sum(-1, keepdim=True)
    logp = torch.log_softmax(z, -1)
    soft = -(q * logp).sum(-1).mean()
    w1 = (logp.exp().cumsum(-1) - q.cumsum(-1)).abs().sum(-1).mean() / K_BINS
    ce = -logp.gather(-1, gt[:, None]).mean()
    gate = (torch.logsumexp(flat_x[is_coord] / t, -1) - torch.logsumexp(z, -1)).clamp(min=0).mean()
    total = total + COORD["soft_ce_weight"] * soft + COORD["w1_weight"] * w1
    total = total + COORD["ce_weight"] * ce + COORD["gate_weight"] * gate
    # text gate: supervised non-coord targets, DESC / FORMAT when typed, never eos
    text = sup & ~is_coord & (flat_t != tok.eos_token_id)
    if typed:
        types = batch["token_types"][:, 1:].reshape(-1)
        text &= (types == TYPE_DESC) | (types == TYPE_FORMAT)
    g_sum, _ = ref.ref_text_gate(flat_x, torch.nonzero(text).flatten().tolist(), ids.tolist(), t)
    terms = {"coord_diag/text_gate": COORD["text_gate_weight"] * g_sum / text.sum()}
    total = total + terms["coord_diag/text_gate"]
    # boxes and pairs, read off the payloads
    coord_rows = [[b * n + i for i in range(n) if bool(is_coord[b * n + i])] for b in range(rows)]
    samples = [PAYLOADS] if packed else [[p] for p in PAYLOADS]
    boxes: list[tuple[list[int], list[int]]] = []
    pairs: list[tuple[int, bool]] = []  # (index of the current box, applied)
    for row_positions, row_payloads in zip(coord_rows, samples, strict=True):
        cursor = iter(row_positions)
        for payload in row_payloads:
            prev: tuple[int, str] | None = None
            for obj in payload["objects"]:
                if "bbox_2d" in obj:
                    pos = [next(cursor) for _ in range(4)]
                    boxes.append((pos, [bin_of[int(flat_t[p])] for p in pos]))
                    if prev is not None:
                        same = _norm(prev[1]) == _norm(obj["desc"])
                        pairs.append((len(boxes) - 1, filter_mode == "global" or same))
                    prev = (len(boxes) - 1, obj["desc"])
                else:
                    prev = None
                for _ in obj.get("poly", []):
                    next(cursor)
    geo = size = flat_x.new_zeros(())
    for pos, bins in boxes:
        p = ref.canon(list(_decode(flat_x[pos][:, ids], t).unbind()))
        g = ref.canon([torch.tensor(b / (K_BINS - 1)) for b in bins])
        reg, ciou = ref.ref_geo_box(p, g, "xyxy", 1.0, 1.0)
        lwh, over, *_ = ref.ref_size_box(p, g, SIZE["eps"], None, None, SIZE["oversize_area_frac_threshold"])
        geo = geo + GEO["smoothl1_weight"] * reg + GEO["ciou_weight"] * ciou
        size = size + SIZE["log_wh_weight"] * lwh + SIZE["oversize_penalty_weight"] * over
    terms["loss/geo/bbox_geo"], terms["loss/geo/bbox_size_aux"] = geo / len(boxes), size / len(boxes)
    applied = [m for m, on in pairs if on]
    rep = flat_x.new_zeros(())
    for m in applied:
        rep = rep + ref.ref_repulsion(flat_x[boxes[m][0]][:, ids], boxes[m - 1][1], t, 0.3, 0.0)[0]
    terms["coord_diag/adjacent_repulsion"] = COORD["adjacent_repulsion_weight"] * rep / max(1, len(applied))
    for value in list(terms.values())[1:]:
        total = total + value
    return total, {key: float(value.detach()) for key, value in terms.items()}


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("mode", ["two_pass", "one_pass", "no_logits"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("accum", [1, 4])
@pytest.mark.parametrize("typed", [True, False], ids=["types", "no_types"])
def test_every_term_equals_the_slow_reference(
    mode: str, packed: bool, accum: int, typed: bool, tmp_path: Path
) -> None:
    filter_mode = "same_desc" if accum == 1 else "global"
    model = HeadLM(len(tokenizer()))
    base = StandInTrainer if mode == "two_pass" else SwiftLikeTrainer
    trainer = build_trainer_cls(base, _custom(mode, filter_mode))(
        model, output_dir=str(tmp_path), grad_accum=accum
    )
    batch = make_batch(BatchSpec(packed=packed, with_types=typed, with_boxes=True, payloads=PAYLOADS))
    num_items = None if accum == 1 else torch.tensor(77)  # G > 1: the window's count, replaced per batch
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    got = _grads(model)
    model.zero_grad()
    want, terms = _reference(model, batch, packed, typed, filter_mode)
    want = want / accum
    want.backward()
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=1e-5, atol=0)
    for g, w in zip(got, _grads(model), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * w.abs().max().item())
    logged = trainer.logged()
    for key, value in terms.items():  # each term's own value, as logged
        assert logged[key] == [pytest.approx(value, rel=1e-5)], key
        assert value > 1e-2 * float(want.detach()) * accum, (
            key
        )  # every term weighs in the loss and its gradient
    assert logged["coord_diag/adjacent_repulsion_applied_count"] == [
        2.0 if filter_mode == "same_desc" else 3.0
    ]
    assert logged["coord_diag/adjacent_repulsion_pair_count"] == [3.0]
    assert logged["bbox_geo/groups_total"] == [7.0]
