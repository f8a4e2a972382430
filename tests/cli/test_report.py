"""``coordexp report``: a PNG with the catalog's panels and a per-step CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.cli import report
from coordexp.cli.report import CSV_NAME, PNG_NAME, build_table, panels_for
from coordexp.generated import metric_keys as K
from coordexp.run_folder.reader import read_run
from tests.cli.runs import RUN_KEYS, make_run


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_report_writes_png_and_csv_into_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    assert report.main([str(run)]) == 0
    out = capsys.readouterr().out
    png, csv_path = run / PNG_NAME, run / CSV_NAME
    assert f"wrote {png}" in out and f"wrote {csv_path}" in out
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width >= 1000 and height >= 1000

    header, rows = read_csv(csv_path)
    assert header[0] == "step"
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    train_cols = {K.LOSS, K.GRAD_NORM, K.TOKEN_ACC, K.EPOCH, *RUN_KEYS}
    eval_cols = {K.EVAL_LOSS, K.EVAL_RUNTIME, "eval_" + K.TOKEN_ACC, *("eval_" + k for k in RUN_KEYS)}
    eval_speed = {K.EVAL_SAMPLES_PER_SECOND, K.EVAL_STEPS_PER_SECOND}
    assert set(header[1:]) == train_cols | eval_cols | eval_speed | {K.TRAIN_SPEED_S_IT}
    # train columns first, loss leading; eval columns after every train column
    assert header[1] == K.LOSS
    assert max(header.index(c) for c in train_cols) < min(header.index(c) for c in eval_cols)
    # summary and progress fields are not per-step numbers
    assert K.TRAIN_RUNTIME not in header and K.GLOBAL_STEP_MAX_STEPS not in header
    by_step = {r["step"]: r for r in rows}
    assert float(by_step["2"][K.COORD_DIAG_LOSS]) == pytest.approx(1.5)
    assert float(by_step["2"]["eval_" + K.COORD_DIAG_LOSS]) == pytest.approx(1.575)
    assert by_step["1"]["eval_" + K.COORD_DIAG_LOSS] == ""  # no eval at step 1


def test_panels_follow_the_catalog_groups(tmp_path: Path) -> None:
    logs = read_run(make_run(tmp_path))
    panels = panels_for(build_table(logs.records_from("logging.jsonl"), "logging.jsonl"))
    titles = [p.title for p in panels]
    assert titles[0].startswith("loss composition")
    loss_keys = set(panels[0].keys)
    expected_loss = {K.LOSS, K.BASE_CE_LOSS, K.COORD_DIAG_LOSS, K.COORD_DIAG_SOFT_CE, K.COORD_DIAG_W1}
    terms = {  # issue 21's terms in the loss (the clean run has them on)
        K.COORD_DIAG_TEXT_GATE,
        K.LOSS_GEO_BBOX_GEO,
        K.LOSS_GEO_BBOX_SMOOTHL1,
        K.LOSS_GEO_BBOX_CIOU,
        K.LOSS_GEO_BBOX_SIZE_AUX,
        K.LOSS_GEO_BBOX_LOG_WH,
        K.LOSS_GEO_BBOX_OVERSIZE,
    }
    assert loss_keys == expected_loss | {K.COORD_DIAG_CE, K.COORD_DIAG_GATE} | terms
    assert any(t.startswith("coord_diag") for t in titles)
    assert "token_types" in titles and "coord_monitor" in titles
    token_acc = next(p for p in panels if p.title == "token_acc")
    assert token_acc.keys[0] == K.TOKEN_ACC
    assert not any(t.startswith(("legacy", "framework")) for t in titles)
    plotted = {k for p in panels for k in p.keys}
    assert not plotted & {K.COORD_SOFTCE_W1_LOSS, K.EPOCH}


def test_missing_groups_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, custom={}, conditions=("runtime", "supervised"))
    logs = read_run(run)
    titles = [p.title for p in panels_for(build_table(logs.records_from("logging.jsonl"), "logging.jsonl"))]
    # ms-swift's own token_acc still gets the token_acc panel
    assert titles == ["loss composition (loss = base_ce + coord_diag terms)", "runtime", "token_acc"]
    assert report.main([str(run)]) == 0
    assert "(3 panels)" in capsys.readouterr().out


def test_out_folder_and_tensorboard_only_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, jsonl=False, trainer_state=False)
    out = tmp_path / "reports" / "r1"
    assert report.main([str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "from tensorboard:runs/" in printed
    assert (out / PNG_NAME).is_file() and (out / CSV_NAME).is_file()
    header, rows = read_csv(out / CSV_NAME)
    assert "eval_" + K.COORD_DIAG_LOSS in header and len(rows) == 4
    assert not (run / PNG_NAME).exists()


def test_run_without_metrics_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 2
    assert "no logging.jsonl" in capsys.readouterr().err
    summary_only = tmp_path / "summary"
    summary_only.mkdir()
    record = {K.TRAIN_RUNTIME: 1.0, K.TRAIN_LOSS: 2.0, K.GLOBAL_STEP_MAX_STEPS: "4/4"}
    (summary_only / "logging.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert report.main([str(summary_only)]) == 2
    assert "no train or eval metric records" in capsys.readouterr().err


def test_parser_prog() -> None:
    assert report.build_parser().prog == "coordexp report"


def test_the_gradient_monitor_gets_its_panels(tmp_path: Path) -> None:
    from coordexp.cli.check_logs import conditions_from_config
    from coordexp.config import load_custom_config

    custom = {"coord_soft_ce_w1": {"enabled": True}, "grad_monitor": {"enabled": True}}
    conditions = tuple(conditions_from_config(load_custom_config(custom)))
    logs = read_run(make_run(tmp_path, custom=custom, conditions=conditions))
    panels = {
        p.title: p for p in panels_for(build_table(logs.records_from("logging.jsonl"), "logging.jsonl"))
    }
    cosines = panels["gradmon [-1, 1]"]
    assert cosines.keys and all(k.startswith("gradmon/cos_to_total/") for k in cosines.keys)
    assert not cosines.log_scale
    assert panels["gradmon [0, 1]"].keys == (K.GRADMON_NEG_COSINE_PAIR_FRAC,)
    norms = panels["gradmon (scale)"]
    assert K.GRADMON_TOTAL_GRAD_NORM in norms.keys and K.GRADMON_GRAD_NORM_BASE_CE in norms.keys
