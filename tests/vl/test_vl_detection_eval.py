"""custom.eval_detection on the tiny Qwen3-VL demo: the model answers from the images (ms-swift's
engine with the training template), every declared eval_det_* key lands in the eval records and
check-logs passes; answers equal to the ground truth score AP 1 in pixels of the real image sizes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from coordexp.cli import check_logs
from coordexp.detection import evaluation as evaluation_module
from coordexp.launch import TrainConfig, train
from coordexp.run_folder.names import DET_PREDICTIONS_FILE, detection_eval_dir
from tests.integration.test_detection_eval import _eval_records, _scripted

pytestmark = [pytest.mark.vl, pytest.mark.slow]

DETECTION = {"enabled": True, "limit": 4, "batch_size": 2, "max_new_tokens": 16}


def test_the_vl_demo_logs_every_detection_key(
    make_vl_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    run = train(make_vl_config(custom={"eval_detection": DETECTION})).output_dir
    records = _eval_records(run)
    assert records and all(
        "eval_det_bbox_AP" in r and "eval_det_f1ish@0.50_f1_full_micro" in r for r in records
    )
    lines = (detection_eval_dir(run, 2) / DET_PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    capsys.readouterr()
    assert check_logs.main([str(run)]) == 0, capsys.readouterr().out


def test_vl_answers_equal_to_the_ground_truth_score_one(
    make_vl_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluation_module, "generate_answers", _scripted)
    run = train(make_vl_config(custom={"eval_detection": DETECTION})).output_dir
    for record in _eval_records(run):
        assert record["eval_det_bbox_AP"] == pytest.approx(1.0)
        assert record["eval_det_f1ish@0.50_f1_full_micro"] == 1.0
    first = json.loads((detection_eval_dir(run, 2) / DET_PREDICTIONS_FILE).read_text().splitlines()[0])
    assert max(max(o["bbox"]) for o in first["gt"]) > 0 and first["pred"] == [
        {**o, "score": 1.0} for o in first["gt"]
    ]
