"""Issue 21's terms as pure functions: the reference document's worked examples, and value and gradient
against the slow references of ``objective_reference`` (1e-5 relative, fp32)."""

from __future__ import annotations

import math

import pytest
import torch

from coordexp.functional import CoordSlice
from coordexp.functional.adjacent_repulsion import (
    normalize_desc,
    object_links,
    repulsion_pairs,
    repulsion_per_pair,
)
from coordexp.functional.bbox_geo import BBoxGeoWeights, bbox_geo_per_box, ciou_loss
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights, bbox_size_per_box
from coordexp.functional.box_groups import box_groups, canonical_boxes, expected_coords
from coordexp.functional.text_gate import text_gate_grad, text_gate_positions, text_gate_rows
from coordexp.generated.batch_extras import BoxPair
from tests.functional import objective_reference as ref
from tests.functional.toy_data import BINS, VOCAB, coord_ids

RTOL = 1e-5
NEG = -1e4  # "effectively -inf" and untouched by the sanitiser


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL, atol: float = 1e-7) -> None:
    torch.testing.assert_close(a.detach().float(), b.detach().float(), rtol=rtol, atol=atol)


def close_grad(a: torch.Tensor, b: torch.Tensor) -> None:
    """Gradients: 1e-5 relative to the reference's largest entry (entries near 0 have no digits to
    compare); the reference runs in float64."""
    scale = b.detach().abs().max().item()
    close(a, b, atol=RTOL * scale)


# -- §1 text gate -------------------------------------------------------------------------------------


def test_text_gate_worked_example() -> None:
    coord = CoordSlice.from_ids(coord_ids("consecutive"))
    x = torch.full((2, VOCAB), NEG)
    x[0, 5], x[0, 100] = math.log(4.0), 0.0  # m = 1/5
    x[1, 5], x[1, 100] = 0.0, 0.0  # m = 1/2
    g, m = text_gate_rows(x, coord, 1.0)
    loss = g.sum() / 2
    assert loss.item() == pytest.approx(0.4581, abs=1e-4)
    assert (0.1 * loss).item() == pytest.approx(0.04581, abs=1e-5)
    assert m.mean().item() == pytest.approx(0.35, abs=1e-6)


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_text_gate_value_and_gradient_equal_the_reference(layout: str, temperature: float) -> None:
    ids = coord_ids(layout)
    coord = CoordSlice.from_ids(ids)
    torch.manual_seed(0)
    x = torch.randn(6, VOCAB) * 3
    x[:, ids[:50]] += 4.0  # a sizeable coord mass
    x[2, 7] = math.inf  # the sanitiser's rows
    rows = [0, 1, 2, 4]
    g, m = text_gate_rows(x.detach(), coord, temperature)
    # the reference in float64: the fp32 result must be within 1e-5 of the exact value
    x64 = x.detach().double().requires_grad_()
    g_ref, m_ref = ref.ref_text_gate(x64, rows, ids, temperature)
    close(g[rows].sum(), g_ref)
    close(m[rows].sum(), m_ref)
    (grad_ref,) = torch.autograd.grad(g_ref, x64)
    grad = text_gate_grad(x.detach()[rows], coord, temperature)
    close_grad(grad, grad_ref[rows])


def test_text_gate_positions() -> None:
    coord = CoordSlice.from_ids(coord_ids("consecutive"))
    targets = torch.tensor([-100, 5, 150, 7, 2, 9])
    types = torch.tensor([-1, 1, 2, 3, 3, -1])
    eos = 2
    assert text_gate_positions(targets, None, coord, eos).tolist() == [False, True, False, True, False, True]
    assert text_gate_positions(targets, types, coord, eos).tolist() == [
        False,
        True,
        False,
        True,
        False,
        False,
    ]
    assert text_gate_positions(targets, types, coord, None).tolist() == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]


# -- §2.2 grouping, §2.3 decoding ---------------------------------------------------------------------


def _targets(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows])


C = coord_ids("consecutive")


@pytest.mark.parametrize(
    "rows",
    [
        # padded: two rows, the second truncated (6 coord slots: skipped)
        [[5, C[1], C[2], C[3], C[4], 6, 2], [5, C[9], C[8], C[7], C[6], C[5], C[4], 2]],
        # packing / padding_free: one row holding two samples' answers
        [[5, C[1], C[2], C[3], C[4], 2, -100, 5, C[10], C[20], C[30], C[40], 6, C[1], C[2], C[3], C[4], 2]],
        # no coord target at all
        [[5, 6, 2, -100]],
    ],
    ids=["padded", "packed", "no_coord"],
)
def test_box_groups_equal_the_reference(rows: list[list[int]]) -> None:
    targets = _targets(rows)
    groups = box_groups(targets, CoordSlice.from_ids(C))
    pos, bins, skipped_rows, skipped_slots = ref.ref_groups(targets, C)
    n = len(pos)
    assert groups.n_boxes.item() == n
    assert groups.valid.tolist() == [True] * n + [False] * (groups.valid.shape[0] - n)
    assert groups.positions[:n].tolist() == pos
    assert groups.bins[:n].tolist() == bins
    assert (groups.skipped_rows.item(), groups.skipped_slots.item()) == (skipped_rows, skipped_slots)


def test_decoding_worked_example_and_canon() -> None:
    z = torch.full((4, BINS), NEG)
    for s, b in enumerate((100, 200, 300, 400)):
        z[s, b] = z[s, b + 10] = 0.0
    close(expected_coords(z, 1.0), torch.tensor([105.0, 205.0, 305.0, 405.0]) / 999)
    box = canonical_boxes(torch.tensor([0.5, 0.9, 0.1, 1.2]))
    assert box.tolist() == pytest.approx([0.1, 0.9, 0.5, 1.0])


# -- §2 bbox_geo --------------------------------------------------------------------------------------


def test_bbox_geo_worked_example() -> None:
    pred = torch.tensor([[105.0, 205.0, 305.0, 405.0]]) / 999
    gt = torch.tensor([[100.0, 200.0, 300.0, 400.0]]) / 999
    valid = torch.tensor([True])
    reg, ciou = bbox_geo_per_box(pred, gt, valid, BBoxGeoWeights(smoothl1_weight=0.01, ciou_weight=1.0))
    assert reg.item() == pytest.approx(1.2525e-5, rel=1e-3)
    assert ciou.item() == pytest.approx(0.09470, abs=1e-5)
    assert (0.01 * reg + ciou).item() == pytest.approx(0.094699, abs=2e-6)
    weights = BBoxGeoWeights(parameterization="center_size", center_weight=2.0, size_weight=0.25)
    reg_cs, _ = bbox_geo_per_box(pred, gt, valid, weights)
    assert reg_cs.item() == pytest.approx(2.505e-5, rel=1e-3)


def _random_boxes(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coord logits ``[m, 4, K]`` peaked near a box of 100-500 bins (as a trained model's are; decoded
    boxes of a few bins are ill-conditioned in any fp32 code) and GT bins near the same box."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, 400, (m, 2), generator=gen)
    hi = lo + torch.randint(100, 500, (m, 2), generator=gen)
    centre = torch.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]], -1)
    grid = torch.arange(BINS, dtype=torch.float32)
    peak = centre.unsqueeze(-1) + torch.randint(-20, 20, (m, 4, 1), generator=gen)
    z = torch.randn(m, 4, BINS, generator=gen) - ((grid - peak) / 15.0) ** 2 / 2
    bins = (centre + torch.randint(-30, 30, (m, 4), generator=gen)).clamp(0, BINS - 1)
    return z.requires_grad_(), bins


@pytest.mark.parametrize("param", ["xyxy", "center_size"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_bbox_geo_value_and_gradient_equal_the_reference(param: str, temperature: float) -> None:
    z, bins = _random_boxes(5, 1)
    w = BBoxGeoWeights(smoothl1_weight=0.3, ciou_weight=1.0, parameterization=param, center_weight=2.0)
    pred = canonical_boxes(expected_coords(z, temperature))
    gt = canonical_boxes(bins.float() / 999)
    reg, ciou = bbox_geo_per_box(pred, gt, torch.ones(5, dtype=torch.bool), w)
    total = (0.3 * reg.sum() + ciou.sum()) / 5
    (grad,) = torch.autograd.grad(total, z)
    z_ref = z.detach().double().requires_grad_()
    parts = []
    for b in range(5):
        p = ref.canon([ref.ref_decode(z_ref[b, s], temperature) for s in range(4)])
        g = ref.canon([torch.tensor(int(bins[b, s]) / 999, dtype=torch.float64) for s in range(4)])
        r, c = ref.ref_geo_box(p, g, param, 2.0, 1.0)
        parts.append(0.3 * r + c)
    total_ref = sum(parts) / 5
    (grad_ref,) = torch.autograd.grad(total_ref, z_ref)
    close(total, total_ref)  # type: ignore[arg-type]
    close_grad(grad, grad_ref)


def test_ciou_of_identical_boxes_is_zero() -> None:
    box = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
    assert ciou_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)


# -- §3 bbox_size_aux ---------------------------------------------------------------------------------


def test_bbox_size_aux_worked_example() -> None:
    pred = torch.tensor([[0.1, 0.1, 0.3, 0.2]])
    gt = torch.tensor([[0.1, 0.1, 0.2, 0.2]])
    terms = bbox_size_per_box(pred, gt, torch.tensor([True]), BBoxSizeAuxWeights())
    assert terms.log_wh.item() == pytest.approx(0.2402, abs=1e-4)
    assert (0.05 * terms.log_wh).item() == pytest.approx(0.01201, abs=1e-5)
    big = torch.tensor([[0.2, 0.2, 0.8, 0.7]])  # 0.6 x 0.5
    over = bbox_size_per_box(
        big, gt, torch.tensor([True]), BBoxSizeAuxWeights(oversize_area_frac_threshold=0.25)
    )
    assert over.oversize.item() == pytest.approx(0.05, abs=1e-6)


def test_bbox_size_aux_value_and_gradient_equal_the_reference() -> None:
    z, bins = _random_boxes(4, 2)
    w = BBoxSizeAuxWeights(
        log_wh_weight=0.05,
        oversize_penalty_weight=0.5,
        oversize_area_frac_threshold=0.01,
        oversize_log_w_threshold=math.log(0.05),
        oversize_log_h_threshold=math.log(0.05),
    )
    valid = torch.tensor([True, True, True, False])
    pred = canonical_boxes(expected_coords(z, 1.0))
    gt = canonical_boxes(bins.float() / 999)
    t = bbox_size_per_box(pred, gt, valid, w)
    total = (0.05 * t.log_wh.sum() + 0.5 * t.oversize.sum()) / 3
    (grad,) = torch.autograd.grad(total, z)
    z_ref = z.detach().double().requires_grad_()
    parts, stats = [], []
    for b in range(3):
        p = ref.canon([ref.ref_decode(z_ref[b, s], 1.0) for s in range(4)])
        g = ref.canon([torch.tensor(int(bins[b, s]) / 999, dtype=torch.float64) for s in range(4)])
        lwh, over, pw, ph, la = ref.ref_size_box(p, g, 1e-6, math.log(0.05), math.log(0.05), 0.01)
        parts.append(0.05 * lwh + 0.5 * over)
        stats.append((pw, ph, la))
    total_ref = sum(parts) / 3
    (grad_ref,) = torch.autograd.grad(total_ref, z_ref)
    close(total, total_ref)  # type: ignore[arg-type]
    close_grad(grad, grad_ref)
    close(t.width.sum(), sum(s[0] for s in stats))  # type: ignore[arg-type]
    close(t.height.sum(), sum(s[1] for s in stats))  # type: ignore[arg-type]
    close(t.log_area.sum(), sum(s[2] for s in stats))  # type: ignore[arg-type]


# -- §4 adjacent repulsion ----------------------------------------------------------------------------


def test_adjacent_repulsion_worked_example() -> None:
    prev = torch.tensor([[100, 100, 300, 200]])
    z = torch.full((1, 4, BINS), NEG)
    for s, b in enumerate((100, 100, 300, 200)):
        z[0, s, b] = math.log(0.9)
        z[0, s, 900] = math.log(0.1)  # far from every previous bin
    pen, copy = repulsion_per_pair(z, prev, temperature=1.0, margin_ratio=0.05, copy_margin=0.8)
    assert copy.item() == pytest.approx(0.9, abs=1e-5)
    assert pen.item() == pytest.approx(0.01, abs=1e-6)
    assert (0.01 * pen).item() == pytest.approx(1e-4, abs=1e-8)
    z[0, 0, 100], z[0, 0, 103] = NEG, math.log(0.9)  # the x1 slot 3 bins off (hx = 10)
    pen, copy = repulsion_per_pair(z, prev, temperature=1.0, margin_ratio=0.05, copy_margin=0.8)
    assert copy.item() == pytest.approx(0.8232, abs=1e-4)
    assert pen.item() == pytest.approx(5.39e-4, abs=1e-6)


@pytest.mark.parametrize("ratio", [0.05, 0.005, 0.3])
def test_adjacent_repulsion_value_and_gradient_equal_the_reference(ratio: float) -> None:
    gen = torch.Generator().manual_seed(3)
    prev = torch.randint(0, BINS, (3, 4), generator=gen)
    z = torch.randn(3, 4, BINS, generator=gen)
    for p in range(3):  # put mass near the previous box, so the copy score exceeds the margin
        for s in range(4):
            z[p, s, int(prev[p, s])] += 9.0
    z.requires_grad_()
    pen, copy = repulsion_per_pair(z, prev, temperature=0.9, margin_ratio=ratio, copy_margin=0.3)
    (grad,) = torch.autograd.grad(pen.sum() / 3, z)
    z_ref = z.detach().double().requires_grad_()
    refs = [ref.ref_repulsion(z_ref[p], prev[p].tolist(), 0.9, ratio, 0.3) for p in range(3)]
    total_ref = sum(r[0] for r in refs) / 3
    (grad_ref,) = torch.autograd.grad(total_ref, z_ref)  # type: ignore[arg-type]
    close(pen.sum() / 3, total_ref)  # type: ignore[arg-type]
    close(copy, torch.stack([r[1] for r in refs]))
    close_grad(grad, grad_ref)


def test_pairs_stay_inside_a_sample_and_follow_the_filter() -> None:
    # three samples' answers; in a packed row they follow each other (rows 0, 0, 1)
    answers = [
        [("Cat", True), ("cat ", True), ("dog", True)],
        [("dog", True), ("Dog_(toy)", True)],
        [("bird", True)],
    ]
    links = [code for answer in answers for code in object_links(answer)]
    first, other, same_desc = int(BoxPair.FIRST), int(BoxPair.OTHER_DESC), int(BoxPair.SAME_DESC)
    assert links == [first, same_desc, other, first, other, first]
    valid = torch.ones(6, dtype=torch.bool)
    row = torch.tensor([0, 0, 0, 0, 0, 1])
    paired, applied = repulsion_pairs(valid, torch.tensor(links), row, "same_desc")
    assert paired.tolist() == [False, True, True, False, True, False]  # box 3 (sample 2's first) has none
    assert applied.tolist() == [False, True, False, False, False, False]
    assert repulsion_pairs(valid, torch.tensor(links), row, "global")[1].sum() == 3
    # a box whose previous box was dropped (another row, or not kept) is no pair
    paired, _ = repulsion_pairs(
        torch.tensor([True, False, True]),
        torch.tensor([first, same_desc, same_desc]),
        torch.tensor([0, -1, 0]),
        "global",
    )
    assert paired.tolist() == [False, False, False]
    # a poly is no box: the box after it has no previous box
    assert object_links([("a", True), ("a", False), ("a", True)]) == [first, int(BoxPair.NONE), first]
    assert normalize_desc("  Dog_(toy)/Big  ") == "dog toy big"
    with pytest.raises(ValueError, match="same_desc or global"):
        repulsion_pairs(valid, torch.tensor(links), row, "nearest")
