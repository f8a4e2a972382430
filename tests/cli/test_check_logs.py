"""``coordexp check-logs``: a clean run passes, each kind of violation fails with exit 1."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.cli import check_logs
from coordexp.cli.check_logs import bucket_like, conditions_from_config
from coordexp.config import load_custom_config
from coordexp.contracts import keys_written_under
from coordexp.generated import metric_keys as K
from coordexp.generated.metric_catalog import COORDEXP_KEYS, DEPRECATED_ALIASES, EVAL_ONLY_KEYS
from tests.cli.runs import ALL_CONDITIONS, RUN_KEYS, Rec, make_run


def check_json(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code = check_logs.main([str(run), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def rules(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(v["key"], v["rule"]) for v in report["violations"]}


def test_clean_run_passes_with_a_coverage_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    assert check_logs.main([str(run)]) == 0
    out = capsys.readouterr().out
    # the detection keys are eval-only: never counted for train records
    train_total, total, enabled = len(COORDEXP_KEYS - EVAL_ONLY_KEYS), len(COORDEXP_KEYS), len(RUN_KEYS)
    assert f"coverage: train {enabled}/{train_total} catalog keys seen ({enabled}/{enabled} enabled)" in out
    assert f"eval {enabled}/{total} ({enabled}/{enabled} enabled)" in out
    assert "enabled but never seen: none" in out
    # deprecated aliases are written with the coord loss on: a note, not an error
    assert "deprecated aliases seen (note): coord_softce_w1/ce -> coord_diag/ce" in out
    assert "result: OK" in out
    assert "VIOLATION" not in out
    assert "dataset labels: coco, lvis" in out


def test_clean_run_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_json(make_run(tmp_path), capsys)
    assert code == 0
    assert report["ok"] is True
    assert report["violations"] == []
    assert set(report["expected"]) == RUN_KEYS
    assert report["deprecated_seen"] == {a: t for a, t in dict(DEPRECATED_ALIASES).items() if a in RUN_KEYS}
    assert set(report["conditions"]) == set(ALL_CONDITIONS)


def _set(mode: str, key: str, value: Any, step: int = 2) -> Callable[[list[Rec]], None]:
    def mutate(records: list[Rec]) -> None:
        for r in records:
            if r.mode == mode and r.step == step:
                r.values[key] = value

    return mutate


def _drop(key: str, modes: tuple[str, ...]) -> Callable[[list[Rec]], None]:
    def mutate(records: list[Rec]) -> None:
        for r in records:
            if r.mode in modes:
                r.values.pop(key, None)
                r.values.pop("eval_" + key, None)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_set("train", "my_new_metric", 1.0), ("my_new_metric", "undeclared"), id="undeclared"),
        pytest.param(
            _set("train", "o365/token_acc", 0.5), ("o365/token_acc", "bucket_like"), id="bucket-like"
        ),
        pytest.param(
            _set("train", "lvis/token_acc", 0.5), ("lvis/token_acc", "per_dataset_bucket"), id="bucket"
        ),
        pytest.param(
            _set("eval", "eval_token_acc_coco", 0.5),
            ("eval_token_acc_coco", "per_dataset_bucket"),
            id="eval-bucket",
        ),
        pytest.param(_set("train", K.COORD_DIAG_W1, math.nan), (K.COORD_DIAG_W1, "non_finite"), id="nan"),
        pytest.param(
            _set("eval", "eval_" + K.COORD_DIAG_LOSS, math.inf),
            ("eval_" + K.COORD_DIAG_LOSS, "non_finite"),
            id="inf",
        ),
        pytest.param(_set("train", K.GRAD_NORM, math.nan), (K.GRAD_NORM, "non_finite"), id="framework-nan"),
        pytest.param(
            _set("train", K.TEXT_TOKEN_ACC, 1.5), (K.TEXT_TOKEN_ACC, "out_of_range"), id="fraction>1"
        ),
        pytest.param(
            _set("train", K.COORD_DIAG_LOSS, -0.5), (K.COORD_DIAG_LOSS, "out_of_range"), id="negative"
        ),
        pytest.param(
            _set("train", K.COORD_DIAG_LOSS, "0.3"), (K.COORD_DIAG_LOSS, "not_a_number"), id="string"
        ),
        pytest.param(_set("train", K.LOSS, None), (K.LOSS, "not_a_number"), id="null"),
        pytest.param(
            _set("train", "eval_" + K.COORD_DIAG_LOSS, 0.3),
            ("eval_" + K.COORD_DIAG_LOSS, "mode_mismatch"),
            id="mode",
        ),
        pytest.param(
            _drop(K.COORD_DIAG_W1, ("eval",)),
            ("eval_" + K.COORD_DIAG_W1, "missing_eval"),
            id="missing-in-eval",
        ),
        pytest.param(_drop(K.TEXT_TOKEN_ACC, ("train", "eval")), (K.TEXT_TOKEN_ACC, "missing"), id="missing"),
    ],
)
def test_each_violation_kind_fails(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[list[Rec]], None],
    expected: tuple[str, str],
) -> None:
    run = make_run(tmp_path, mutate=mutate)
    code, report = check_json(run, capsys)
    assert code == 1
    assert expected in rules(report)
    assert report["ok"] is False
    # the text form names the record (source#line, step) and the key
    assert check_logs.main([str(run)]) == 1
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("VIOLATION") and f": {expected[0]}: " in x)
    assert expected[1] in line
    if expected[1] not in ("missing", "missing_eval"):
        assert "logging.jsonl#" in line and "step 2" in line


def test_missing_key_in_both_forms_is_reported_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path, mutate=_drop(K.TEXT_TOKEN_ACC, ("train", "eval")))
    code, report = check_json(run, capsys)
    assert code == 1
    assert rules(report) == {(K.TEXT_TOKEN_ACC, "missing"), ("eval_" + K.TEXT_TOKEN_ACC, "missing_eval")}
    check_logs.main([str(run)])
    assert f"enabled but never seen: {K.TEXT_TOKEN_ACC}, eval_{K.TEXT_TOKEN_ACC}" in capsys.readouterr().out


def test_bucket_with_known_labels_names_the_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, mutate=_set("train", "text_token_acc.coco", 0.5))
    code, report = check_json(run, capsys)
    assert code == 1
    found = [v for v in report["violations"] if v["key"] == "text_token_acc.coco"]
    # one per source that carries the record: logging.jsonl, trainer_state.json, TensorBoard
    assert len(found) == 3
    assert all(v["rule"] == "per_dataset_bucket" and "'coco'" in v["detail"] for v in found)


def test_extra_dataset_label_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, mutate=_set("train", "text_token_acc-objects365", 0.5))
    _, report = check_json(run, capsys)
    assert ("text_token_acc-objects365", "undeclared") in rules(report)
    _, report = check_json(run, capsys, "--dataset-label", "Objects365")
    assert ("text_token_acc-objects365", "per_dataset_bucket") in rules(report)


def test_bucket_like_without_labels() -> None:
    assert bucket_like("lvis/token_acc") == "lvis"
    assert bucket_like("token_acc/lvis") == "lvis"
    assert bucket_like("token_acc_coco") == "coco"
    assert bucket_like("eval_coco_token_acc") == "coco"
    assert bucket_like(f"eval_{K.COORD_DIAG_LOSS}/lvis") == "lvis"
    assert bucket_like("my_new_metric") is None


def test_unreadable_middle_line_fails_and_torn_last_line_is_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path)
    path = run / "logging.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines) + '\n{"loss": 0.', encoding="utf-8")
    assert check_logs.main([str(run)]) == 0
    assert "note: logging.jsonl#8: torn last line skipped" in capsys.readouterr().out
    path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n", encoding="utf-8")
    code, report = check_json(run, capsys)
    assert code == 1
    assert ("-", "unreadable") in rules(report)


def test_missing_or_empty_run_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_logs.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert check_logs.main([str(tmp_path)]) == 2
    assert "no logging.jsonl" in capsys.readouterr().err
    run = make_run(tmp_path / "bad", custom={"coord_soft_ce_w1": {"unknown": 1}})
    assert check_logs.main([str(run)]) == 2
    assert "custom.coord_soft_ce_w1.unknown" in capsys.readouterr().err


def test_coord_loss_off_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    custom = {"coord_soft_ce_w1": {"enabled": False}}
    conditions = conditions_from_config(load_custom_config(custom))
    assert "coord_diag" in conditions and "coord_loss" not in conditions
    run = make_run(tmp_path, custom=custom, conditions=tuple(conditions))
    code, report = check_json(run, capsys)
    assert code == 0, report["violations"]
    assert K.COORD_DIAG_CE not in report["expected"]
    assert K.COORD_DIAG_LOSS in report["expected"]
    assert report["deprecated_seen"] == {}


def test_key_of_a_disabled_feature_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    custom = {"coord_soft_ce_w1": {"enabled": False}}
    conditions = tuple(conditions_from_config(load_custom_config(custom)))
    run = make_run(tmp_path, custom=custom, conditions=conditions, mutate=_set("train", K.COORD_DIAG_CE, 0.1))
    code, report = check_json(run, capsys)
    assert code == 1
    assert (K.COORD_DIAG_CE, "not_enabled") in rules(report)


def test_conditions_from_config() -> None:
    none = conditions_from_config(None)
    assert keys_written_under(none) == {K.LEARNING_RATE, K.ACCUM_GRAD_STEPS, K.ACCUM_CURRENT_GRAD_STEPS}
    cfg = load_custom_config(
        {
            "coord_soft_ce_w1": {"enabled": True, "gate_weight": 0.0},
            "token_type_metrics": {"enabled": True, "log_top5": False, "coord_monitor_mass": False},
        }
    )
    held = conditions_from_config(cfg)
    assert {"coord_diag", "coord_loss", "token_metrics", "token_types"} <= held
    assert not {"coord_gate", "token_top5", "coord_monitor_mass"} & held
    expected = keys_written_under(held)
    assert K.COORD_DIAG_GATE not in expected and K.TOKEN_ACC_TOP5 not in expected
    off = conditions_from_config(load_custom_config({"token_type_metrics": {"enabled": False}}))
    assert not {"token_metrics", "token_types", "desc_targets", "format_targets", "coord_diag"} & off


def test_run_without_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # config says there is no val data: eval keys are not required
    run = make_run(tmp_path / "a", eval_every=0)
    code, report = check_json(run, capsys)
    assert code == 0, report["violations"]
    assert report["missing_eval"] == []
    # no config: nothing says the run skipped eval, so no eval record is a violation ...
    run = make_run(tmp_path / "b", eval_every=0, config=False)
    code, report = check_json(run, capsys)
    assert code == 1
    assert ("-", "no_eval_records") in rules(report)
    # ... unless told
    code, report = check_json(run, capsys, "--train-only")
    assert code == 0, report["violations"]


def test_no_config_expects_runtime_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, config=False)
    code, report = check_json(run, capsys)
    assert code == 0, report["violations"]
    assert set(report["expected"]) == {K.LEARNING_RATE, K.ACCUM_GRAD_STEPS, K.ACCUM_CURRENT_GRAD_STEPS}
    assert any("no run config" in n for n in report["notes"])


def test_tensorboard_only_run_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, jsonl=False, trainer_state=False)
    code, report = check_json(run, capsys)
    assert code == 0, report["violations"]
    assert set(report["seen_eval"]) == RUN_KEYS
    run = make_run(
        tmp_path / "nan",
        jsonl=False,
        trainer_state=False,
        mutate=_set("eval", "eval_" + K.COORD_DIAG_W1, math.nan),
    )
    code, report = check_json(run, capsys)
    assert code == 1
    (violation,) = report["violations"]
    assert violation["rule"] == "non_finite"
    assert violation["where"].startswith("tensorboard:runs/") and "(step 2, eval)" in violation["where"]


def test_parser_prog() -> None:
    assert check_logs.build_parser().prog == "coordexp check-logs"


def test_token_acc_is_range_checked_where_coordexp_computes_it() -> None:
    """``token_acc`` is ms-swift's key; under ``logits_unmaterialised`` coordexp's pass computes its
    value (the catalog's ``owner_when``), so check-logs holds the value to the catalog's range there."""
    from coordexp.cli.check_logs import check_record
    from coordexp.run_folder.reader import LogRecord

    record = LogRecord("logging.jsonl", 1, 1, "train", {"token_acc": 1.5, "loss": 2.0})
    assert check_record(record) == []  # ms-swift computes it: not coordexp's value to judge
    found = check_record(record, conditions={"logits_unmaterialised"})
    assert [(v.key, v.rule) for v in found] == [("token_acc", "out_of_range")]
    ok = LogRecord("logging.jsonl", 2, 2, "train", {"token_acc": 0.5})
    assert check_record(ok, conditions={"logits_unmaterialised"}) == []


def test_grad_monitor_keys_are_train_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coordexp.generated.metric_catalog import TRAIN_ONLY_KEYS

    assert TRAIN_ONLY_KEYS == {key for key in COORDEXP_KEYS if key.startswith("gradmon/")}
    custom = {"coord_soft_ce_w1": {"enabled": True}, "grad_monitor": {"enabled": True, "interval": 1}}
    conditions = tuple(conditions_from_config(load_custom_config(custom)))
    assert "grad_monitor" in conditions
    code, report = check_json(make_run(tmp_path / "a", custom=custom, conditions=conditions), capsys)
    assert code == 0, report["violations"]
    assert K.GRADMON_TOTAL_GRAD_NORM in report["expected"] and report["missing_eval"] == []
    run = make_run(
        tmp_path / "b",
        custom=custom,
        conditions=conditions,
        mutate=_set("eval", "eval_" + K.GRADMON_TOTAL_GRAD_NORM, 1.0),
    )
    code, report = check_json(run, capsys)
    assert code == 1
    assert ("eval_" + K.GRADMON_TOTAL_GRAD_NORM, "mode_mismatch") in rules(report)
