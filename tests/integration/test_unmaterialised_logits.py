"""``custom.stage1_pass.materialize_logits: false`` on a real ms-swift 4.6 ``Seq2SeqTrainer`` (tiny demo
Qwen3, tied embeddings as the demo has them or not).

For every layout (padded: ``logits_to_keep`` an int; padding_free and packing: a bool mask) and coord
loss on / off (token types present / absent), one accumulation window of two micro-batches through
``training_step`` gives the same losses, parameter gradients and logged values, ms-swift's
``token_acc`` included, as the materialised one-pass path; a real demo run with the mode on writes every
key of the materialised run and passes ``check-logs``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from coordexp.launch import TrainConfig, build_trainer, train
from tests.integration.test_one_pass_seam import LAYOUTS, _assert_same, _run_window, _window

pytestmark = pytest.mark.slow
OFF = {"stage1_pass": {"materialize_logits": False}}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_equals_the_materialised_one_pass(
    layout: str, coord_on: bool, make_config: Callable[..., TrainConfig]
) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(make_config(layout=layout, coord_on=coord_on, custom=OFF))
    pipeline = trainer.stage1_pipeline()
    assert pipeline.materialize_logits is False
    batches, num_items = _window(trainer)
    head = trainer.model.get_output_embeddings()
    for drop in ((), (TOKEN_TYPES_KEY,)):
        pipeline.materialize_logits = False
        unmaterialised = _run_window(trainer, batches, num_items, drop=drop)
        assert "forward" not in head.__dict__
        pipeline.materialize_logits = True
        materialised = _run_window(trainer, batches, num_items, drop=drop)
        _assert_same(unmaterialised, materialised)
        assert "token_acc" in unmaterialised[2]
        assert any("lm_head" in name or "embed_tokens" in name for name in unmaterialised[1])


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines() if line.strip()]


def _keys(run_dir: Path) -> set[str]:
    return {k for r in _records(run_dir) for k in r}


@pytest.mark.parametrize("layout", ["padded", "packing"])
def test_real_run_passes_check_logs_with_every_key(
    layout: str, make_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from coordexp.cli import check_logs

    reference = train(make_config(layout=layout, training={"output_dir": str(tmp_path / "materialised")}))
    result = train(make_config(layout=layout, custom=OFF, training={"output_dir": str(tmp_path / "off")}))
    assert _keys(result.output_dir) == _keys(reference.output_dir)
    assert "token_acc" in _keys(result.output_dir) and "eval_token_acc" in _keys(result.output_dir)
    capsys.readouterr()
    assert check_logs.main([str(result.output_dir)]) == 0, capsys.readouterr().out
