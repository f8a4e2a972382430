"""The public coord_soft_ce_w1 facade on [B, T, V] logits."""

from __future__ import annotations

import pytest
import torch
from stage1_reference import reference_grad
from toy_data import coord_ids, make_batch

from coordexp.coord_tokens.soft_ce_w1 import CoordLossConfig, CoordSoftCEW1Result, coord_soft_ce_w1
from coordexp.functional import CoordSlice, next_token_targets


def _batch3d(
    layout: str, seed: int = 0, coord_frac: float = 0.45
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    b, t = 3, 13
    batch = make_batch(b * t, coord_ids(layout), seed=seed, coord_frac=coord_frac)
    return batch.logits.view(b, t, -1), batch.targets.view(b, t), batch.ids


def test_facade_matches_reference_on_shifted_labels() -> None:
    logits, labels, ids = _batch3d("permuted", seed=3)
    cfg = {"enabled": True, "ce_weight": 0.5, "temperature": 0.8, "target_truncate": 5}
    leaf = logits.clone().requires_grad_(True)
    result = coord_soft_ce_w1(leaf, labels, ids, cfg=cfg, chunk_size=4)
    assert isinstance(result, CoordSoftCEW1Result)
    result.loss.backward()
    config = CoordLossConfig.from_mapping(cfg)
    flat = logits.reshape(-1, logits.shape[-1])
    ref_loss, ref_grad = reference_grad(flat, next_token_targets(labels), ids, config)
    torch.testing.assert_close(result.loss.detach(), ref_loss, rtol=1e-5, atol=1e-5)
    assert leaf.grad is not None
    torch.testing.assert_close(leaf.grad.view(-1, logits.shape[-1]), ref_grad, rtol=1e-5, atol=1e-6)
    parts = result.soft_ce + result.w1 + result.ce + result.gate
    torch.testing.assert_close(parts, result.loss.detach())
    n_coord = int(torch.isin(next_token_targets(labels), torch.tensor(ids)).sum())
    assert float(result.coord_tokens) == n_coord > 0
    for field in (result.soft_ce, result.w1, result.ce, result.gate, result.coord_tokens):
        assert field.dim() == 0 and not field.requires_grad


def test_facade_accepts_coord_slice_and_denominator() -> None:
    logits, labels, ids = _batch3d("consecutive", seed=4)
    coord = CoordSlice.from_ids(ids)
    base = coord_soft_ce_w1(logits, labels, coord)
    scaled = coord_soft_ce_w1(logits, labels, coord, coord_denominator=torch.tensor(100.0))
    torch.testing.assert_close(scaled.loss * 100.0, base.loss * base.coord_tokens)
    torch.testing.assert_close(scaled.w1 * 100.0, base.w1 * base.coord_tokens)


def test_facade_without_coord_targets_is_zero() -> None:
    logits, labels, ids = _batch3d("consecutive", seed=5, coord_frac=0.0)
    leaf = logits.clone().requires_grad_(True)
    result = coord_soft_ce_w1(leaf, labels, ids)
    result.loss.backward()
    assert leaf.grad is not None
    assert float(result.loss.detach()) == 0.0 and float(result.coord_tokens) == 0.0
    assert float(leaf.grad.abs().sum()) == 0.0
    assert float(result.soft_ce) == float(result.gate) == 0.0


def test_facade_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        coord_soft_ce_w1(torch.zeros(4, 10), torch.zeros(4, dtype=torch.long), [1, 2])
