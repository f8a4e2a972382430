"""The pass from hidden states and the output head (no materialised logits) equals the pass over
``F.linear(hidden, weight, bias)``: loss, every statistic, the argmax, and the gradients of the hidden
states, the head weight and its bias (fp32 to 1e-5; bf16 to the tolerance stated below)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toy_data import VOCAB, coord_ids, make_batch

from coordexp.functional import CoordLossConfig, CoordSlice, ce_loss, coord_loss
from coordexp.functional.linear_pass import OutputHead, linear_ce_loss, linear_coord_loss

N, H = 37, 16
CFG = CoordLossConfig(ce_weight=0.5, gate_weight=0.3, temperature=0.6, target_sigma=1.2)
BF16_RTOL, BF16_ATOL = 2e-2, 2e-3
"""bf16: both paths round the logits and the hidden-state gradient to bf16 (same values up to the
matmul's blocking); the weight gradient is accumulated in fp32 here, in bf16 by autograd."""


def _inputs(
    seed: int, dtype: torch.dtype, bias: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(N, H, generator=gen) * 1.5).to(dtype)
    weight = (torch.randn(VOCAB, H, generator=gen) * 0.7).to(dtype)
    b = (torch.randn(VOCAB, generator=gen) * 0.3).to(dtype) if bias else None
    return hidden, weight, b


def _leaves(*ts: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in ts]


def _run_both(
    coord_on: bool, metrics: bool, dtype: torch.dtype, bias: bool, chunk: int, seed: int = 5
) -> tuple:
    batch = make_batch(N, coord_ids("permuted"), seed=seed)
    coord = CoordSlice.from_ids(batch.ids)
    hidden, weight, b = _inputs(seed, dtype, bias)
    kwargs = dict(types=batch.types if metrics else None, top5=metrics, mass=metrics, chunk_size=chunk)
    results = []
    for linear in (False, True):
        h, w, bb = _leaves(hidden, weight, b)
        assert h is not None and w is not None
        preds = torch.empty(N, dtype=torch.long) if linear else None
        if coord_on:
            if linear:
                loss, stats = linear_coord_loss(
                    h, OutputHead(w, bb), batch.targets, coord, CFG, base_ce=True, preds=preds, **kwargs
                )
            else:
                loss, stats = coord_loss(
                    F.linear(h, w, bb), batch.targets, coord, CFG, base_ce=True, **kwargs
                )
        elif linear:
            loss, stats = linear_ce_loss(
                h, OutputHead(w, bb), batch.targets, coord=coord, coord_cfg=CFG, preds=preds, **kwargs
            )
        else:
            loss, stats = ce_loss(F.linear(h, w, bb), batch.targets, coord=coord, coord_cfg=CFG, **kwargs)
        loss.backward()
        grads = [t.grad for t in (h, w, bb) if t is not None]
        results.append((loss.detach(), stats, grads, preds))
    return results, F.linear(hidden, weight, b)


@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "no_metrics"])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("chunk", [1, 7, N])
def test_fp32_equals_materialised(coord_on: bool, metrics: bool, bias: bool, chunk: int) -> None:
    (ref, got), logits = _run_both(coord_on, metrics, torch.float32, bias, chunk)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    assert set(got[1]) == set(ref[1])
    for key in ref[1]:
        torch.testing.assert_close(got[1][key], ref[1][key], rtol=1e-5, atol=1e-5, msg=key)
    for g, r in zip(got[2], ref[2], strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    assert torch.equal(got[3], logits.argmax(-1))


@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_bf16_equals_materialised_within_tolerance(coord_on: bool) -> None:
    (ref, got), _ = _run_both(coord_on, True, torch.bfloat16, True, 7)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    for key in ref[1]:
        torch.testing.assert_close(got[1][key], ref[1][key], rtol=1e-5, atol=1e-5, msg=key)
    for g, r in zip(got[2], ref[2], strict=True):
        assert g.dtype == r.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), r.float(), rtol=BF16_RTOL, atol=BF16_ATOL)


def test_frozen_head_gets_no_gradient_and_a_second_backward_reruns_the_pass() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=2)
    hidden, weight, _ = _inputs(2, torch.float32, False)
    h = hidden.clone().requires_grad_(True)
    loss, _ = linear_ce_loss(h, OutputHead(weight), batch.targets, chunk_size=5)
    (first,) = torch.autograd.grad(loss * 2.0, h, retain_graph=True)
    (second,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(first, second * 2.0)
    assert weight.grad is None


def test_mismatched_head_is_refused() -> None:
    targets = torch.zeros(N, dtype=torch.long)
    with pytest.raises(ValueError, match="does not match hidden"):
        linear_ce_loss(torch.zeros(N, H), OutputHead(torch.zeros(VOCAB, H + 1)), targets)
