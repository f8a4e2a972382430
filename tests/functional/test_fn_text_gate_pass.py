"""The text gate inside the one pass (``coord_loss`` / ``linear_coord_loss`` with ``text_gate_weight``):
loss and gradient equal the pass without it plus a float64 slow reference of the text gate, with and
without token types, T = 1 and T != 1, consecutive and permuted coord ids; sync-free."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coordexp.functional import CoordLossConfig, CoordSlice, SyncCounter, coord_loss
from coordexp.functional.linear_pass import OutputHead, linear_coord_loss
from tests.functional import objective_reference as ref
from tests.functional.toy_data import coord_ids, make_batch


def _batch(layout: str, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    batch = make_batch(40, coord_ids(layout), seed=seed)
    logits = batch.logits.clone()
    ids = torch.tensor(batch.ids)
    is_coord = torch.isin(batch.targets, ids)
    text = (batch.targets != -100) & ~is_coord
    # 1000 of the 1200 toy ids are coord ids: lower their logits at text rows to a realistic mass
    logits[text.nonzero().squeeze(-1).unsqueeze(-1), ids.unsqueeze(0)] -= 4.0
    return logits, batch.targets, batch.types, batch.ids


def _eligible(
    targets: torch.Tensor, types: torch.Tensor | None, ids: list[int], eos: int | None
) -> list[int]:
    rows = []
    for i, t in enumerate(targets.tolist()):
        if t == -100 or t in set(ids) or t == eos:
            continue
        if types is not None and int(types[i]) not in (1, 3):
            continue
        rows.append(i)
    return rows


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("typed", [True, False], ids=["types", "no_types"])
def test_text_gate_in_the_pass_equals_the_reference(layout: str, temperature: float, typed: bool) -> None:
    logits, targets, types, ids = _batch(layout)
    eos = int(targets[(targets != -100) & ~torch.isin(targets, torch.tensor(ids))][0])
    cfg = CoordLossConfig(ce_weight=0.2, temperature=temperature, text_gate_weight=0.3)
    plain_cfg = cfg.model_copy(update={"text_gate_weight": 0.0})
    coord = CoordSlice.from_ids(ids)
    use_types = types if typed else None
    leaf = logits.clone().requires_grad_()
    loss, stats = coord_loss(
        leaf, targets, coord, cfg, base_ce=True, types=use_types, eos_token_id=eos, chunk_size=7
    )
    (grad,) = torch.autograd.grad(loss, leaf)
    plain_leaf = logits.clone().requires_grad_()
    plain, _ = coord_loss(plain_leaf, targets, coord, plain_cfg, base_ce=True, types=use_types, chunk_size=7)
    (plain_grad,) = torch.autograd.grad(plain, plain_leaf)
    rows = _eligible(targets, use_types, ids, eos)
    assert stats["n_text_gate"].item() == len(rows) > 0
    x64 = logits.double().requires_grad_()
    g_ref, m_ref = ref.ref_text_gate(x64, rows, ids, temperature)
    term = 0.3 * g_ref / len(rows)
    (term_grad,) = torch.autograd.grad(term, x64)
    torch.testing.assert_close(stats["text_gate_sum"].double(), g_ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(stats["text_coord_mass_sum"].double(), m_ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(loss.double(), plain.double() + term.detach(), rtol=1e-5, atol=0)
    want = plain_grad.double() + term_grad
    torch.testing.assert_close(grad.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_text_gate_worked_example_through_the_pass() -> None:
    ids = coord_ids("consecutive")
    x = torch.full((3, 1200), -1e4)
    x[0, 5], x[0, 100] = torch.log(torch.tensor(4.0)), 0.0  # m = 0.2
    x[1, 5], x[1, 100] = 0.0, 0.0  # m = 0.5
    x[2, 100] = 0.0  # a coord target (the batch needs one)
    targets = torch.tensor([5, 6, 100])
    cfg = CoordLossConfig(
        soft_ce_weight=0.0, w1_weight=0.0, gate_weight=0.0, ce_weight=0.0, text_gate_weight=0.1
    )
    loss, stats = coord_loss(x, targets, CoordSlice.from_ids(ids), cfg)
    assert stats["text_gate_sum"].item() / 2 == pytest.approx(0.4581, abs=1e-4)
    assert loss.item() == pytest.approx(0.04581, abs=1e-5)
    assert stats["text_coord_mass_sum"].item() / 2 == pytest.approx(0.35, abs=1e-6)


def test_no_coord_target_no_text_gate() -> None:
    logits, targets, _, ids = _batch("consecutive")
    targets = torch.where(torch.isin(targets, torch.tensor(ids)), -100, targets)
    cfg = CoordLossConfig(text_gate_weight=0.5)
    leaf = logits.clone().requires_grad_()
    loss, _ = coord_loss(leaf, targets, CoordSlice.from_ids(ids), cfg)
    (grad,) = torch.autograd.grad(loss, leaf)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_text_gate_without_logits_equals_the_materialised_pass(temperature: float) -> None:
    _, targets, types, ids = _batch("permuted", seed=5)
    gen = torch.Generator().manual_seed(9)
    hidden = torch.randn(targets.shape[0], 16, generator=gen).requires_grad_()
    weight = (torch.randn(1200, 16, generator=gen) * 0.5).requires_grad_()
    cfg = CoordLossConfig(temperature=temperature, text_gate_weight=0.3)
    coord = CoordSlice.from_ids(ids)
    loss, stats = linear_coord_loss(
        hidden, OutputHead(weight), targets, coord, cfg, base_ce=True, types=types
    )
    grads = torch.autograd.grad(loss, (hidden, weight))
    h2, w2 = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    want, want_stats = coord_loss(F.linear(h2, w2), targets, coord, cfg, base_ce=True, types=types)
    want_grads = torch.autograd.grad(want, (h2, w2))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=0)
    torch.testing.assert_close(stats["text_gate_sum"], want_stats["text_gate_sum"], rtol=1e-5, atol=0)
    for got, exp in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5 * exp.abs().max().item())


def test_text_gate_is_sync_free() -> None:
    logits, targets, types, ids = _batch("permuted")
    leaf = logits.clone().requires_grad_()
    cfg = CoordLossConfig(temperature=0.7, text_gate_weight=0.3)
    with SyncCounter(count_host_copies=True) as counter:
        loss, _ = coord_loss(
            leaf, targets, CoordSlice.from_ids(ids), cfg, base_ce=True, types=types, eos_token_id=2
        )
        loss.backward()
    assert counter.count == 0, counter.ops
