"""coord_loss (one autograd.Function): loss, every term and the gradient against autograd on a reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from stage1_reference import assert_stats_match, reference_grad, reference_stats
from toy_data import coord_ids, make_batch

from coordexp.functional import STAT_KEYS, CoordLossConfig, CoordSlice, coord_loss, stage1_stats

N = 37
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-6

CONFIGS = {
    "default": CoordLossConfig(),
    "all-terms-tempered": CoordLossConfig(
        ce_weight=0.5, soft_ce_weight=0.7, w1_weight=2.0, gate_weight=0.3, temperature=0.6, target_sigma=1.2
    ),
    "truncated-hot": CoordLossConfig(ce_weight=1.0, temperature=3.0, target_sigma=2.5, target_truncate=2),
    "no-gate": CoordLossConfig(gate_weight=0.0, ce_weight=0.2),
    "w1-only": CoordLossConfig(soft_ce_weight=0.0, gate_weight=0.0, w1_weight=1.0),
}


def run_loss(
    logits: torch.Tensor, *args: object, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    leaf = logits.detach().clone().requires_grad_(True)
    loss, stats = coord_loss(leaf, *args, **kwargs)  # type: ignore[arg-type]
    loss.backward()
    assert leaf.grad is not None
    return loss.detach(), leaf.grad, stats


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("chunk", [1, 7, N])
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("base_ce", [False, True])
def test_loss_and_grad_match_reference(layout: str, chunk: int, name: str, base_ce: bool) -> None:
    cfg = CONFIGS[name]
    batch = make_batch(N, coord_ids(layout), seed=17)
    coord = CoordSlice.from_ids(batch.ids)
    loss, grad, stats = run_loss(
        batch.logits,
        batch.targets,
        coord,
        cfg,
        base_ce=base_ce,
        chunk_size=chunk,
        types=batch.types,
        mass=True,
    )
    ref_loss, ref_grad = reference_grad(batch.logits, batch.targets, batch.ids, cfg, base_ce=base_ce)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    ref_stats = reference_stats(
        batch.logits, batch.targets, batch.ids, types=batch.types, mass=True, cfg=cfg, base_ce=base_ce
    )
    assert_stats_match(stats, ref_stats)


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
def test_each_term_gradient_separately(layout: str) -> None:
    batch = make_batch(N, coord_ids(layout), seed=23)
    coord = CoordSlice.from_ids(batch.ids)
    terms = (
        CoordLossConfig(ce_weight=1.0, soft_ce_weight=0.0, w1_weight=0.0, gate_weight=0.0),
        CoordLossConfig(ce_weight=0.0, soft_ce_weight=1.0, w1_weight=0.0, gate_weight=0.0),
        CoordLossConfig(ce_weight=0.0, soft_ce_weight=0.0, w1_weight=1.0, gate_weight=0.0),
        CoordLossConfig(ce_weight=0.0, soft_ce_weight=0.0, w1_weight=0.0, gate_weight=1.0),
    )
    for single in terms:
        for temperature in (1.0, 0.5):
            cfg = CoordLossConfig(**{**dict(single), "temperature": temperature})
            loss, grad, _ = run_loss(batch.logits, batch.targets, coord, cfg, chunk_size=5)
            ref_loss, ref_grad = reference_grad(batch.logits, batch.targets, batch.ids, cfg)
            torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(grad, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)
            assert float(ref_grad.abs().sum()) > 0


def test_loss_equals_weighted_stats() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=4)
    cfg = CoordLossConfig(ce_weight=0.25, w1_weight=3.0, gate_weight=0.5)
    loss, stats = coord_loss(batch.logits, batch.targets, CoordSlice.from_ids(batch.ids), cfg)
    expected = (
        0.25 * stats["ce_sum"] + stats["soft_ce_sum"] + 3.0 * stats["w1_sum"] + 0.5 * stats["gate_sum"]
    ) / stats["n_coord"]
    torch.testing.assert_close(loss, expected)
    same = stage1_stats(
        batch.logits, batch.targets, coord=CoordSlice.from_ids(batch.ids), coord_cfg=cfg, top5=True
    )
    for key in STAT_KEYS:
        torch.testing.assert_close(stats[key], same[key])


def test_base_ce_equals_cross_entropy_over_noncoord_targets() -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=8)
    coord = CoordSlice.from_ids(batch.ids)
    cfg = CoordLossConfig(soft_ce_weight=0.0, w1_weight=0.0, gate_weight=0.0)
    loss, grad, stats = run_loss(batch.logits, batch.targets, coord, cfg, base_ce=True, chunk_size=6)
    masked = batch.targets.clone()
    masked[torch.isin(masked, torch.tensor(batch.ids))] = -100
    leaf = batch.logits.clone().requires_grad_(True)
    expected = F.cross_entropy(leaf, masked)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, leaf.grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert float(stats["n_base"]) == float((masked != -100).sum())
    torch.testing.assert_close(stats["base_ce_sum"] / stats["n_base"], expected.detach())


def test_custom_denominators_and_grad_output_scaling() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=9)
    coord = CoordSlice.from_ids(batch.ids)
    cfg = CoordLossConfig(ce_weight=1.0, temperature=0.9)
    leaf = batch.logits.clone().requires_grad_(True)
    loss, _ = coord_loss(
        leaf,
        batch.targets,
        coord,
        cfg,
        base_ce=True,
        coord_denominator=torch.tensor(50.0),
        base_denominator=7,
    )
    (3.0 * loss).backward()
    ref_loss, ref_grad = reference_grad(
        batch.logits,
        batch.targets,
        batch.ids,
        cfg,
        base_ce=True,
        coord_denominator=50.0,
        base_denominator=7.0,
    )
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(leaf.grad, 3.0 * ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def _extreme_batch(layout: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    batch = make_batch(N, coord_ids(layout), seed=31)
    logits, targets, ids = batch.logits.clone(), batch.targets, batch.ids
    coord_rows = [i for i in range(N) if int(targets[i]) in set(ids)]
    other_rows = [i for i in range(N) if int(targets[i]) == -100]
    specials = [math.nan, math.inf, -math.inf, 2e4, -3e4, 1e4, -1e4, 1e5]
    outside = sorted(set(range(logits.shape[-1])) - set(ids))
    for j, i in enumerate(coord_rows[:6]):
        logits[i, ids[(7 * j) % len(ids)]] = specials[j % len(specials)]
        logits[i, ids[(7 * j + 3) % len(ids)]] = specials[(j + 3) % len(specials)]
        logits[i, outside[j]] = specials[(j + 5) % len(specials)]  # outside the coord slice
    logits[coord_rows[6], :] = math.nan
    logits[coord_rows[7], :] = math.inf
    logits[coord_rows[8], ids] = -math.inf
    for i in other_rows[:3]:
        logits[i, outside[:5]] = math.nan
    return logits, targets, ids


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("chunk", [1, 7, N])
def test_nonfinite_logits_never_nan(layout: str, chunk: int) -> None:
    logits, targets, ids = _extreme_batch(layout)
    coord = CoordSlice.from_ids(ids)
    for cfg in (CONFIGS["default"], CONFIGS["all-terms-tempered"], CONFIGS["truncated-hot"]):
        loss, grad, stats = run_loss(logits, targets, coord, cfg, chunk_size=chunk, mass=True)
        assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
        assert all(bool(torch.isfinite(v)) for v in stats.values())
        ref_loss, ref_grad = reference_grad(logits, targets, ids, cfg)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)
        bad = ~(logits.abs() <= 1e4)
        rows = torch.isin(targets, torch.tensor(ids))
        assert float(grad[bad & rows.unsqueeze(-1)].abs().sum()) == 0.0
        assert_stats_match(stats, reference_stats(logits, targets, ids, mass=True, cfg=cfg))
        assert float(stats["n_nonfinite_logits"]) > 0 and float(stats["max_abs_logit"]) == 1e5


def test_nonfinite_text_row_makes_base_ce_nan_like_cross_entropy() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=12)
    text_row = next(
        i for i in range(N) if 0 <= int(batch.targets[i]) and int(batch.targets[i]) not in batch.ids
    )
    logits = batch.logits.clone()
    logits[text_row, 3] = math.nan
    coord = CoordSlice.from_ids(batch.ids)
    loss, grad, stats = run_loss(logits, batch.targets, coord, CoordLossConfig(), base_ce=True)
    ref_loss, ref_grad = reference_grad(logits, batch.targets, batch.ids, CoordLossConfig(), base_ce=True)
    assert torch.isnan(loss) and torch.isnan(ref_loss)
    torch.testing.assert_close(grad, ref_grad, equal_nan=True, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    finite_keys = [k for k in STAT_KEYS if k != "base_ce_sum"]
    assert all(bool(torch.isfinite(stats[k])) for k in finite_keys)
    # the coord part alone stays finite
    loss, grad, _ = run_loss(logits, batch.targets, coord, CoordLossConfig(), base_ce=False)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("base_ce", [False, True])
def test_no_coord_targets(base_ce: bool) -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=14, coord_frac=0.0)
    coord = CoordSlice.from_ids(batch.ids)
    assert not bool(torch.isin(batch.targets, torch.tensor(batch.ids)).any())
    loss, grad, stats = run_loss(
        batch.logits, batch.targets, coord, CONFIGS["all-terms-tempered"], base_ce=base_ce
    )
    for key in ("n_coord", "soft_ce_sum", "w1_sum", "ce_sum", "gate_sum", "bin_abs_err_p90", "p_gt_sum"):
        assert float(stats[key]) == 0.0
    if base_ce:
        masked = batch.targets
        torch.testing.assert_close(loss, F.cross_entropy(batch.logits, masked))
    else:
        assert float(loss) == 0.0
        assert float(grad.abs().sum()) == 0.0


def test_all_targets_ignored() -> None:
    batch = make_batch(11, coord_ids("consecutive"), seed=15)
    targets = torch.full_like(batch.targets, -100)
    loss, grad, stats = run_loss(
        batch.logits, targets, CoordSlice.from_ids(batch.ids), CONFIGS["default"], base_ce=True, mass=True
    )
    assert float(loss) == 0.0 and float(grad.abs().sum()) == 0.0
    assert all(float(v) == 0.0 for v in stats.values())


def test_bf16_logits_grad_dtype_and_values() -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=19, dtype=torch.bfloat16)
    coord = CoordSlice.from_ids(batch.ids)
    cfg = CONFIGS["all-terms-tempered"]
    loss, grad, _ = run_loss(batch.logits, batch.targets, coord, cfg, base_ce=True, chunk_size=4)
    assert grad.dtype == torch.bfloat16
    ref_loss, ref_grad = reference_grad(batch.logits, batch.targets, batch.ids, cfg, base_ce=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.float(), ref_grad.to(torch.bfloat16).float(), rtol=1e-2, atol=1e-5)


def test_logits_view_of_3d_and_no_grad_mode() -> None:
    batch = make_batch(2 * 19, coord_ids("consecutive"), seed=21)
    logits3 = batch.logits.view(2, 19, -1).clone().requires_grad_(True)
    loss, _ = coord_loss(
        logits3.view(-1, logits3.shape[-1]), batch.targets, CoordSlice.from_ids(batch.ids), CONFIGS["default"]
    )
    loss.backward()
    assert logits3.grad is not None and logits3.grad.shape == logits3.shape
    with torch.no_grad():
        loss2, _ = coord_loss(batch.logits, batch.targets, CoordSlice.from_ids(batch.ids), CONFIGS["default"])
    assert not loss2.requires_grad
    torch.testing.assert_close(loss.detach(), loss2)
