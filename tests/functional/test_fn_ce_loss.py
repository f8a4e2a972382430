"""ce_loss (the coord-loss-off objective of the one-pass seam): the CE over every supervised target as
``F.cross_entropy`` gives it, in value and gradient, plus every Stage-1 statistic, sync-free."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stage1_reference import assert_stats_match, reference_stats
from toy_data import coord_ids, make_batch

from coordexp.functional import CoordLossConfig, CoordSlice, SyncCounter, ce_loss

N = 37
CONFIGS = {
    "default": CoordLossConfig(),
    "tempered": CoordLossConfig(ce_weight=0.5, gate_weight=0.3, temperature=0.6, target_sigma=1.2),
    "no-gate": CoordLossConfig(gate_weight=0.0),
}


def run(logits: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor, dict]:
    leaf = logits.detach().clone().requires_grad_(True)
    loss, stats = ce_loss(leaf, *args, **kwargs)  # type: ignore[arg-type]
    loss.backward()
    assert leaf.grad is not None
    return loss.detach(), leaf.grad, stats


def reference(
    logits: torch.Tensor, targets: torch.Tensor, denominator: float
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = logits.detach().float().clone().requires_grad_(True)
    loss = F.cross_entropy(leaf, targets, ignore_index=-100, reduction="sum") / denominator
    loss.backward()
    assert leaf.grad is not None
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("chunk", [1, 7, N])
@pytest.mark.parametrize("with_coord", [True, False], ids=["coord", "no_coord"])
@pytest.mark.parametrize("denominator", [None, 123.0, "tensor"])
def test_value_and_gradient_equal_cross_entropy(chunk: int, with_coord: bool, denominator: object) -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=3)
    n_sup = float((batch.targets != -100).sum())
    den = {None: None, 123.0: 123.0, "tensor": torch.tensor(77)}[denominator]  # type: ignore[index]
    loss, grad, stats = run(
        batch.logits,
        batch.targets,
        denominator=den,
        coord=CoordSlice.from_ids(batch.ids) if with_coord else None,
        coord_cfg=CoordLossConfig(),
        types=batch.types,
        mass=True,
        chunk_size=chunk,
    )
    want_den = n_sup if den is None else float(den)
    ref_loss, ref_grad = reference(batch.logits, batch.targets, want_den)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats["base_ce_sum"], ref_loss * want_den, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_statistics_equal_the_slow_reference(layout: str, name: str) -> None:
    """Every statistic but the CE sum is what the two-pass path's ``stage1_stats`` reports (the slow
    reference checks that); the coord terms are diagnostics only: the gradient is the CE's alone."""
    cfg = CONFIGS[name]
    batch = make_batch(N, coord_ids(layout), seed=11)
    _, grad, stats = run(
        batch.logits,
        batch.targets,
        coord=CoordSlice.from_ids(batch.ids),
        coord_cfg=cfg,
        types=batch.types,
        mass=True,
        chunk_size=7,
    )
    ref = reference_stats(batch.logits, batch.targets, batch.ids, types=batch.types, mass=True, cfg=cfg)
    ref_loss, ref_grad = reference(batch.logits, batch.targets, 1.0)
    ref["base_ce_sum"] = float(ref_loss)
    assert_stats_match(stats, ref, tol=2e-5)
    n_sup = float((batch.targets != -100).sum())
    torch.testing.assert_close(grad, ref_grad / n_sup, rtol=1e-5, atol=1e-7)


def test_bf16_logits_keep_one_bf16_gradient_and_match_fp32_cross_entropy() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=5, dtype=torch.bfloat16)
    loss, grad, _ = run(batch.logits, batch.targets, coord=CoordSlice.from_ids(batch.ids), chunk_size=7)
    ref_loss, ref_grad = reference(batch.logits, batch.targets, float((batch.targets != -100).sum()))
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)  # fp32 math on the bf16 values
    torch.testing.assert_close(grad.float(), ref_grad, rtol=1e-2, atol=1e-4)


def test_non_finite_rows_give_what_cross_entropy_gives() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=9)
    rows = (batch.targets != -100).nonzero().flatten().tolist()
    logits = batch.logits.clone()
    logits[rows[0], 5] = float("nan")
    logits[rows[1], int(batch.targets[rows[1]])] = float("inf")
    logits[rows[2], 7] = float("-inf")
    loss, grad, _ = run(
        logits, batch.targets, coord=CoordSlice.from_ids(batch.ids), coord_cfg=CoordLossConfig()
    )
    ref_loss, ref_grad = reference(logits, batch.targets, float((batch.targets != -100).sum()))
    torch.testing.assert_close(loss, ref_loss, equal_nan=True)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_forward_and_backward_are_sync_free() -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=2)
    leaf = batch.logits.clone().requires_grad_(True)
    with SyncCounter() as counter:
        loss, _ = ce_loss(
            leaf,
            batch.targets,
            denominator=torch.tensor(50),
            coord=CoordSlice.from_ids(batch.ids),
            coord_cfg=CoordLossConfig(temperature=0.5),
            types=batch.types,
            mass=True,
            chunk_size=7,
        )
        loss.backward()
    assert counter.count == 0, counter.ops
