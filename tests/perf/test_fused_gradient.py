"""The gradient written during the forward (coord_loss hands it to autograd without a copy) behaves like
an ordinary autograd gradient: scaled by grad_output, recomputed on a second backward, absent without
grad mode."""

from __future__ import annotations

import torch

from benchmarks.measure import TensorBytesTracker
from benchmarks.stage1_steps import build_packed_batch
from coordexp.functional import CoordLossConfig, coord_loss

CFG = CoordLossConfig(ce_weight=0.2, temperature=0.9)


def _batch() -> tuple[torch.Tensor, torch.Tensor, object]:
    batch = build_packed_batch(512, 8192, torch.device("cpu"), torch.float32, seed=9)
    return batch.logits, batch.targets, batch.coord


def _grad(scale: float, *, retain: int = 1) -> torch.Tensor:
    logits, targets, coord = _batch()
    leaf = logits.detach().clone().requires_grad_(True)
    loss, _ = coord_loss(leaf, targets, coord, CFG, base_ce=True, chunk_size=37)  # type: ignore[arg-type]
    for i in range(retain):
        (loss * scale).backward(retain_graph=i + 1 < retain)
    assert leaf.grad is not None
    return leaf.grad


def test_grad_output_scales_the_gradient() -> None:
    unit = _grad(1.0)
    assert float(unit.abs().sum()) > 0
    torch.testing.assert_close(_grad(-2.5), -2.5 * unit, rtol=1e-6, atol=1e-9)


def test_second_backward_recomputes_the_same_gradient() -> None:
    unit = _grad(1.0)
    torch.testing.assert_close(_grad(1.0, retain=3), 3 * unit, rtol=1e-6, atol=1e-9)


def test_the_gradient_buffer_is_handed_over_not_copied() -> None:
    logits, targets, coord = _batch()
    leaf = logits.detach().clone().requires_grad_(True)
    with TensorBytesTracker() as tracker:
        loss, _ = coord_loss(leaf, targets, coord, CFG, base_ce=True, chunk_size=37)  # type: ignore[arg-type]
        loss.backward()
    grad_bytes = logits.numel() * logits.element_size()
    assert grad_bytes <= tracker.peak < 2 * grad_bytes  # one gradient-sized tensor, never two


def test_no_gradient_buffer_without_grad_mode() -> None:
    logits, targets, coord = _batch()
    leaf = logits.detach().clone().requires_grad_(True)
    grad_bytes = logits.numel() * logits.element_size()
    with torch.no_grad(), TensorBytesTracker() as tracker:
        loss, _ = coord_loss(leaf, targets, coord, CFG, base_ce=True, chunk_size=37)  # type: ignore[arg-type]
    assert not loss.requires_grad and tracker.peak < grad_bytes
