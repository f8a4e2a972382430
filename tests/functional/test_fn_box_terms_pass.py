"""The box terms inside the one pass (``coord_loss`` / ``linear_coord_loss`` with ``boxes``): loss and
gradient equal the pass without them plus a float64 slow reference of the box terms, in padded and
packed layouts, with materialised logits and from hidden states; sync-free."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coordexp.functional import (
    CoordLossConfig,
    CoordSlice,
    SyncCounter,
    coord_loss,
    next_token_targets,
    next_token_types,
)
from coordexp.functional.adjacent_repulsion import RepulsionWeights
from coordexp.functional.bbox_geo import BBoxGeoWeights
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights
from coordexp.functional.box_groups import box_groups
from coordexp.functional.box_terms import BoxBatch, BoxTerms
from coordexp.functional.linear_pass import OutputHead, linear_coord_loss
from coordexp.generated.batch_extras import BoxPair, BoxSlot
from tests.functional import objective_reference as ref
from tests.functional.toy_data import VOCAB, coord_ids

TERMS = BoxTerms(
    temperature=0.8,
    geo=BBoxGeoWeights(smoothl1_weight=0.5, ciou_weight=1.0),
    size=BBoxSizeAuxWeights(
        log_wh_weight=0.05, oversize_penalty_weight=0.2, oversize_area_frac_threshold=0.05
    ),
)


def _labels(layout: str, ids: list[int]) -> torch.Tensor:
    c = [ids[b] for b in (110, 220, 480, 610, 300, 350, 700, 900, 10, 20, 30, 40)]
    t2, t5, t6, t7 = [tok for tok in range(VOCAB) if tok not in set(ids)][:4]  # text tokens
    if layout == "padded":  # two rows; a third truncated mid-box (skipped)
        rows = [
            [t5, t6, *c[0:4], t7, *c[4:8], t2],
            [t5, *c[8:12], t2, -100, -100, -100, -100, -100, -100],
            [t5, t6, t7, *c[0:3], t2, -100, -100, -100, -100, -100],
        ]
    else:  # packing / padding_free: one row of three samples
        rows = [[t5, *c[0:4], t2, t5, t6, *c[4:8], t7, *c[8:12], t2, t5, t6, t2]]
    return torch.tensor(rows)


def _box_reference(logits: torch.Tensor, targets2d: torch.Tensor, ids: list[int], den: float) -> torch.Tensor:
    """The box terms from the formulas, float64, loops over boxes (autograd through ``logits``)."""
    positions, bins, _, _ = ref.ref_groups(targets2d, ids)
    total = logits.new_zeros((), dtype=torch.float64)
    idx = torch.tensor(ids)
    geo, size = TERMS.geo, TERMS.size
    assert geo is not None and size is not None
    for pos, gt_bins in zip(positions, bins, strict=True):
        p = ref.canon([ref.ref_decode(logits[q, idx].double(), TERMS.temperature) for q in pos])
        g = ref.canon([torch.tensor(b / 999, dtype=torch.float64) for b in gt_bins])
        reg, ciou = ref.ref_geo_box(p, g, "xyxy", 1.0, 1.0)
        lwh, over, _, _, _ = ref.ref_size_box(p, g, size.eps, None, None, size.oversize_area_frac_threshold)
        total = total + geo.smoothl1_weight * reg + geo.ciou_weight * ciou
        total = total + size.log_wh_weight * lwh + size.oversize_penalty_weight * over
    return total / den


def _peaked_logits(targets: torch.Tensor, ids: list[int], seed: int) -> torch.Tensor:
    """Random logits whose coord columns peak near each coord target's bin (as a trained model's do;
    boxes decoded from flat slots are a few bins wide and ill-conditioned in any fp32 code)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(targets.shape[0], VOCAB, generator=gen) * 2
    bin_of = {tok: k for k, tok in enumerate(ids)}
    grid = torch.arange(len(ids), dtype=torch.float32)
    for i, tok in enumerate(targets.tolist()):
        if tok in bin_of:
            centre = bin_of[tok] + int(torch.randint(-25, 25, (), generator=gen))
            logits[i, torch.tensor(ids)] += 6.0 - ((grid - centre) / 15.0) ** 2 / 2
    return logits


def _setup(
    layout: str, ids_layout: str
) -> tuple[torch.Tensor, torch.Tensor, CoordSlice, list[int], BoxBatch]:
    ids = coord_ids(ids_layout)
    labels = _labels(layout, ids)
    targets2d = next_token_targets(labels).view(labels.shape[0], -1)
    coord = CoordSlice.from_ids(ids)
    groups = box_groups(targets2d, coord)
    boxes = BoxBatch(TERMS, groups, groups.n_boxes.clamp(min=1.0))
    return labels, targets2d, coord, ids, boxes


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("ids_layout", ["consecutive", "permuted"])
def test_box_terms_in_the_pass_equal_the_reference(layout: str, ids_layout: str) -> None:
    _, targets2d, coord, ids, boxes = _setup(layout, ids_layout)
    assert boxes.groups.n_boxes.item() == 3
    targets = targets2d.reshape(-1)
    cfg = CoordLossConfig(ce_weight=0.3)
    logits = _peaked_logits(targets, ids, 7).requires_grad_()
    loss, stats = coord_loss(logits, targets, coord, cfg, base_ce=True, boxes=boxes, chunk_size=5)
    (grad,) = torch.autograd.grad(loss, logits)
    assert stats["n_boxes"].item() == 3
    assert stats["n_box_skipped_rows"].item() == (1 if layout == "padded" else 0)
    plain = logits.detach().requires_grad_()
    base, _ = coord_loss(plain, targets, coord, cfg, base_ce=True, chunk_size=5)
    (base_grad,) = torch.autograd.grad(base, plain)
    ref_leaf = logits.detach().double().requires_grad_()
    box_ref = _box_reference(ref_leaf, targets2d, ids, 3.0)
    (box_grad,) = torch.autograd.grad(box_ref, ref_leaf)
    torch.testing.assert_close(loss.double(), base.double() + box_ref.detach(), rtol=1e-5, atol=0)
    want = base_grad.double() + box_grad
    torch.testing.assert_close(grad.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_box_terms_without_logits_equal_the_materialised_pass(layout: str) -> None:
    _, targets2d, coord, _, boxes = _setup(layout, "permuted")
    targets = targets2d.reshape(-1)
    cfg = CoordLossConfig()
    gen = torch.Generator().manual_seed(8)
    hidden = torch.randn(targets.shape[0], 16, generator=gen).requires_grad_()
    weight = (torch.randn(VOCAB, 16, generator=gen) * 0.5).requires_grad_()
    loss, stats = linear_coord_loss(
        hidden, OutputHead(weight), targets, coord, cfg, base_ce=True, boxes=boxes
    )
    grads = torch.autograd.grad(loss, (hidden, weight))
    h2, w2 = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    want, want_stats = coord_loss(F.linear(h2, w2), targets, coord, cfg, base_ce=True, boxes=boxes)
    want_grads = torch.autograd.grad(want, (h2, w2))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=0)
    for key in ("n_boxes", "bbox_reg_sum", "bbox_ciou_sum", "size_log_wh_sum", "size_oversize_sum"):
        torch.testing.assert_close(stats[key], want_stats[key], rtol=1e-5, atol=1e-7)
    for got, exp in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5 * exp.abs().max().item())


def test_box_terms_are_sync_free() -> None:
    _, targets2d, coord, _, _ = _setup("packed", "consecutive")
    targets = targets2d.reshape(-1)
    logits = torch.randn(targets.shape[0], VOCAB).requires_grad_()
    with SyncCounter(count_host_copies=True) as counter:
        groups = box_groups(targets2d, coord)
        boxes = BoxBatch(TERMS, groups, groups.n_boxes.clamp(min=1.0))
        loss, _ = coord_loss(logits, targets, coord, CoordLossConfig(), base_ce=True, boxes=boxes)
        loss.backward()
    assert counter.count == 0, counter.ops


# -- the answer parser's boxes (box_slots / box_pairs) and the adjacent repulsion ------------------------

REPULSION = BoxTerms(
    temperature=0.8,
    geo=TERMS.geo,
    repulsion=RepulsionWeights(weight=3.0, mode="same_desc", margin_ratio=0.2, copy_margin=0.1),
)


def _codes(
    labels: torch.Tensor, ids: list[int], links_per_box: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``box_slots`` / ``box_pairs`` of ``labels``: each complete quartet of coord labels is a box, in
    order, with the given links; a row's incomplete tail is UNREAD (as the enricher marks a cut sample)."""
    slots = torch.full_like(labels, int(BoxSlot.NONE))
    links = torch.full_like(labels, int(BoxPair.NONE))
    coord = torch.isin(labels, torch.tensor(ids))
    box = 0
    for r in range(labels.shape[0]):
        cols = torch.nonzero(coord[r]).flatten().tolist()
        if len(cols) % 4:
            slots[r, labels[r] != -100] = int(BoxSlot.UNREAD)
            continue
        for j, c in enumerate(cols):
            slots[r, c] = j % 4
            links[r, c] = links_per_box[box + j // 4]
        box += len(cols) // 4
    return slots, links


def _peaked_at_previous(
    targets: torch.Tensor, ids: list[int], positions: torch.Tensor, seed: int
) -> torch.Tensor:
    """Peaked logits whose second and third boxes also put mass on their previous box's bins (so the
    copy score exceeds the margin)."""
    logits = _peaked_logits(targets, ids, seed)
    bin_of = {tok: k for k, tok in enumerate(ids)}
    idx = torch.tensor(ids)
    for m in (1, 2):
        for s in range(4):
            prev_bin = bin_of[int(targets[positions[m - 1, s]])]
            row = logits[positions[m, s]]
            row[idx[prev_bin]] = row[idx].max() + 1.0  # most of the slot's mass on the previous bin
    return logits


def _repulsion_reference(
    logits: torch.Tensor,
    positions: list[list[int]],
    bins: list[list[int]],
    ids: list[int],
    applied: list[int],
) -> torch.Tensor:
    rep = REPULSION.repulsion
    assert rep is not None
    idx = torch.tensor(ids)
    pens = [
        ref.ref_repulsion(
            logits[positions[m]][:, idx].double(),
            bins[m - 1],
            REPULSION.temperature,
            rep.margin_ratio,
            rep.copy_margin,
        )[0]
        for m in applied
    ]
    return rep.weight * sum(pens) / max(1, len(applied))  # type: ignore[return-value]


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("materialised", [True, False], ids=["logits", "no_logits"])
def test_repulsion_in_the_pass_equals_the_reference(layout: str, materialised: bool) -> None:
    ids = coord_ids("permuted")
    labels = _labels(layout, ids)
    same, first = int(BoxPair.SAME_DESC), int(BoxPair.FIRST)
    # padded: row 0 holds boxes 0, 1 (1 links to 0), row 1 box 2 (first of its sample)
    # packed: samples [box 0], [box 1, box 2]: box 2 links to box 1, box 1 is first of its sample
    links_per_box = [first, same, first] if layout == "padded" else [first, first, same]
    slots, links = _codes(labels, ids, links_per_box)
    targets2d = next_token_targets(labels).view(labels.shape[0], -1)
    flat_slots, flat_links = next_token_types(slots), next_token_types(links)
    coord = CoordSlice.from_ids(ids)
    groups = box_groups(targets2d, coord, flat_slots, flat_links)
    boxes = BoxBatch(REPULSION, groups, groups.n_boxes.clamp(min=1.0))
    targets = targets2d.reshape(-1)
    positions, bins, _, _ = ref.ref_groups(targets2d, ids)
    applied = [1] if layout == "padded" else [2]
    cfg = CoordLossConfig()
    logits = _peaked_at_previous(targets, ids, torch.tensor(positions), 5)
    if materialised:
        leaf = logits.clone().requires_grad_()
        loss, stats = coord_loss(leaf, targets, coord, cfg, base_ce=True, boxes=boxes, chunk_size=5)
        (grad,) = torch.autograd.grad(loss, leaf)
        plain_leaf = logits.clone().requires_grad_()
        plain, _ = coord_loss(plain_leaf, targets, coord, cfg, base_ce=True, chunk_size=5)
        (plain_grad,) = torch.autograd.grad(plain, plain_leaf)
    else:  # the logits are the head's output: hidden = logits, identity head
        hidden = logits.clone().requires_grad_()
        head = OutputHead(torch.eye(VOCAB))
        loss, stats = linear_coord_loss(hidden, head, targets, coord, cfg, base_ce=True, boxes=boxes)
        (grad,) = torch.autograd.grad(loss, hidden)
        plain_leaf = logits.clone().requires_grad_()
        plain, _ = linear_coord_loss(plain_leaf, head, targets, coord, cfg, base_ce=True)
        (plain_grad,) = torch.autograd.grad(plain, plain_leaf)
    assert stats["n_repulsion_pairs"].item() == stats["n_repulsion_applied"].item() == 1
    ref_leaf = logits.double().requires_grad_()
    box_ref = _box_reference_geo(ref_leaf, positions, bins, ids, 3.0)
    rep_ref = _repulsion_reference(ref_leaf, positions, bins, ids, applied)
    assert rep_ref.item() > 1e-3
    (ref_grad,) = torch.autograd.grad(box_ref + rep_ref, ref_leaf)
    torch.testing.assert_close(
        loss.double(), plain.double() + box_ref.detach() + rep_ref.detach(), rtol=1e-5, atol=0
    )
    want = plain_grad.double() + ref_grad
    torch.testing.assert_close(grad.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    # the repulsion's own gradient (the difference to the pass without it) is the reference's
    rep_leaf = logits.double().requires_grad_()
    (rep_grad,) = torch.autograd.grad(_repulsion_reference(rep_leaf, positions, bins, ids, applied), rep_leaf)
    assert rep_grad.abs().max() > 1e-3


def _box_reference_geo(
    logits: torch.Tensor, positions: list[list[int]], bins: list[list[int]], ids: list[int], den: float
) -> torch.Tensor:
    geo = REPULSION.geo
    assert geo is not None
    idx = torch.tensor(ids)
    total = logits.new_zeros((), dtype=torch.float64)
    for pos, gt_bins in zip(positions, bins, strict=True):
        p = ref.canon([ref.ref_decode(logits[q, idx].double(), REPULSION.temperature) for q in pos])
        g = ref.canon([torch.tensor(b / 999, dtype=torch.float64) for b in gt_bins])
        reg, ciou = ref.ref_geo_box(p, g, "xyxy", 1.0, 1.0)
        total = total + geo.smoothl1_weight * reg + geo.ciou_weight * ciou
    return total / den


def test_box_slots_drop_unread_and_misordered_rows_and_skip_polys() -> None:
    ids = coord_ids("consecutive")
    labels = _labels("padded", ids)  # row 2 is cut mid-box
    slots, links = _codes(labels, ids, [int(BoxPair.FIRST)] * 3)
    coord = CoordSlice.from_ids(ids)
    targets2d = next_token_targets(labels).view(labels.shape[0], -1)
    groups = box_groups(targets2d, coord, next_token_types(slots), next_token_types(links))
    assert (groups.n_boxes.item(), groups.skipped_rows.item(), groups.skipped_slots.item()) == (3, 1, 3)
    # row 0's second quartet is a poly's coordinates (NONE): one box, the row is kept
    poly = slots.clone()
    cols = torch.nonzero(torch.isin(labels[0], torch.tensor(ids))).flatten()[4:8]
    poly[0, cols] = int(BoxSlot.NONE)
    groups = box_groups(targets2d, coord, next_token_types(poly), next_token_types(links))
    assert (groups.n_boxes.item(), groups.skipped_rows.item()) == (2, 1)
    # slots out of turn (a cut that kept x2, y2 of one box and x1, y1 of the next): the row is dropped
    bad = slots.clone()
    bad[0, cols] = torch.tensor([2, 3, 0, 1])
    groups = box_groups(targets2d, coord, next_token_types(bad), next_token_types(links))
    assert (groups.n_boxes.item(), groups.skipped_rows.item(), groups.skipped_slots.item()) == (1, 2, 11)
    assert groups.row[:1].tolist() == [1]
