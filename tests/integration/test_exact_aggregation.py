"""Exact aggregation on real ms-swift trainers (demo model): the same data gives the same logged values
whatever the batch layout and the gradient-accumulation split; ``per_step_mean`` does not.

Only keys whose aggregation is a ratio or a sum are layout-invariant by definition: a ``mean`` key
is a per-step gauge (the p90 of one batch) and ``last`` keys echo the configuration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.cli import check_logs
from coordexp.generated import metric_keys as K
from coordexp.generated.metric_catalog import COORDEXP_KEYS, METRIC_SPECS
from coordexp.launch import TrainConfig, build_trainer, train

pytestmark = pytest.mark.slow

INVARIANT = frozenset(k for k in COORDEXP_KEYS if METRIC_SPECS[k].aggregation in ("ratio", "sum"))
REL = 1e-4  # the layouts' attention kernels differ in float32 rounding, not in what they count


def _epoch(trainer: Any) -> dict[str, float]:
    """Every batch of one epoch as ONE logging window through ``training_step``, without optimizer
    steps (the model stays the same), then logged exactly as ``SwiftMixin.log`` logs it."""
    loader = trainer.get_train_dataloader()
    batches, num_items = trainer.get_batch_samples(iter(loader), len(loader), trainer.args.device)
    trainer.current_gradient_accumulation_steps = len(batches)
    for batch in batches:
        trainer.training_step(trainer.model, batch, num_items)
    logged: dict[str, float] = trainer.compute_custom_metrics(trainer.custom_metrics["train"])
    return logged


def test_layouts_log_the_same_exact_values(make_config: Callable[..., TrainConfig]) -> None:
    logged = {}
    for layout in ("padded", "padding_free", "packing"):
        config = make_config(layout=layout, monitor=False, custom={"metrics": {"aggregation": "exact"}})
        trainer = build_trainer(config)
        logged[layout] = _epoch(trainer)
    padded = logged["padded"]
    assert {K.TEXT_TOKEN_ACC, K.COORD_DIAG_LOSS, K.DESC_TOKEN_ACC, K.PACK_NUM_SAMPLES} <= padded.keys()
    assert padded[K.PACK_NUM_SAMPLES] == 24  # every sample of the epoch, once
    for layout in ("padding_free", "packing"):
        got = logged[layout]
        assert got.keys() & INVARIANT == padded.keys() & INVARIANT, layout
        for key in padded.keys() & INVARIANT:
            assert got[key] == pytest.approx(padded[key], rel=REL, abs=1e-6), (layout, key)


def _train_records(config: TrainConfig) -> list[dict[str, Any]]:
    run_dir = train(config).output_dir
    lines = (run_dir / "logging.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, filter(None, lines)) if "loss" in r and "train_runtime" not in r]
    assert len(records) == 3
    assert check_logs.main([str(run_dir)]) == 0  # window totals and ratios keep the declared ranges
    return records


@pytest.fixture
def accumulation_config(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> Callable[..., TrainConfig]:
    """Three optimizer steps of 4 samples each, logged every step; learning rate 0, so every step
    sees the same model and a log record depends only on its 4 samples."""

    def build(accumulation: int, aggregation: str) -> TrainConfig:
        return make_config(
            layout="padded",
            training={
                "output_dir": str(tmp_path / f"ga{accumulation}_{aggregation}"),
                "max_steps": 3,
                "learning_rate": 0.0,
                "eval_strategy": "no",
                "per_device_train_batch_size": 4 // accumulation,
                "gradient_accumulation_steps": accumulation,
            },
            custom={"metrics": {"aggregation": aggregation}},
        )

    return build


def test_accumulation_1_and_4_log_the_same_exact_values(
    accumulation_config: Callable[..., TrainConfig],
) -> None:
    one = _train_records(accumulation_config(1, "exact"))
    four = _train_records(accumulation_config(4, "exact"))
    per_step = _train_records(accumulation_config(4, "per_step_mean"))
    differs = set()
    for a, b, c in zip(one, four, per_step, strict=True):
        keys = a.keys() & INVARIANT
        assert {K.TEXT_TOKEN_ACC, K.COORD_DIAG_LOSS, K.PACK_NUM_SAMPLES} <= keys
        assert keys == b.keys() & INVARIANT
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=REL, abs=1e-6), key
            if c[key] != pytest.approx(a[key], rel=1e-3, abs=1e-5):
                differs.add(key)
        assert a[K.PACK_NUM_SAMPLES] == b[K.PACK_NUM_SAMPLES] == 4
    # the older per-step mean weighs a batch of few tokens like one of many
    assert differs & {K.TEXT_TOKEN_ACC, K.COORD_DIAG_LOSS, K.BASE_CE_LOSS}, differs
