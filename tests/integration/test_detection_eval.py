"""custom.eval_detection in real ms-swift runs on the tiny Qwen3 demo.

- The eval records carry exactly the ``eval_det_*`` keys the catalog declares for the settings,
  ``check-logs`` passes, each evaluation's files are written, and ``load_best_model_at_end`` with
  ``metric_for_best_model`` set to a detection key works.
- A run with the evaluation and one without log the same training values step by step (the RNG
  is restored after generating).
- Answers equal to the ground truth (the generation replaced by the val rows' own answers) give
  AP = AR = 1 and every F1 = 1 through the whole path: trainer, gather, scoring, logs.
- A val row whose answer cannot serve as ground truth stops the run at start, naming its file:line.
- Two gloo ranks log the same detection values as one rank on the same rows.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordexp.cli import check_logs, report
from coordexp.config import load_custom_config
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.detection import evaluation as evaluation_module
from coordexp.detection.generate import Generated
from coordexp.generated.metric_catalog import EVAL_ONLY_KEYS
from coordexp.launch import TrainConfig, demo_config, parse_config, train
from coordexp.rows.data import answer_texts
from coordexp.rows.refused import DataError
from coordexp.run_folder.names import DET_METRICS_FILE, DET_PREDICTIONS_FILE, detection_eval_dir
from coordexp.run_folder.reader import read_run
from tests.integration.test_lazy_loader_logs import logged_values
from tests.processes import child_env, torchrun

pytestmark = pytest.mark.slow

DETECTION = {"enabled": True, "limit": 6, "batch_size": 3, "max_new_tokens": 16}


def _eval_records(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in logged_values(run_dir) if "eval_loss" in r]


def _train_records(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in logged_values(run_dir) if "loss" in r]


def test_detection_keys_land_in_the_eval_records_and_training_is_unchanged(
    make_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    best = {
        "metric_for_best_model": "eval_det_bbox_AP",
        "greater_is_better": True,
        "load_best_model_at_end": True,
        "save_strategy": "steps",
        "save_steps": 2,
    }
    cfg = make_config(custom={"eval_detection": DETECTION}, training=best)
    run = train(cfg).output_dir
    expected = keys_written_under(conditions_from_config(load_custom_config(cfg.custom))) & EVAL_ONLY_KEYS
    assert len(expected) == 7 + 12 + 2 * 24
    evals = _eval_records(run)
    assert len(evals) >= 2
    for record in evals:
        assert {k for k in record if k.startswith("eval_det_")} == {f"eval_{k}" for k in expected}
    assert not any(k.startswith(("det_", "eval_det_")) for r in _train_records(run) for k in r)
    for step in (2, 4):
        folder = detection_eval_dir(run, step)
        summary = json.loads((folder / DET_METRICS_FILE).read_text(encoding="utf-8"))
        assert (
            summary["rows"] == 6
            and summary["metrics"]["det_bbox_AP"] == evals[step // 2 - 1]["eval_det_bbox_AP"]
        )
        assert len((folder / DET_PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()) == 6
    capsys.readouterr()
    assert check_logs.main([str(run)]) == 0, capsys.readouterr().out
    panels = report.panels_for(report.build_table(read_run(run).records, "logging.jsonl"))
    detection_panel = next(p for p in panels if p.title == "detection (eval)")
    assert "det_bbox_AP" in detection_panel.keys and "det_f1ish@0.50_f1_full_micro" in detection_panel.keys

    plain = make_config(training={**best, "metric_for_best_model": "eval_loss", "greater_is_better": False})
    plain.training["output_dir"] = str(Path(plain.training["output_dir"]).with_name("plain"))
    baseline = _train_records(train(plain).output_dir)
    assert _train_records(run) == baseline  # step by step, every value


def _scripted(
    model: Any,
    template: Any,
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    cfg: Any,
    **_: Any,
) -> list[Generated]:
    """The model "answers" each row with the row's own answer."""
    return [Generated(index, answer_texts(row)[-1], (), ()) for index, row in rows]


def test_answers_equal_to_the_ground_truth_score_one(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluation_module, "generate_answers", _scripted)
    run = train(
        make_config(custom={"eval_detection": {**DETECTION, "f1ish_iou_thrs": [0.5, 0.75]}})
    ).output_dir
    for record in _eval_records(run):
        for stat in ("AP", "AP50", "AP75", "AR10", "AR100"):  # AR1: one box per image and category
            assert record[f"eval_det_bbox_{stat}"] == pytest.approx(1.0), stat
        for tau in ("0.50", "0.75"):
            assert record[f"eval_det_f1ish@{tau}_f1_full_micro"] == 1.0
            assert record[f"eval_det_f1ish@{tau}_f1_loc_macro"] == 1.0
        assert record["eval_det_empty_pred"] == 0 and record["eval_det_parse_valid_rate"] == 1.0


def test_a_best_model_metric_the_config_never_logs_is_refused_at_load(
    make_config: Callable[..., TrainConfig],
) -> None:
    from coordexp.config import ConfigError

    with pytest.raises(ConfigError, match=r"^training.metric_for_best_model: eval_det_bbox_AP is not logged"):
        make_config(training={"metric_for_best_model": "eval_det_bbox_AP"})
    with pytest.raises(
        ConfigError, match=r"^custom.eval_detection: not supported with FSDP or DeepSpeed ZeRO-3"
    ):
        make_config(
            custom={"eval_detection": DETECTION},
            training={"deepspeed": {"zero_optimization": {"stage": 3}}},
        )
    with pytest.raises(ConfigError, match=r"eval_det_f1ish@0.75_f1_full_micro is not logged"):
        make_config(
            custom={"eval_detection": DETECTION},
            training={"metric_for_best_model": "eval_det_f1ish@0.75_f1_full_micro"},
        )


def test_a_val_row_that_cannot_be_ground_truth_stops_the_run_naming_it(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    cfg = make_config(custom={"eval_detection": DETECTION})
    val = Path(cfg.data.val[0])
    rows = [json.loads(x) for x in val.read_text(encoding="utf-8").splitlines()]
    rows[1]["messages"][-1]["content"] = (
        '{"objects": [{"desc": "cat", "bbox_2d": ["<|coord_1|>", "<|coord_2|>"]}]}'
    )
    rows[1].pop("assistant_payload", None)
    bad = tmp_path / "bad_val.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg.data.val[:] = [str(bad)]
    with pytest.raises(DataError, match=rf"^{bad}:2: custom.eval_detection ground truth: .*bbox_points"):
        train(cfg)


def _two_rank_config(tmp_path: Path, name: str, batch: int) -> dict[str, Any]:
    """The same global batch on either rank count; answers generated one row at a time, so no
    row's answer depends on which rows share its batch (left padding)."""
    raw = demo_config(tmp_path / "demo").model_dump(mode="json")
    raw["data"].update(max_samples=8, layout="padded", cache_dir=str(tmp_path / "cache"))
    raw["training"].update(
        output_dir=str(tmp_path / name),
        max_steps=2,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=2,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        metric_for_best_model="eval_det_bbox_AP",
        greater_is_better=True,
        load_best_model_at_end=True,
        report_to=[],
        ddp_timeout=120,
    )
    raw["custom"]["contracts"] = {"mode": "strict"}
    raw["custom"]["eval_detection"] = {**DETECTION, "limit": 5, "batch_size": 1}
    return raw


def test_two_ranks_log_the_detection_values_of_one_rank_and_pick_the_same_best_checkpoint(
    tmp_path: Path,
) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(_two_rank_config(tmp_path, "two", batch=2)), encoding="utf-8")
    proc = subprocess.run(
        torchrun(str(Path(__file__).with_name("detection_best_model_script.py")), str(config), nproc=2),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    picks = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("BEST ")]
    assert sorted(p["rank"] for p in picks) == [0, 1]
    assert picks[0]["best"] == picks[1]["best"] is not None and picks[0]["metric"] == picks[1]["metric"]
    one = train(parse_config(_two_rank_config(tmp_path, "one", batch=4))).output_dir

    def detection(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k.startswith("eval_det_")} for r in _eval_records(run)]

    two_values, one_values = detection(tmp_path / "two"), detection(one)
    # the script only trains; train() evaluates once more at the end
    assert len(two_values) == 2 and two_values[0] and len(one_values) == 3
    assert two_values == one_values[:2]


def test_a_generation_error_stops_the_run_with_one_line(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordexp.detection.evaluation import DetectionEvalError

    def broken(*_: Any, **__: Any) -> list[Generated]:
        raise RuntimeError("out of memory\nwhile generating")

    monkeypatch.setattr(evaluation_module, "generate_answers", broken)
    message = (
        r"^custom.eval_detection: generation failed on rank 0: RuntimeError: out of memory while generating$"
    )
    with pytest.raises(DetectionEvalError, match=message):
        train(make_config(custom={"eval_detection": DETECTION}))
