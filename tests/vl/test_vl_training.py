"""Real ms-swift runs of the tiny Qwen3-VL: every layout with the coord loss on and off passes
``check-logs`` with every enabled key seen in train and eval; without materialised logits the
Stage-1 pass from the VL model's ``lm_head`` equals the materialised one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from coordexp.launch import TrainConfig, build_trainer, train
from tests.integration.test_one_pass_seam import LAYOUTS, _assert_same, _run_window, _window

pytestmark = [pytest.mark.vl, pytest.mark.slow]


def _assert_every_enabled_key_seen(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coordexp.cli import check_logs

    capsys.readouterr()
    code = check_logs.main([str(run_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report["violations"]
    assert report["missing_train"] == [] and report["missing_eval"] == []
    assert set(report["expected"]) <= set(report["seen_train"]) & set(report["seen_eval"])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_vl_run_passes_check_logs(
    layout: str,
    coord_on: bool,
    make_vl_config: Callable[..., TrainConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = train(make_vl_config(layout=layout, coord_on=coord_on))
    records = [json.loads(line) for line in (result.output_dir / "logging.jsonl").read_text().splitlines()]
    assert sum("eval_loss" in r for r in records) >= 2
    keys = {k for r in records for k in r}
    assert ("base_ce/loss" in keys) is coord_on and ("eval_base_ce/loss" in keys) is coord_on
    assert {"coord_token_acc", "desc_token_frac", "coord_monitor/flip_text_to_coord"} <= keys
    _assert_every_enabled_key_seen(result.output_dir, capsys)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vl_without_materialised_logits_equals_materialised(
    layout: str, make_vl_config: Callable[..., TrainConfig]
) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(
        make_vl_config(layout=layout, custom={"stage1_pass": {"materialize_logits": False}})
    )
    pipeline = trainer.stage1_pipeline()
    head = trainer.model.get_output_embeddings()
    assert type(trainer.model).__name__ == "Qwen3VLForConditionalGeneration"
    batches, num_items = _window(trainer)
    assert any((b["input_ids"] == 151655).any() for b in batches)  # images in the window
    for drop in ((), (TOKEN_TYPES_KEY,)):
        pipeline.materialize_logits = False
        unmaterialised = _run_window(trainer, batches, num_items, drop=drop)
        assert "forward" not in head.__dict__  # the head's forward is restored after the step
        pipeline.materialize_logits = True
        materialised = _run_window(trainer, batches, num_items, drop=drop)
        _assert_same(unmaterialised, materialised)
        assert "token_acc" in unmaterialised[2]
        assert any("lm_head" in name for name in unmaterialised[1])
        assert any("visual" in name for name in unmaterialised[1])  # gradients reach the vision tower


def test_vl_demo_run_without_materialised_logits_passes_check_logs(
    make_vl_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    result = train(make_vl_config(layout="packing", custom={"stage1_pass": {"materialize_logits": False}}))
    _assert_every_enabled_key_seen(result.output_dir, capsys)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vl_every_objective_term_without_logits_equals_materialised(
    layout: str, make_vl_config: Callable[..., TrainConfig]
) -> None:
    """Issue 21's terms (text gate, bbox_geo, bbox_size_aux) on Qwen3-VL: the pass from the VL model's
    ``lm_head`` equals the materialised one, with and without token types."""
    from tests.integration.test_objective_terms_runs import ALL_TERMS, TERM_KEYS

    torch.manual_seed(0)
    custom = {**ALL_TERMS, "stage1_pass": {"materialize_logits": False}}
    trainer = build_trainer(make_vl_config(layout=layout, custom=custom))
    pipeline = trainer.stage1_pipeline()
    batches, num_items = _window(trainer)
    for drop in ((), (TOKEN_TYPES_KEY,)):
        pipeline.materialize_logits = False
        unmaterialised = _run_window(trainer, batches, num_items, drop=drop)
        pipeline.materialize_logits = True
        materialised = _run_window(trainer, batches, num_items, drop=drop)
        assert TERM_KEYS <= set(materialised[2])
        _assert_same(unmaterialised, materialised)


def test_vl_run_with_every_objective_term_passes_check_logs(
    make_vl_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_objective_terms_runs import ALL_TERMS

    result = train(make_vl_config(layout="packing", custom=ALL_TERMS))
    _assert_every_enabled_key_seen(result.output_dir, capsys)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("materialize", [True, False], ids=["logits", "no_logits"])
def test_vl_every_term_equals_the_slow_reference(
    layout: str, materialize: bool, make_vl_config: Callable[..., TrainConfig]
) -> None:
    """Issue 21's terms on Qwen3-VL: each term's logged window value and every parameter's gradient equal
    the slow reference computed from the VL model's full logits."""
    from tests.integration.test_objective_terms_runs import ALL_TERMS, assert_window_equals_the_reference

    torch.manual_seed(0)
    custom = {**ALL_TERMS, "stage1_pass": {"materialize_logits": materialize}}
    assert_window_equals_the_reference(build_trainer(make_vl_config(layout=layout, custom=custom)))
