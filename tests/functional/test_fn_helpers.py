"""CoordSlice, CoordLossConfig, the sorted quantile and the host reduction helpers."""

from __future__ import annotations

import pytest
import torch

from coordexp.functional import (
    CoordLossConfig,
    CoordSlice,
    gaussian_soft_targets,
    padded_quantile,
    safe_div,
    sanitize_logits,
    stats_to_host,
)


def test_coord_slice_consecutive_uses_a_view() -> None:
    coord = CoordSlice.from_ids(range(100, 1100))
    assert coord.start == 100 and coord.num_bins == 1000 and coord.max_id == 1099
    logits = torch.randn(3, 1200)
    taken = coord.take(logits)
    assert taken.data_ptr() == logits[:, 100:].data_ptr()
    hit, bins = coord.lookup(torch.tensor([-100, 99, 100, 1099, 1100, 555]))
    assert hit.tolist() == [False, False, True, True, False, True]
    assert bins.tolist() == [0, 0, 0, 999, 0, 455]


def test_coord_slice_scattered_order() -> None:
    ids = [50, 7, 900, 3, 64]
    coord = CoordSlice.from_ids(ids)
    assert coord.start is None
    logits = torch.randn(2, 1000)
    torch.testing.assert_close(coord.take(logits), logits[:, ids])
    tokens = torch.tensor([3, 4, 900, -100, 999, 50, 0, 64])
    hit, bins = coord.lookup(tokens)
    assert hit.tolist() == [True, False, True, False, False, True, False, True]
    assert bins.tolist() == [3, 0, 2, 0, 0, 0, 0, 4]


def test_coord_slice_validation() -> None:
    with pytest.raises(ValueError):
        CoordSlice.from_ids([])
    with pytest.raises(ValueError):
        CoordSlice.from_ids([1, 2, 2])
    with pytest.raises(ValueError):
        CoordSlice.from_ids([-1, 2])
    with pytest.raises(ValueError):
        CoordSlice(torch.tensor([1.0, 2.0]))
    CoordSlice.from_ids([5, 9]).check_vocab(10)
    with pytest.raises(ValueError, match="beyond the logits' vocabulary"):
        CoordSlice.from_ids([5, 10]).check_vocab(10)
    assert CoordSlice.from_ids(torch.tensor([4, 5, 6])).start == 4
    coord = CoordSlice.from_ids([1, 2])
    assert coord.to("cpu") is coord


def test_config_validation_and_mapping() -> None:
    cfg = CoordLossConfig.from_mapping(
        {"enabled": True, "ce_weight": 1, "temperature": 0.5, "target_truncate": 3}
    )
    assert cfg.ce_weight == 1 and cfg.temperature == 0.5 and cfg.target_truncate == 3 and cfg.gate_enabled
    assert not CoordLossConfig(ce_weight=0, soft_ce_weight=0, w1_weight=0, gate_weight=0).any_weight
    for bad in (
        {"ce_weight": -1.0},
        {"temperature": 0.0},
        {"target_sigma": -2.0},
        {"target_truncate": -1},
        {"w1_weight": float("nan")},
    ):
        with pytest.raises(ValueError):
            CoordLossConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CoordLossConfig(gate_weight=True)
    with pytest.raises(ValueError, match="unknown"):
        CoordLossConfig.from_mapping({"ce_wieght": 1.0})


@pytest.mark.parametrize("n", [1, 2, 3, 10, 11, 57])
def test_padded_quantile_matches_torch_quantile(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    valid = torch.rand(n, generator=gen) * 100
    padded = torch.cat([valid, torch.full((5,), float("inf"))])[torch.randperm(n + 5, generator=gen)]
    got = padded_quantile(padded, torch.tensor(float(n)), 0.9)
    torch.testing.assert_close(got, torch.quantile(valid, 0.9))
    assert float(padded_quantile(padded, torch.tensor(0.0), 0.9)) == 0.0
    assert float(padded_quantile(torch.zeros(0), torch.tensor(0.0), 0.9)) == 0.0


def test_soft_targets_and_sanitizer() -> None:
    q = gaussian_soft_targets(torch.tensor([0, 5, 9]), 10, sigma=1.0, truncate=1)
    torch.testing.assert_close(q.sum(-1), torch.ones(3))
    assert q[1].nonzero().flatten().tolist() == [4, 5, 6]
    assert q[0].nonzero().flatten().tolist() == [0, 1]
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 2e4, -1e4, 3.0])
    assert sanitize_logits(x).tolist() == [0.0, 1e4, -1e4, 1e4, -1e4, 3.0]


def test_host_helpers() -> None:
    assert safe_div(3.0, 0.0) == 0.0 and safe_div(3.0, 2.0) == 1.5 and safe_div(1.0, 0, default=-1.0) == -1.0
    assert stats_to_host({"a": torch.tensor(1.5), "b": torch.tensor(2)}) == {"a": 1.5, "b": 2.0}
    assert stats_to_host({}) == {}
