"""Exact aggregation: the value of a key after N micro-steps of different sizes equals a slow reference
computed from all tokens at once; ``per_step_mean`` is the mean of the per-step values.

The metric objects are checked on their own per kind, then through the Stage-1 pipeline: micro-steps
of 1 to 3 samples, padded and packed, with and without token types, against the independent slow
reference of ``tests/functional/stage1_reference.py`` over the concatenated tokens. The numerator and
denominator of each ratio come from the catalog (``MetricSpec.numerator`` / ``denominator``), so the
declarations themselves are checked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.config import CoordSoftCEW1Config
from coordexp.functional import next_token_targets, next_token_types
from coordexp.generated import metric_keys as K
from coordexp.generated.batch_extras import PACK_NUM_SAMPLES_KEY, TOKEN_TYPES_KEY
from coordexp.generated.metric_catalog import METRIC_SPECS
from coordexp.reporting import MetricReporter, Ratio, metric_for
from coordexp.reporting.aggregation import LastMetric, MaxMetric, MeanMetric, RatioMetric, SumMetric
from coordexp.swift_seam.assembly import build_trainer_cls
from tests.components.stage1_fixtures import (
    FULL_CUSTOM,
    BatchSpec,
    SwiftLikeTrainer,
    ToyLM,
    make_batch,
    tokenizer,
)
from tests.functional.stage1_reference import reference_stats
from tests.hardening.support import coord_ids

TOL = 1e-6


# ---------------------------------------------------------------- each kind on its own


def _micro_steps(seed: int = 0) -> list[torch.Tensor]:
    """Per-token values of N micro-steps of very different sizes (1 to 400 tokens)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(n, generator=gen, dtype=torch.float64) for n in (1, 400, 7, 0, 53, 2)]


def test_ratio_is_sum_of_numerators_over_sum_of_denominators() -> None:
    steps = _micro_steps()
    hits = [(t > 0.3).double() for t in steps]
    metric = RatioMetric()
    for h in hits:
        if h.numel():  # a step without tokens has no denominator: nothing is written
            metric.update(Ratio(float(h.sum()), float(h.numel())))
    reference = float(torch.cat(hits).mean())
    assert metric.compute()["value"] == pytest.approx(reference, rel=TOL, abs=TOL)
    per_step = sum(float(h.mean()) for h in hits if h.numel()) / sum(1 for h in hits if h.numel())
    assert abs(per_step - reference) > 1e-3  # the unweighted mean of step ratios is another number


def test_sum_mean_last_and_max() -> None:
    steps = _micro_steps(1)
    sums, means, lasts, maxes = SumMetric(), MeanMetric(), LastMetric(), MaxMetric()
    gauges = [float(t.max()) if t.numel() else 0.0 for t in steps]
    for t, gauge in zip(steps, gauges, strict=True):
        sums.update(float(t.numel()))
        means.update(gauge)
        lasts.update(gauge)
        if t.numel():
            maxes.update(float(t.max()))
    everything = torch.cat(steps)
    assert sums.compute()["value"] == pytest.approx(everything.numel(), rel=TOL)
    assert means.compute()["value"] == pytest.approx(sum(gauges) / len(gauges), rel=TOL)
    assert lasts.compute()["value"] == pytest.approx(gauges[-1], rel=TOL)
    assert maxes.compute()["value"] == pytest.approx(float(everything.max()), rel=TOL)


@pytest.mark.parametrize("kind", [RatioMetric, SumMetric, MeanMetric, LastMetric, MaxMetric])
def test_no_data_is_not_logged_and_reset_starts_a_new_window(kind: type) -> None:
    metric = kind()
    assert metric.compute() == {"value": None}  # ms-swift drops None: the key is not logged
    metric.update(Ratio(1.0, 4.0) if kind is RatioMetric else 3.0)
    assert metric.compute()["value"] is not None
    metric.reset()
    assert metric.compute() == {"value": None}


def test_ms_swift_logs_the_exact_values_and_drops_keys_without_data() -> None:
    """Through ms-swift's own ``compute_custom_metrics`` (what ``SwiftMixin.log`` calls)."""
    from swift.trainers.mixin import SwiftMixin

    store: dict[str, Any] = {}
    reporter = MetricReporter(aggregation="exact")
    trainer = type("T", (), {"custom_metrics": {"train": store, "eval": {}}})()
    reporter.register(trainer, [K.TEXT_TOKEN_ACC, K.COORD_TOKEN_ACC, K.PACK_NUM_SAMPLES])
    for num, den in ((1.0, 4.0), (30.0, 40.0)):
        reporter.write(trainer, "train", {K.TEXT_TOKEN_ACC: Ratio(num, den), K.PACK_NUM_SAMPLES: 2.0}, ())
    logs = SwiftMixin.compute_custom_metrics(store)
    assert logs == {K.TEXT_TOKEN_ACC: pytest.approx(31 / 44), K.PACK_NUM_SAMPLES: 4.0}
    assert set(store) == {K.TEXT_TOKEN_ACC, K.COORD_TOKEN_ACC, K.PACK_NUM_SAMPLES}  # still registered
    assert SwiftMixin.compute_custom_metrics(store) == {}  # the window was reset


def test_a_store_created_after_register_gets_the_keys_at_the_first_write() -> None:
    trainer = type("T", (), {})()
    reporter = MetricReporter(aggregation="exact")
    reporter.register(trainer, [K.TEXT_TOKEN_ACC, K.PACK_NUM_SAMPLES])
    trainer.custom_metrics = {"train": {}, "eval": {}}  # type: ignore[attr-defined]
    reporter.write(trainer, "train", {K.TEXT_TOKEN_ACC: Ratio(3.0, 4.0)}, ())
    for mode in ("train", "eval"):
        store = trainer.custom_metrics[mode]  # type: ignore[attr-defined]
        assert [type(store[k]) for k in sorted(store)] == [SumMetric, RatioMetric]


def test_per_step_mean_writes_each_steps_value_into_ms_swift_mean_metric() -> None:
    from swift.metrics import MeanMetric as SwiftMean

    store: defaultdict[str, SwiftMean] = defaultdict(lambda: SwiftMean(nan_value=None, device="cpu"))
    trainer = type("T", (), {"custom_metrics": {"train": store, "eval": defaultdict(SwiftMean)}})()
    reporter = MetricReporter(aggregation="per_step_mean")
    reporter.register(trainer, [K.TEXT_TOKEN_ACC])
    assert not store  # per_step_mean keeps ms-swift's own store as it is
    for num, den in ((1.0, 4.0), (30.0, 40.0)):
        reporter.write(trainer, "train", {K.TEXT_TOKEN_ACC: Ratio(num, den)}, ())
    assert store[K.TEXT_TOKEN_ACC].compute()["value"] == pytest.approx((0.25 + 0.75) / 2)


def test_every_catalog_key_gets_the_metric_of_its_declared_kind() -> None:
    by_kind = {
        "ratio": RatioMetric,
        "sum": SumMetric,
        "mean": MeanMetric,
        "last": LastMetric,
        "max": MaxMetric,
    }
    for key, spec in METRIC_SPECS.items():
        assert type(metric_for(key)) is by_kind[spec.aggregation], key
        assert (spec.numerator is not None) == (spec.aggregation == "ratio"), key
    assert type(metric_for("lvis/token_acc")) is MeanMetric  # only with the contract guards off
    assert math.isnan(Ratio(1.0, 0.0).value)  # refused by the guard, never a ZeroDivisionError


# ---------------------------------------------------------------- through the pipeline

# micro-steps of different sizes and layouts; one without token types, one without coord targets
SPECS = (
    BatchSpec(packed=False, with_types=True, datasets=["lvis"]),
    BatchSpec(packed=True, with_types=True, datasets=["lvis", "coco", "lvis"]),
    BatchSpec(packed=False, with_types=False, datasets=["coco", "lvis"]),
    BatchSpec(packed=False, with_types=True, datasets=["lvis", "lvis", "coco"]),
    BatchSpec(packed=True, with_types=True, datasets=["coco"]),
    BatchSpec(packed=False, with_types=True, datasets=["coco", "lvis"]),
)
NO_COORD_STEP = 5
"""Its coord targets are masked: its samples count in the per-sample keys' denominators only."""
# sum keys: the statistic they count
COUNTS = {
    K.COORD_DIAG_COORD_TOKENS: "n_coord",
    K.BASE_CE_NONCOORD_TOKENS: "n_base",
    K.PACK_NUM_SAMPLES: "pack_samples",
}


def _evaluate(expression: str, stats: dict[str, float], weights: CoordSoftCEW1Config) -> float:
    """A catalog numerator/denominator: ``stat`` or ``weight·stat`` terms joined by `` + ``."""
    total = 0.0
    for term in expression.split(" + "):
        weight, _, stat = term.rpartition("·")
        if weight and not hasattr(weights, weight):  # a box-term weight: those terms are off in this run
            assert stats.get(stat, 0.0) == 0.0, stat
            continue
        total += (float(getattr(weights, weight)) if weight else 1.0) * stats[stat]
    return total


def _run(aggregation: str, tmp_path: Path) -> tuple[Any, dict[str, float]]:
    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    cls = build_trainer_cls(SwiftLikeTrainer, {k: dict(v) for k, v in FULL_CUSTOM.items()})
    trainer = cls(model, output_dir=str(tmp_path), aggregation=aggregation)
    flat_logits, targets, types = [], [], []
    captured: list[torch.Tensor] = []
    model.register_forward_hook(lambda m, a, out: captured.append(out.logits.detach()))
    for step, spec in enumerate(SPECS):
        batch = make_batch(spec)
        if step == NO_COORD_STEP:
            batch["labels"] = batch["labels"].masked_fill(torch.isin(batch["labels"], coord_ids()), -100)
        labels = batch["labels"]
        token_types = batch.get(TOKEN_TYPES_KEY, torch.full_like(labels, -1))
        trainer.compute_loss(model, batch)
        logits = captured.pop()
        flat_logits.append(logits.reshape(-1, logits.shape[-1]))
        targets.append(next_token_targets(labels))
        types.append(next_token_types(token_types))
    stats = reference_stats(
        torch.cat(flat_logits),
        torch.cat(targets),
        coord_ids().tolist(),
        types=torch.cat(types),
        top5=True,
        mass=True,
        cfg=CoordSoftCEW1Config.from_mapping(FULL_CUSTOM["coord_soft_ce_w1"]),
        base_ce=True,
    )
    stats["pack_samples"] = float(sum(int(make_batch(s)[PACK_NUM_SAMPLES_KEY].sum()) for s in SPECS))
    return trainer, stats


def test_exact_values_equal_the_all_tokens_reference(tmp_path: Path) -> None:
    trainer, stats = _run("exact", tmp_path)
    weights = CoordSoftCEW1Config.from_mapping(FULL_CUSTOM["coord_soft_ce_w1"])
    store = trainer.custom_metrics["train"]
    logged = {k: v for k, m in store.items() if (v := m.compute()["value"]) is not None}
    checked = set()
    for key, value in logged.items():
        spec = METRIC_SPECS[key]
        if spec.aggregation == "ratio":
            assert spec.numerator is not None and spec.denominator is not None
            want = _evaluate(spec.numerator, stats, weights) / _evaluate(spec.denominator, stats, weights)
        elif spec.aggregation == "sum":
            want = stats[COUNTS[key]]
        else:
            continue
        assert value == pytest.approx(want, rel=TOL, abs=TOL), key
        checked.add(key)
    # every ratio and count the run enables was logged and checked (typed keys included)
    assert {K.TEXT_TOKEN_ACC, K.DESC_TOKEN_FRAC, K.COORD_MONITOR_FLIP_DESC_TO_COORD} <= checked
    assert {K.COORD_DIAG_LOSS, K.BASE_CE_LOSS, K.STAGE1_TOTAL_LOSS_PER_SAMPLE_EST} <= checked
    assert set(COUNTS) <= checked
    assert logged[K.COORD_DIAG_ENABLED] == 1.0
    # registered at start: every key the config enables, with or without data
    assert set(store) == trainer.stage1_pipeline().enabled_keys()


def test_per_step_mean_reproduces_the_per_step_values(tmp_path: Path) -> None:
    exact, _ = _run("exact", tmp_path / "exact")
    per_step, _ = _run("per_step_mean", tmp_path / "per_step")
    steps = per_step.logged("train")  # the fixture's MeanMetric records each step's value
    assert all(len(v) <= len(SPECS) for v in steps.values())
    exact_values = {k: m.compute()["value"] for k, m in exact.custom_metrics["train"].items()}
    differs = []
    for key, values in steps.items():
        assert exact_values[key] is not None, key
        if abs(sum(values) / len(values) - exact_values[key]) > 1e-4:
            differs.append(key)
    assert K.TEXT_TOKEN_ACC in differs or K.COORD_DIAG_LOSS in differs, differs
