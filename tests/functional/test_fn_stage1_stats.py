"""stage1_stats against the slow reference: every statistic, chunking, types, temperature, subsampling."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from stage1_reference import assert_stats_match, reference_stats
from toy_data import coord_ids, make_batch

from coordexp.functional import (
    STAT_KEYS,
    CoordLossConfig,
    CoordSlice,
    next_token_targets,
    next_token_types,
    stage1_stats,
)

N = 41


@dataclass(frozen=True)
class Scenario:
    types: bool
    top5: bool
    mass: bool
    mass_max_tokens: int
    cfg: CoordLossConfig | None


SCENARIOS = {
    "plain": Scenario(False, True, True, 0, CoordLossConfig()),
    "typed": Scenario(True, True, True, 0, CoordLossConfig()),
    "tempered-truncated": Scenario(
        True,
        True,
        True,
        7,
        CoordLossConfig(temperature=0.7, target_sigma=1.5, target_truncate=3, ce_weight=1.0),
    ),
    "hot-no-top5-no-gate": Scenario(True, False, False, 0, CoordLossConfig(temperature=2.5, gate_weight=0)),
    "no-diag": Scenario(True, True, True, 3, None),
}


@pytest.mark.parametrize("layout", ["consecutive", "permuted"])
@pytest.mark.parametrize("chunk", [1, 7, N])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_stats_match_reference(layout: str, chunk: int, scenario: str) -> None:
    opts = SCENARIOS[scenario]
    batch = make_batch(N, coord_ids(layout), seed=3)
    coord = CoordSlice.from_ids(batch.ids)
    assert (coord.start is not None) == (layout == "consecutive")
    types = batch.types if opts.types else None
    got = stage1_stats(
        batch.logits,
        batch.targets,
        coord=coord,
        types=types,
        top5=opts.top5,
        mass=opts.mass,
        mass_max_tokens=opts.mass_max_tokens,
        coord_cfg=opts.cfg,
        chunk_size=chunk,
    )
    ref = reference_stats(
        batch.logits,
        batch.targets,
        batch.ids,
        types=types,
        top5=opts.top5,
        mass=opts.mass,
        mass_max_tokens=opts.mass_max_tokens,
        cfg=opts.cfg,
    )
    assert_stats_match(got, ref)


def test_fixture_exercises_every_bucket() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=3)
    ref = reference_stats(
        batch.logits, batch.targets, batch.ids, types=batch.types, mass=True, cfg=CoordLossConfig()
    )
    for key in (
        "n_top1",
        "n_top5",
        "n_noncoord_top1",
        "n_type_desc",
        "n_type_format",
        "n_type_coord",
        "n_flip_coord_to_noncoord",
        "n_flip_text_to_coord",
        "acc_top5_hits",
        "bin_abs_err_p90",
    ):
        assert ref.get(key, 0.0) > 0, key


def test_chunked_equals_unchunked() -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=5)
    kwargs = dict(
        coord=CoordSlice.from_ids(batch.ids),
        types=batch.types,
        mass=True,
        mass_max_tokens=9,
        coord_cfg=CoordLossConfig(temperature=0.8),
    )
    whole = stage1_stats(batch.logits, batch.targets, chunk_size=N, **kwargs)  # type: ignore[arg-type]
    for chunk in (1, 7, 2048):
        part = stage1_stats(batch.logits, batch.targets, chunk_size=chunk, **kwargs)  # type: ignore[arg-type]
        for key in STAT_KEYS:
            torch.testing.assert_close(part[key], whole[key], rtol=1e-6, atol=1e-5)


def test_without_coord_only_token_and_instability_stats() -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=7)
    got = stage1_stats(batch.logits, batch.targets, types=batch.types, mass=True, coord_cfg=CoordLossConfig())
    ref = reference_stats(batch.logits, batch.targets, None, types=batch.types)
    assert_stats_match(got, ref)
    assert float(got["n_coord"]) == 0 and float(got["mass_n_text"]) == 0


def test_types_decide_coord_vs_text_per_position() -> None:
    ids = coord_ids("consecutive")
    logits = torch.zeros(4, 1200)
    targets = torch.tensor([150, 150, 5, 5])
    coord = CoordSlice.from_ids(ids)
    # untyped -> coord-id lookup
    got = stage1_stats(logits, targets, coord=coord)
    assert float(got["n_noncoord"]) == 2 and float(got["n_gt_coord"]) == 2
    # typed positions follow their type; an untyped one falls back to the lookup
    types = torch.tensor([3, -1, 2, 1])
    got = stage1_stats(logits, targets, coord=coord, types=types)
    assert float(got["n_noncoord"]) == 2 and float(got["n_gt_coord"]) == 2
    assert float(got["n_typed"]) == 3 and float(got["n_type_format"]) == 1
    ref = reference_stats(logits, targets, ids, types=types)
    assert_stats_match(got, ref)


def test_all_ignored_gives_all_zero() -> None:
    batch = make_batch(13, coord_ids("consecutive"), seed=1)
    targets = torch.full_like(batch.targets, -100)
    got = stage1_stats(
        batch.logits,
        targets,
        coord=CoordSlice.from_ids(batch.ids),
        types=torch.full_like(targets, -1),
        mass=True,
        mass_max_tokens=4,
        coord_cfg=CoordLossConfig(),
    )
    assert all(float(v) == 0.0 for v in got.values())


def test_empty_input() -> None:
    got = stage1_stats(
        torch.zeros(0, 1200),
        torch.zeros(0, dtype=torch.long),
        coord=CoordSlice.from_ids(coord_ids("consecutive")),
        mass=True,
        coord_cfg=CoordLossConfig(),
    )
    assert all(float(v) == 0.0 for v in got.values())


@pytest.mark.parametrize("max_tokens", [1, 4, 10, 1000])
def test_mass_subsample_is_strided_and_capped(max_tokens: int) -> None:
    batch = make_batch(N, coord_ids("consecutive"), seed=11)
    kwargs = dict(coord=CoordSlice.from_ids(batch.ids), types=batch.types, mass=True)
    got = stage1_stats(batch.logits, batch.targets, mass_max_tokens=max_tokens, **kwargs)  # type: ignore[arg-type]
    ref = reference_stats(
        batch.logits, batch.targets, batch.ids, types=batch.types, mass=True, mass_max_tokens=max_tokens
    )
    assert_stats_match(got, ref)
    kept = float(got["mass_n_coord"]) + float(got["mass_n_text"])
    assert 0 < kept <= max_tokens


def test_bf16_logits_match_reference_on_their_values() -> None:
    batch = make_batch(N, coord_ids("permuted"), seed=2, dtype=torch.bfloat16)
    cfg = CoordLossConfig(temperature=1.3)
    got = stage1_stats(
        batch.logits,
        batch.targets,
        coord=CoordSlice.from_ids(batch.ids),
        types=batch.types,
        mass=True,
        coord_cfg=cfg,
        chunk_size=8,
    )
    ref = reference_stats(
        batch.logits.float(), batch.targets, batch.ids, types=batch.types, mass=True, cfg=cfg
    )
    assert_stats_match(got, ref)


def test_next_token_helpers() -> None:
    labels = torch.tensor([[1, 2, 3], [4, -100, 6]])
    assert next_token_targets(labels).tolist() == [2, 3, -100, -100, 6, -100]
    types = torch.tensor([[3, 2, 1], [-1, 2, 3]])
    assert next_token_types(types).tolist() == [2, 1, -1, 2, 3, -1]
    logits = torch.randn(2, 3, 7)
    flat = logits.view(-1, 7)
    assert flat.data_ptr() == logits.data_ptr()
    with pytest.raises(ValueError):
        next_token_targets(labels.view(-1))


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        stage1_stats(torch.zeros(3, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError):
        stage1_stats(torch.zeros(3, 5), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError):
        stage1_stats(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="beyond the logits' vocabulary"):
        stage1_stats(
            torch.zeros(3, 50), torch.zeros(3, dtype=torch.long), coord=CoordSlice.from_ids(range(40, 60))
        )
