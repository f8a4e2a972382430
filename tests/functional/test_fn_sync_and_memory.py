"""The hot path is sync-free (counted on CPU) and never holds an [N, V] fp32 temporary."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from toy_data import coord_ids, make_batch

from coordexp.functional import CoordLossConfig, CoordSlice, SyncCounter, coord_loss, stage1_stats


def _full_stack(logits: torch.Tensor, targets: torch.Tensor, types: torch.Tensor, coord: CoordSlice) -> None:
    cfg = CoordLossConfig(ce_weight=0.5, temperature=0.8, target_truncate=4)
    stage1_stats(
        logits.detach(),
        targets,
        coord=coord,
        types=types,
        mass=True,
        mass_max_tokens=5,
        coord_cfg=cfg,
        chunk_size=8,
    )
    leaf = logits.detach().requires_grad_(True)
    loss, _ = coord_loss(
        leaf, targets, coord, cfg, base_ce=True, types=types, mass=True, mass_max_tokens=5, chunk_size=8
    )
    loss.backward()
    gate_only = CoordLossConfig(soft_ce_weight=0.0, w1_weight=0.0, gate_weight=1.0)
    loss, _ = coord_loss(leaf, targets, coord, gate_only, chunk_size=8)
    loss.backward()
    no_full_vocab = CoordLossConfig(gate_weight=0.0)
    loss, _ = coord_loss(leaf, targets, coord, no_full_vocab, chunk_size=8, top5=False)
    loss.backward()


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stack_forward_backward_is_sync_free(layout: str, dtype: torch.dtype) -> None:
    batch = make_batch(29, coord_ids(layout), seed=1, dtype=dtype)
    coord = CoordSlice.from_ids(batch.ids)
    with SyncCounter(count_host_copies=True) as counter:
        _full_stack(batch.logits, batch.targets, batch.types, coord)
    assert counter.count == 0, counter.ops


def test_sync_counter_sees_the_usual_culprits() -> None:
    x = torch.randn(6)
    mask = x > 0
    with SyncCounter(count_host_copies=True) as counter:
        x.sum().item()
        float(x.max())
        bool(mask.any())
        x[mask]
        x[mask] = 0.0
        torch.nonzero(mask)
        torch.where(mask)
        x.masked_select(mask)
        torch.unique(torch.arange(3))
        x.to("cpu", copy=True)
        torch.equal(x, x)
    assert counter.ops["_local_scalar_dense"] == 3
    assert counter.ops["index"] == 1 and counter.ops["index_put_"] == 1
    assert counter.ops["nonzero"] >= 2 and counter.ops["masked_select"] == 1
    assert counter.ops["_unique2"] + counter.ops["_unique"] == 1
    assert counter.ops["_to_copy"] == 1 and counter.ops["equal"] == 1
    assert counter.count == sum(counter.ops.values())
    with SyncCounter() as quiet:
        y = torch.where(mask, x, 0.0) * 2
        x.index_select(0, torch.tensor([0, 2]))
        (y * mask).sum()
    assert quiet.count == 0


class _LargestFloat32Output(TorchDispatchMode):
    """Records the largest fp32 tensor any aten op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


def test_no_full_size_fp32_temporary() -> None:
    n, chunk = 64, 8
    batch = make_batch(n, coord_ids("permuted"), seed=2, dtype=torch.bfloat16)
    coord = CoordSlice.from_ids(batch.ids)
    vocab = batch.logits.shape[-1]
    with _LargestFloat32Output() as rec:
        _full_stack(batch.logits, batch.targets, batch.types, coord)
    assert 0 < rec.largest <= chunk * vocab
