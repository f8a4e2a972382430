"""Refused rows: each one listed with file:line and reason, on the console and in the run folder;
the run stops above ``data.max_refused_fraction`` (default 0) with one line and exit code 2.

The bad-input matrix (layer ``data``) has one row per refusal kind; here: every kind in one file with
line numbers that count blank lines, a tolerated fraction, a clean split, the demo's own data, and
the CLI's one-line error after a real model load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordexp.coord_tokens.codec import invalid_coord_tokens
from coordexp.demo.dataset import make_rows
from coordexp.launch.run import demo_config
from coordexp.run_folder.names import REFUSED_ROWS_FILE
from tests.data import support


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(i: int = 0) -> str:
    return json.dumps(support.demo_rows(i + 1)[i], ensure_ascii=False)


def test_every_refusal_kind_is_listed_with_its_physical_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        _row(0),
        "",  # blank lines are skipped but counted: line numbers are what an editor shows
        "{not json",
        json.dumps([1, 2]),
        json.dumps(support.too_long_row()),
        json.dumps(support.user_turn_only_row()),
        json.dumps(support.out_of_range_coord_row()),
        json.dumps({"messages": []}),
        _row(1),
    ]
    path = _write(tmp_path / "mixed.jsonl", lines)
    run = tmp_path / "run"
    error, records = support.expect_refused(lambda: support.encode_splits([path], output_dir=run), run)
    where = str(path.resolve())
    assert [(r["file"], r["line"], r["split"]) for r in records] == [(where, n, "train") for n in range(3, 9)]
    reasons = [r["reason"] for r in records]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "each row must be an object with 'messages'"
    assert reasons[2].startswith("MaxLengthError: ")
    assert reasons[3].startswith("nothing supervised")
    assert reasons[4].startswith("assistant text has a coord token outside the 1000 bins: '<|coord_1555|>'")
    assert reasons[5].startswith("AssertionError: ")
    message = str(error)
    assert "\n" not in message and message.startswith(f"{where}:3: not valid JSON")
    assert f"(6 of 8 train rows refused, data.max_refused_fraction is 0; every refused row: {run}" in message
    out = capsys.readouterr().out
    assert f"refused rows: train 6 of 8; every refused row: {run / REFUSED_ROWS_FILE}" in out
    assert f"{where}:5: MaxLengthError" in out and "... and 1 more" in out  # the first five, then a count


def test_refused_rows_within_tolerance_are_left_out_and_listed(tmp_path: Path) -> None:
    rows = support.demo_rows(8)
    rows[2] = support.user_turn_only_row()
    train = _write(tmp_path / "train.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows])
    val = _write(tmp_path / "val.jsonl", [json.dumps(support.too_long_row()), _row(0), _row(1)])
    run = tmp_path / "run"
    train_ds, val_ds = support.encode_splits([train], [val], output_dir=run, max_refused_fraction=0.34)
    assert [r["sample_id"] for r in train_ds] == [r["sample_id"] for i, r in enumerate(rows) if i != 2]
    assert len(val_ds) == 2
    records = [json.loads(x) for x in (run / REFUSED_ROWS_FILE).read_text().splitlines()]
    assert [(Path(r["file"]).name, r["line"], r["split"]) for r in records] == [
        ("train.jsonl", 3, "train"),
        ("val.jsonl", 1, "val"),
    ]


def test_the_fraction_is_per_split(tmp_path: Path) -> None:
    train = _write(
        tmp_path / "train.jsonl", [_row(i) for i in range(9)] + [json.dumps(support.too_long_row())]
    )
    val = _write(tmp_path / "val.jsonl", [json.dumps(support.too_long_row()), _row(0)])
    run = tmp_path / "run"
    # 1 of 10 train rows is within 0.2, 1 of 2 val rows is not
    error, _ = support.expect_refused(
        lambda: support.encode_splits([train], [val], output_dir=run, max_refused_fraction=0.2), run
    )
    assert str(error).startswith(f"{val.resolve()}:1: MaxLengthError")


def test_a_split_with_every_row_refused_stops_even_at_full_tolerance(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.jsonl", [json.dumps(support.user_turn_only_row())])
    run = tmp_path / "run"
    error, _ = support.expect_refused(
        lambda: support.encode_splits([train], output_dir=run, max_refused_fraction=1.0), run
    )
    assert "(1 of 1 train rows refused" in str(error)


def test_clean_data_writes_nothing(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.jsonl", [_row(i) for i in range(3)])
    support.encode_splits([train], output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # the output folder is created only to list refusals


def test_the_demo_data_has_no_refused_row(tmp_path: Path) -> None:
    data = demo_config(support.demo_assets().root.parent).data
    assert data.max_refused_fraction == 0.0
    support.encode_splits(data.train, data.val, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    assets = support.demo_assets()
    rows = [json.dumps(r, ensure_ascii=False) for r in make_rows("lvis", "train", 3)]
    rows.insert(1, json.dumps(support.out_of_range_coord_row()))
    train = _write(tmp_path / "rows.jsonl", rows)
    config = {
        "model": {"path": str(assets.model_dir), "max_length": support.MAX_LENGTH},
        "data": {"train": [train.name]},
        "training": {"output_dir": "out", "max_steps": 1},
    }
    line = support.cli_stop_line(tmp_path, config)
    summary = tmp_path / "out" / REFUSED_ROWS_FILE
    assert line.startswith(f"coordexp train: {train.resolve()}:2: assistant text has a coord token outside")
    assert line.endswith(f"every refused row: {summary})")
    assert [json.loads(x)["line"] for x in summary.read_text().splitlines()] == [2]
    assert not (tmp_path / "out" / "coordexp_config.yaml").exists()  # stopped before training


def test_coord_lookalikes_are_exactly_the_ones_the_tokenizer_splits() -> None:
    texts = [
        "<|coord_0|>",
        "<|coord_999|>",
        "<|coord_1000|>",
        "<|coord_1555|>",
        "<|coord_007|>",
        "<|coord_-1|>",
    ]
    flagged = invalid_coord_tokens(" ".join(texts) + ' {"bbox_2d": [<|coord_12|>]}')
    assert flagged == ["<|coord_1000|>", "<|coord_1555|>", "<|coord_007|>", "<|coord_-1|>"]
    tokenizer = support.template().tokenizer
    for text in texts:
        pieces = tokenizer.tokenize(text)
        assert (len(pieces) > 1) == (text in flagged), (text, pieces)
