"""The gradient monitor inside the one pass (``coord_loss`` / ``linear_coord_loss`` with
``grad_monitor=True``): each term's gradient norm, its cosine to the total gradient and the share of
conflicting pairs equal a slow reference (each term's loss written separately from the formulas, its
gradient with respect to the logits by plain autograd, float64), with materialised logits and from
hidden states, padded and packed layouts, T = 1 and T != 1; off: no Gram statistic and the same loss and
gradient, bit for bit; sync-free."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from coordexp.functional import CoordLossConfig, CoordSlice, SyncCounter, coord_loss, next_token_targets
from coordexp.functional.bbox_geo import BBoxGeoWeights
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights
from coordexp.functional.box_groups import box_groups
from coordexp.functional.box_terms import BoxBatch, BoxTerms
from coordexp.functional.grad_monitor import GRAM_PREFIX, MonitorValues, monitor_values
from coordexp.functional.linear_pass import OutputHead, linear_coord_loss
from tests.functional import objective_reference as ref
from tests.functional.stage1_reference import soft_target
from tests.functional.toy_data import VOCAB, coord_ids

GEO = BBoxGeoWeights(smoothl1_weight=0.5, ciou_weight=1.0)
SIZE = BBoxSizeAuxWeights(log_wh_weight=0.05, oversize_penalty_weight=0.2, oversize_area_frac_threshold=0.05)
BOX_DEN = 3.0


def _labels(layout: str, ids: list[int]) -> Tensor:
    c = [ids[b] for b in (110, 220, 480, 610, 300, 350, 700, 900, 10, 20, 30, 40)]
    t2, t5, t6, t7 = [tok for tok in range(VOCAB) if tok not in set(ids)][:4]
    if layout == "padded":
        rows = [
            [t5, t6, *c[0:4], t7, *c[4:8], t2],
            [t5, *c[8:12], t2, -100, -100, -100, -100, -100, -100],
            [t5, t6, t7, *c[0:3], t2, -100, -100, -100, -100, -100],
        ]
    else:
        rows = [[t5, *c[0:4], t2, t5, t6, *c[4:8], t7, *c[8:12], t2, t5, t6, t2]]
    return torch.tensor(rows)


def _logits(targets: Tensor, ids: list[int], seed: int) -> Tensor:
    """Random logits peaked near each coord target's bin; text rows with a realistic coord mass."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(targets.shape[0], VOCAB, generator=gen) * 2
    idx = torch.tensor(ids)
    bin_of = {tok: k for k, tok in enumerate(ids)}
    grid = torch.arange(len(ids), dtype=torch.float32)
    for i, tok in enumerate(targets.tolist()):
        if tok in bin_of:
            centre = bin_of[tok] + int(torch.randint(-25, 25, (), generator=gen))
            logits[i, idx] += 6.0 - ((grid - centre) / 15.0) ** 2 / 2
        elif tok != -100:
            logits[i, idx] -= 4.0
            logits[i, tok] += 3.0
    return logits


def _setup(
    layout: str, temperature: float, ids_layout: str = "permuted"
) -> tuple[Tensor, Tensor, CoordSlice, list[int], BoxBatch]:
    ids = coord_ids(ids_layout)
    labels = _labels(layout, ids)
    targets2d = next_token_targets(labels).view(labels.shape[0], -1)
    coord = CoordSlice.from_ids(ids)
    groups = box_groups(targets2d, coord)
    boxes = BoxBatch(BoxTerms(temperature, GEO, SIZE), groups, torch.tensor(BOX_DEN))
    return targets2d, targets2d.reshape(-1), coord, ids, boxes


def _cfg(temperature: float) -> CoordLossConfig:
    return CoordLossConfig(ce_weight=0.3, temperature=temperature, text_gate_weight=0.4)


def reference_terms(
    x: Tensor,
    targets2d: Tensor,
    ids: list[int],
    cfg: CoordLossConfig,
    boxes: bool = True,
    types: Tensor | None = None,
) -> dict[str, Tensor]:
    """Each term of the loss as it enters it (weight and denominator included), float64, from the
    formulas, differentiable in ``x`` ``[N, V]``; with ``types`` the text gate's positions are the
    DESC (1) / FORMAT (3) ones."""
    targets = targets2d.reshape(-1)
    idx = torch.tensor(ids)
    bin_of = {tok: k for k, tok in enumerate(ids)}
    t = cfg.temperature
    coord_rows = [i for i, tok in enumerate(targets.tolist()) if tok in bin_of]
    base_rows = [i for i, tok in enumerate(targets.tolist()) if tok != -100 and tok not in bin_of]
    n_coord = max(len(coord_rows), 1)
    terms = {name: x.new_zeros(()) for name in ("soft_ce", "w1", "ce", "gate")}
    for i in coord_rows:
        u = ref.sanitize(x[i])
        k = bin_of[int(targets[i])]
        z = u[idx] / t
        logp = torch.log_softmax(z, 0)
        p = logp.exp()
        q = soft_target(k, len(ids), cfg.target_sigma, cfg.target_truncate).double()
        terms["soft_ce"] = terms["soft_ce"] - (q * logp).sum()
        terms["w1"] = terms["w1"] + (p.cumsum(0) - q.cumsum(0)).abs().sum() / len(ids)
        terms["ce"] = terms["ce"] - logp[k]
        gate = torch.logsumexp(u / t, 0) - torch.logsumexp(z, 0)
        terms["gate"] = terms["gate"] + gate.clamp(min=0)
    out = {
        "base_ce": F.cross_entropy(x[base_rows], targets[base_rows], reduction="sum")
        / max(len(base_rows), 1),
        "soft_ce": cfg.soft_ce_weight * terms["soft_ce"] / n_coord,
        "w1": cfg.w1_weight * terms["w1"] / n_coord,
        "ce": cfg.ce_weight * terms["ce"] / n_coord,
        "gate": cfg.gate_weight * terms["gate"] / n_coord,
    }
    text_rows = base_rows if types is None else [i for i in base_rows if int(types[i]) in (1, 3)]
    g_sum, _ = ref.ref_text_gate(x, text_rows, ids, t)
    out["text_gate"] = cfg.text_gate_weight * g_sum / max(len(text_rows), 1)
    if not boxes:
        return out
    positions, bins, _, _ = ref.ref_groups(targets2d, ids)
    geo = size = x.new_zeros(())
    for pos, gt_bins in zip(positions, bins, strict=True):
        p_box = ref.canon([ref.ref_decode(x[q, idx], t) for q in pos])
        g_box = ref.canon([torch.tensor(b / 999, dtype=torch.float64) for b in gt_bins])
        reg, ciou = ref.ref_geo_box(p_box, g_box, "xyxy", 1.0, 1.0)
        lwh, over, _, _, _ = ref.ref_size_box(
            p_box, g_box, SIZE.eps, None, None, SIZE.oversize_area_frac_threshold
        )
        geo = geo + GEO.smoothl1_weight * reg + GEO.ciou_weight * ciou
        size = size + SIZE.log_wh_weight * lwh + SIZE.oversize_penalty_weight * over
    out["bbox_geo"] = geo / BOX_DEN
    out["bbox_size_aux"] = size / BOX_DEN
    return out


def reference_values(
    logits: Tensor,
    targets2d: Tensor,
    ids: list[int],
    cfg: CoordLossConfig,
    names: tuple[str, ...] | None = None,
    types: Tensor | None = None,
) -> dict:
    """Norms, cosines to the total and the conflicting share from each term's own autograd gradient
    (of the terms ``names``, default all)."""
    x = logits.detach().double().requires_grad_()
    terms = reference_terms(x, targets2d, ids, cfg, types=types)
    if names is not None:
        terms = {name: terms[name] for name in names}
    grads = {
        name: torch.autograd.grad(value, x, retain_graph=True)[0].reshape(-1) for name, value in terms.items()
    }
    total = sum(grads.values())
    assert isinstance(total, Tensor)
    norms = {name: float(g.norm()) for name, g in grads.items()}
    cosines = {name: float(g @ total) / (norms[name] * float(total.norm())) for name, g in grads.items()}
    active = [name for name in grads if norms[name] > 0]
    pairs = [(a, b) for i, a in enumerate(active) for b in active[i + 1 :]]
    negative = sum(1 for a, b in pairs if float(grads[a] @ grads[b]) < 0)
    return {"norms": norms, "cosines": cosines, "total": float(total.norm()), "frac": negative / len(pairs)}


def _host(stats: dict[str, Tensor]) -> MonitorValues:
    values = monitor_values({key: float(v) for key, v in stats.items()})
    assert values is not None
    return values


def _assert_match(got: MonitorValues, want: dict) -> None:
    assert set(got.norms) == set(want["norms"])
    for name, norm in want["norms"].items():
        assert norm > 0, name
        assert got.norms[name] == pytest.approx(norm, rel=1e-5), name
        # a cosine is bounded: 1e-5 of its range (W1's sign(CDF gap) differs at near-ties in fp32)
        assert got.cosines[name] == pytest.approx(want["cosines"][name], abs=1e-5), name
    assert got.total_norm == pytest.approx(want["total"], rel=1e-5)
    assert got.neg_pair_frac == pytest.approx(want["frac"], abs=1e-12)


def _types(targets: Tensor, ids: list[int]) -> Tensor:
    """Token types of the targets: COORD (2) at coord ids, text alternating DESC (1) / FORMAT (3), the
    first text target IGNORE-typed (-1: no text-gate position)."""
    types = torch.full_like(targets, -1)
    text = [i for i, t in enumerate(targets.tolist()) if t != -100 and t not in set(ids)]
    for j, i in enumerate(text[1:]):
        types[i] = 1 if j % 2 else 3
    types[torch.isin(targets, torch.tensor(ids))] = 2
    return types


@pytest.mark.parametrize("typed", [False, True], ids=["no_types", "types"])
@pytest.mark.parametrize("ids_layout", ["permuted", "consecutive"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_monitor_equals_the_slow_reference(
    layout: str, temperature: float, ids_layout: str, typed: bool
) -> None:
    targets2d, targets, coord, ids, boxes = _setup(layout, temperature, ids_layout)
    cfg = _cfg(temperature)
    logits = _logits(targets, ids, 7)
    types = _types(targets, ids) if typed else None
    leaf = logits.clone().requires_grad_()
    loss, stats = coord_loss(
        leaf, targets, coord, cfg, base_ce=True, boxes=boxes, chunk_size=5, grad_monitor=True, types=types
    )
    (grad,) = torch.autograd.grad(loss, leaf)
    got = _host(stats)
    assert list(got.norms) == [
        "base_ce",
        "soft_ce",
        "w1",
        "ce",
        "gate",
        "text_gate",
        "bbox_geo",
        "bbox_size_aux",
    ]
    _assert_match(got, reference_values(logits, targets2d, ids, cfg, types=types))
    # the monitored terms add up to the gradient the pass hands to autograd
    assert got.total_norm == pytest.approx(float(grad.double().norm()), rel=1e-5)


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_monitor_without_logits_equals_the_slow_reference(layout: str, temperature: float) -> None:
    targets2d, targets, coord, ids, boxes = _setup(layout, temperature)
    cfg = _cfg(temperature)
    gen = torch.Generator().manual_seed(11)
    hidden = torch.randn(targets.shape[0], 16, generator=gen).requires_grad_()
    weight = (torch.randn(VOCAB, 16, generator=gen) * 0.7).requires_grad_()
    loss, stats = linear_coord_loss(
        hidden,
        OutputHead(weight),
        targets,
        coord,
        cfg,
        base_ce=True,
        boxes=boxes,
        chunk_size=4,
        grad_monitor=True,
    )
    torch.autograd.grad(loss, (hidden, weight))
    logits = F.linear(hidden.detach(), weight.detach())
    _assert_match(_host(stats), reference_values(logits, targets2d, ids, cfg))


def test_monitor_off_writes_nothing_and_changes_nothing() -> None:
    _, targets, coord, ids, boxes = _setup("packed", 0.8)
    cfg = _cfg(0.8)
    logits = _logits(targets, ids, 3)
    runs = []
    for monitor in (False, True):
        leaf = logits.clone().requires_grad_()
        loss, stats = coord_loss(leaf, targets, coord, cfg, base_ce=True, boxes=boxes, grad_monitor=monitor)
        (grad,) = torch.autograd.grad(loss, leaf)
        runs.append((loss, grad, stats))
    (off_loss, off_grad, off_stats), (on_loss, on_grad, on_stats) = runs
    assert not any(key.startswith(GRAM_PREFIX) for key in off_stats)
    assert any(key.startswith(GRAM_PREFIX) for key in on_stats)
    assert torch.equal(off_loss, on_loss) and torch.equal(off_grad, on_grad)
    for key, value in off_stats.items():
        assert torch.equal(value, on_stats[key]), key


def test_no_gradient_no_monitor() -> None:
    _, targets, coord, ids, _ = _setup("padded", 1.0)
    with torch.no_grad():
        _, stats = coord_loss(
            _logits(targets, ids, 1), targets, coord, _cfg(1.0), base_ce=True, grad_monitor=True
        )
    assert not any(key.startswith(GRAM_PREFIX) for key in stats)


def test_a_term_without_gradient_has_norm_0_and_no_cosine() -> None:
    # no box term, no text target: the text gate is on but has nothing to pull on
    ids = coord_ids("consecutive")
    targets = torch.tensor([ids[5], ids[7], -100, ids[900]])
    logits = _logits(targets, ids, 4)
    leaf = logits.clone().requires_grad_()
    loss, stats = coord_loss(
        leaf, targets, CoordSlice.from_ids(ids), _cfg(1.0), base_ce=True, grad_monitor=True
    )
    loss.backward()
    got = _host(stats)
    assert got.norms["base_ce"] == 0.0 and got.norms["text_gate"] == 0.0
    assert "base_ce" not in got.cosines and "text_gate" not in got.cosines
    assert all(math.isfinite(v) for v in (*got.norms.values(), *got.cosines.values(), got.total_norm))


@pytest.mark.parametrize("linear", [False, True], ids=["logits", "no_logits"])
def test_monitor_is_sync_free(linear: bool) -> None:
    targets2d, targets, coord, ids, _ = _setup("packed", 0.8)
    logits = _logits(targets, ids, 5)
    hidden = torch.randn(targets.shape[0], 8).requires_grad_()
    weight = torch.randn(VOCAB, 8).requires_grad_()
    leaf = logits.clone().requires_grad_()
    with SyncCounter(count_host_copies=True) as counter:
        groups = box_groups(targets2d, coord)
        boxes = BoxBatch(BoxTerms(0.8, GEO, SIZE), groups, groups.n_boxes.clamp(min=1.0))
        if linear:
            loss, _ = linear_coord_loss(
                hidden,
                OutputHead(weight),
                targets,
                coord,
                _cfg(0.8),
                base_ce=True,
                boxes=boxes,
                grad_monitor=True,
            )
        else:
            loss, _ = coord_loss(
                leaf, targets, coord, _cfg(0.8), base_ce=True, boxes=boxes, grad_monitor=True
            )
        loss.backward()
    assert counter.count == 0, counter.ops


def test_monitor_of_the_coord_only_pass_equals_the_slow_reference() -> None:
    """No full-vocabulary term (no base CE, gate or text gate: the two-pass path's coord terms): the
    parts are the coord columns' only."""
    targets2d, targets, coord, ids, boxes = _setup("packed", 0.8)
    cfg = CoordLossConfig(ce_weight=0.3, gate_weight=0.0, temperature=0.8)
    logits = _logits(targets, ids, 2)
    leaf = logits.clone().requires_grad_()
    loss, stats = coord_loss(leaf, targets, coord, cfg, boxes=boxes, chunk_size=6, grad_monitor=True)
    loss.backward()
    names = ("soft_ce", "w1", "ce", "bbox_geo", "bbox_size_aux")
    got = _host(stats)
    assert tuple(got.norms) == names
    _assert_match(got, reference_values(logits, targets2d, ids, cfg, names))


def test_non_finite_logits_give_no_monitor_values() -> None:
    """A base-CE row with an infinite logit has a NaN gradient (as cross-entropy gives): the step's
    monitor values are dropped, never logged as NaN."""
    _, targets, coord, ids, _ = _setup("padded", 1.0)
    logits = _logits(targets, ids, 6)
    base_row = next(i for i, t in enumerate(targets.tolist()) if t != -100 and t not in set(ids))
    logits[base_row, 0] = math.inf
    leaf = logits.clone().requires_grad_()
    _, stats = coord_loss(leaf, targets, coord, _cfg(1.0), base_ce=True, grad_monitor=True)
    assert any(key.startswith(GRAM_PREFIX) for key in stats)
    assert monitor_values({key: float(v) for key, v in stats.items()}) is None


def test_monitor_of_bf16_logits_equals_the_slow_reference() -> None:
    """bf16 logits (as a model gives them): the pass and the monitor work in fp32 on their values."""
    targets2d, targets, coord, ids, boxes = _setup("packed", 0.8)
    logits = _logits(targets, ids, 7).to(torch.bfloat16)
    leaf = logits.clone().requires_grad_()
    loss, stats = coord_loss(leaf, targets, coord, _cfg(0.8), base_ce=True, boxes=boxes, grad_monitor=True)
    loss.backward()
    _assert_match(_host(stats), reference_values(logits.float(), targets2d, ids, _cfg(0.8)))


def test_a_further_box_part_is_monitored_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A part ``box_terms_value`` gains (adjacent repulsion is added there) is monitored without a
    change to the monitor: here a stand-in part ``Σ z^2 / 10^4`` over the valid box slots' coord logits."""
    from coordexp.functional import box_terms as box_module
    from coordexp.functional import loss_plan

    original = box_module.box_terms_value

    def with_extra(z: Tensor, boxes: BoxBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        parts, stats = original(z, boxes)
        valid = boxes.groups.valid.repeat_interleave(4).to(z.dtype)  # padded boxes' slots are not boxes
        return {**parts, "adjacent_repulsion": ((z * z).sum(-1) * valid).sum() / 1e4}, stats

    monkeypatch.setattr(box_module, "box_terms_value", with_extra)
    monkeypatch.setattr(loss_plan, "box_terms_value", with_extra)
    targets2d, targets, coord, ids, boxes = _setup("padded", 1.0)
    cfg = _cfg(1.0)
    logits = _logits(targets, ids, 9)
    leaf = logits.clone().requires_grad_()
    loss, stats = coord_loss(leaf, targets, coord, cfg, base_ce=True, boxes=boxes, grad_monitor=True)
    (grad,) = torch.autograd.grad(loss, leaf)
    got = _host(stats)
    assert list(got.norms)[-1] == "adjacent_repulsion"
    x = logits.double().requires_grad_()
    positions = [p for box in ref.ref_groups(targets2d, ids)[0] for p in box]
    z = x[positions][:, torch.tensor(ids)]
    (extra,) = torch.autograd.grad((z * z).sum() / 1e4, x)
    assert got.norms["adjacent_repulsion"] == pytest.approx(float(extra.norm()), rel=1e-5)
    assert got.total_norm == pytest.approx(float(grad.double().norm()), rel=1e-5)
