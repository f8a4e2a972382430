"""Real ms-swift runs of the tiny Qwen3 with issue 21's terms on (text gate, bbox_geo, bbox_size_aux):
in every layout the one pass equals the two-pass path and the pass without materialised logits equals
the materialised one; a run passes ``check-logs`` with every enabled key seen in train and eval."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from coordexp.launch import TrainConfig, build_trainer, train
from coordexp.swift_seam.loss_func import Stage1LossFunc
from tests.integration.test_one_pass_seam import LAYOUTS, _assert_same, _run_window, _window

pytestmark = pytest.mark.slow

ALL_TERMS: dict[str, Any] = {
    "coord_soft_ce_w1": {"text_gate_weight": 0.1},
    "bbox_geo": {"enabled": True, "smoothl1_weight": 0.5, "ciou_weight": 1.0},
    "bbox_size_aux": {
        "enabled": True,
        "log_wh_weight": 0.05,
        "oversize_penalty_weight": 0.1,
        "oversize_area_frac_threshold": 0.25,
        "oversize_log_w_threshold": None,
        "oversize_log_h_threshold": None,
        "eps": 1e-6,
    },
}
TERM_KEYS = {
    "coord_diag/text_gate",
    "coord_diag/text_coord_vocab_mass",
    "loss/geo/bbox_geo",
    "loss/geo/bbox_size_aux",
    "bbox_geo/groups_total",
    "bbox_size_aux/mean_width",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_term_one_pass_equals_two_pass_and_unmaterialised(
    layout: str, make_config: Callable[..., TrainConfig]
) -> None:
    torch.manual_seed(0)
    custom = {**ALL_TERMS, "stage1_pass": {"materialize_logits": False}}
    trainer = build_trainer(make_config(layout=layout, custom=custom))
    assert isinstance(trainer.compute_loss_func, Stage1LossFunc)
    pipeline = trainer.stage1_pipeline()
    batches, num_items = _window(trainer)
    for drop in ((), (TOKEN_TYPES_KEY,)):  # types present / absent
        trainer.compute_loss_func = Stage1LossFunc(trainer)
        pipeline.materialize_logits = False
        unmaterialised = _run_window(trainer, batches, num_items, drop=drop)
        pipeline.materialize_logits = True
        one_pass = _run_window(trainer, batches, num_items, drop=drop)
        assert TERM_KEYS <= set(one_pass[2])
        _assert_same(unmaterialised, one_pass)
        trainer.compute_loss_func = None
        two_pass = _run_window(trainer, batches, num_items, drop=drop)
        _assert_same(one_pass, two_pass, ignore=frozenset({"token_acc"}))


def test_run_with_every_term_passes_check_logs(
    make_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    from coordexp.cli import check_logs

    result = train(make_config(layout="packing", custom=ALL_TERMS))
    capsys.readouterr()
    code = check_logs.main([str(result.output_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report["violations"]
    assert report["missing_train"] == [] and report["missing_eval"] == []
    assert TERM_KEYS <= set(report["expected"])
    assert set(report["expected"]) <= set(report["seen_train"]) & set(report["seen_eval"])
    records = [json.loads(line) for line in Path(result.output_dir, "logging.jsonl").read_text().splitlines()]
    assert any("eval_loss/geo/bbox_geo" in r for r in records)


def test_run_with_the_grad_monitor_passes_check_logs(
    make_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    """custom.grad_monitor on (every other optimizer step) with every term: every gradmon key the
    config enables is seen in train records, none in eval records, and check-logs passes."""
    from coordexp.cli import check_logs

    custom = {**ALL_TERMS, "grad_monitor": {"enabled": True, "interval": 2}}
    result = train(make_config(layout="packing", custom=custom))
    capsys.readouterr()
    code = check_logs.main([str(result.output_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report["violations"]
    assert report["missing_train"] == [] and report["missing_eval"] == []
    gradmon = {key for key in report["expected"] if key.startswith("gradmon/")}
    assert {
        "gradmon/cos_to_total/bbox_geo",
        "gradmon/grad_norm/text_gate",
        "gradmon/total_grad_norm",
    } <= gradmon
    assert gradmon <= set(report["seen_train"]) and not gradmon & set(report["seen_eval"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_grad_monitor_without_logits_equals_the_materialised_pass(
    layout: str, make_config: Callable[..., TrainConfig]
) -> None:
    """A real accumulation window (two micro-batches) with every term and the monitor on every step:
    the gradmon values (with respect to the logits either way) of the pass from the hidden states equal
    the materialised pass's, and the monitor changes neither loss nor gradient."""
    torch.manual_seed(0)
    custom = {**ALL_TERMS, "grad_monitor": {"enabled": True, "interval": 1}}
    trainer = build_trainer(make_config(layout=layout, custom=custom))
    pipeline = trainer.stage1_pipeline()
    batches, num_items = _window(trainer)
    runs = {}
    for materialize in (False, True):
        trainer.compute_loss_func = Stage1LossFunc(trainer)
        pipeline.materialize_logits = materialize
        runs[materialize] = _run_window(trainer, batches, num_items)
    assert "gradmon/cos_to_total/bbox_size_aux" in runs[True][2]
    _assert_same(runs[False], runs[True])
    assert pipeline.coord is not None
    pipeline.coord.grad_monitor = None  # the same window unmonitored: the same losses and gradients
    plain = _run_window(trainer, batches, num_items)
    assert not any(key.startswith("gradmon/") for key in plain[2])
    _assert_same(plain, runs[True], logged=False)
