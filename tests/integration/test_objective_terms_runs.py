"""Real ms-swift runs of the tiny Qwen3 with issue 21's terms on (text gate, bbox_geo, bbox_size_aux,
adjacent repulsion; boxes from coordexp's collator, i.e. the answer parser):
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
from coordexp.swift_seam.trainer_sections import find_tokenizer, trainer_custom
from tests.integration.objective_reference_runs import (
    model_logits,
    reference_parts,
    window_objective,
    window_values,
)
from tests.integration.test_one_pass_seam import LAYOUTS, _assert_same, _run_window, _window

pytestmark = pytest.mark.slow

ALL_TERMS: dict[str, Any] = {
    "coord_soft_ce_w1": {
        "text_gate_weight": 0.1,
        "adjacent_repulsion_weight": 0.5,
        "adjacent_repulsion_filter_mode": "global",
        "adjacent_repulsion_margin_ratio": 0.05,
        "adjacent_repulsion_copy_margin": 0.0,
    },
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
    "coord_diag/adjacent_repulsion",
    "coord_diag/adjacent_repulsion_pair_count",
    "coord_diag/adjacent_repulsion_copy_score_mean",
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
    # report plots every term's keys (the loss composition panel holds each term of the objective)
    from coordexp.cli import report
    from coordexp.cli.run_dir import read_run_or_say_why

    assert report.main([str(result.output_dir)]) == 0
    assert Path(result.output_dir, report.PNG_NAME).stat().st_size > 0
    logs = read_run_or_say_why("report", result.output_dir)
    assert logs is not None
    table = report._table_of(logs)
    assert table is not None
    plotted = {k for panel in report.panels_for(table) for k in panel.keys}
    assert TERM_KEYS <= plotted
    composition = report.panels_for(table)[0].keys
    assert {
        "coord_diag/text_gate",
        "loss/geo/bbox_geo",
        "loss/geo/bbox_size_aux",
        "coord_diag/adjacent_repulsion",
    } <= set(composition)


LOGGED_TERMS = {
    "text_gate": "coord_diag/text_gate",
    "bbox_geo": "loss/geo/bbox_geo",
    "bbox_size_aux": "loss/geo/bbox_size_aux",
    "adjacent_repulsion": "coord_diag/adjacent_repulsion",
    "coord": "coord_diag/loss",
    "base_ce": "base_ce/loss",
}


def assert_window_equals_the_reference(trainer: Any) -> None:
    """A real window (two micro-batches) of ``trainer``, with and without token types: the gradient of
    every parameter and each term's logged window value equal the slow reference's."""
    custom = {k: v for k, v in trainer_custom(trainer).model_dump().items() if v is not None}
    tokenizer = find_tokenizer(trainer)
    batches, num_items = _window(trainer)
    for drop in ((), (TOKEN_TYPES_KEY,)):
        _, grads, logged = _run_window(trainer, batches, num_items, drop=drop)
        trainer.model.zero_grad(set_to_none=True)
        parts = [
            reference_parts(model_logits(trainer.model, b), b, tokenizer, custom, typed=not drop)
            for b in batches
        ]
        assert sum(p["adjacent_repulsion"][1] for p in parts) > 0, "no applied pair in the window"
        window_objective(parts).backward()
        for name, p in trainer.model.named_parameters():
            if p.grad is None:
                assert name not in grads, name
                continue
            want = p.grad
            torch.testing.assert_close(
                grads[name], want, rtol=1e-5, atol=1e-5 * float(want.abs().max()), msg=name
            )
        for term, value in window_values(parts).items():
            assert logged[LOGGED_TERMS[term]] == pytest.approx(value, rel=1e-4), term


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("materialize", [True, False], ids=["logits", "no_logits"])
def test_every_term_equals_the_slow_reference_in_a_real_run(
    layout: str, materialize: bool, make_config: Callable[..., TrainConfig]
) -> None:
    torch.manual_seed(0)
    custom = {**ALL_TERMS, "stage1_pass": {"materialize_logits": materialize}}
    assert_window_equals_the_reference(build_trainer(make_config(layout=layout, custom=custom)))


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
