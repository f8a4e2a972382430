"""Rows the token-type metrics cannot type: listed at load with file:line, never dropped silently.

Real demo rows (JSON and CoordJSON answers), the real loader and ms-swift template, the real metrics
collator; the CLI's exit 2 after a real model load when no train row can be typed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from coordexp.demo.dataset import make_rows
from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from coordexp.rows.collator import build_dataset_metrics_collator
from coordexp.rows.data import answer_texts
from coordexp.rows.fields import ANSWER_FORMAT_KEY, ANSWER_TEXTS_KEY
from coordexp.rows.refused import DataError
from coordexp.run_folder.names import UNTYPED_ROWS_FILE
from tests.data import support

ON = {"enabled": True, "include": ["lvis", "coco"]}
PLAIN = "I see a teapot near the top left."
BAD_ARITY = '{"objects": [{"desc": "teapot", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>]}]}'


def _coordjson_rows(n: int, label: str = "lvis", split: str = "train") -> list[dict[str, Any]]:
    return list(make_rows(label, split, n, answer="coordjson"))


def _with_answer(row: dict[str, Any], text: str) -> dict[str, Any]:
    return {**row, "messages": [row["messages"][0], {"role": "assistant", "content": text}]}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / UNTYPED_ROWS_FILE).read_text(encoding="utf-8").splitlines()]


def test_untyped_and_mismatched_rows_are_listed_with_file_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _coordjson_rows(6)
    rows[1] = _with_answer(rows[1], PLAIN)
    rows[3] = _with_answer(rows[3], BAD_ARITY)
    moved = json.loads(json.dumps(rows[4]["assistant_payload"]))
    moved["objects"][0]["desc"] = "not what the answer says"
    rows[4] = {**rows[4], "assistant_payload": moved}
    path = _write(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "run"
    train_ds, _ = support.encode_splits([path], output_dir=run, token_types=ON)
    assert len(train_ds) == 6  # untyped rows still train: their labels come from their text
    where = str(path.resolve())
    records = _records(run)
    assert [(r["file"], r["line"], r["split"], r["kind"]) for r in records] == [
        (where, 2, "train", "untyped"),
        (where, 4, "train", "untyped"),
        (where, 5, "train", "payload_mismatch"),
    ]
    assert records[0]["reason"].startswith("not a JSON or CoordJSON answer: not_json: ")
    assert records[1]["reason"] == (
        "not a JSON or CoordJSON answer: objects[0]: wrong_arity: bbox_2d has 3 elements, not 4"
    )
    assert records[2]["reason"].startswith("objects[0].desc is ")
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if "rows without token types" in line]
    assert summary == [
        f"[coordexp] rows without token types: train 2 of 6; 1 row(s) whose assistant_payload disagrees "
        f"with the answer text; every row: {run / UNTYPED_ROWS_FILE}"
    ]
    assert f"{where}:4: untyped: not a JSON or CoordJSON answer: objects[0]: wrong_arity" in out
    # every encoded row carries its answer text and format for the collator
    assert train_ds[1][ANSWER_TEXTS_KEY] == [PLAIN] and train_ds[1][ANSWER_FORMAT_KEY] == "auto"


def test_no_typeable_train_row_stops_with_one_line(tmp_path: Path) -> None:
    rows = [_with_answer(r, PLAIN) for r in _coordjson_rows(3)]
    path = _write(tmp_path / "plain.jsonl", rows)
    run = tmp_path / "run"
    with pytest.raises(DataError) as info:
        support.encode_splits([path], output_dir=run, token_types=ON)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path.resolve()}:1: no token types: not a JSON or CoordJSON answer: not_json")
    assert "none of the 3 train rows of dataset 'lvis' can be typed" in message
    assert message.endswith(f"every untyped row: {run / UNTYPED_ROWS_FILE})")
    assert len(_records(run)) == 3


def test_a_forced_format_the_rows_do_not_use_stops_the_run(tmp_path: Path) -> None:
    path = _write(tmp_path / "cj.jsonl", _coordjson_rows(2))
    with pytest.raises(DataError, match="no token types: not a JSON answer: not_json"):
        support.encode_splits([path], output_dir=tmp_path / "run", token_types=ON, answer_format="json")
    support.encode_splits([path], output_dir=tmp_path / "ok", token_types=ON, answer_format="coordjson")
    assert not (tmp_path / "ok").exists()


def test_untypeable_val_rows_and_untyped_datasets_only_list(tmp_path: Path) -> None:
    train = _write(
        tmp_path / "train.jsonl", [*_coordjson_rows(2), _with_answer(_coordjson_rows(1, "coco")[0], PLAIN)]
    )
    val = _write(tmp_path / "val.jsonl", [_with_answer(r, PLAIN) for r in _coordjson_rows(2, split="val")])
    run = tmp_path / "run"
    # coco is not included: its plain-text row is not checked; val rows are listed, never fatal
    support.encode_splits([train], [val], output_dir=run, token_types={"enabled": True, "include": ["lvis"]})
    assert [(r["split"], r["line"]) for r in _records(run)] == [("val", 1), ("val", 2)]


def test_nothing_is_checked_with_token_types_off(tmp_path: Path) -> None:
    path = _write(tmp_path / "plain.jsonl", [_with_answer(r, PLAIN) for r in _coordjson_rows(2)])
    for section in (None, {"enabled": False}):
        support.encode_splits([path], output_dir=tmp_path / "run", token_types=section)
    assert not (tmp_path / "run").exists()


def test_json_and_coordjson_demo_rows_all_type(tmp_path: Path) -> None:
    files = [
        _write(tmp_path / "json.jsonl", support.demo_rows(8)),
        _write(tmp_path / "cj.jsonl", _coordjson_rows(8) + _coordjson_rows(8, "coco")),
    ]
    for layout in ("padded", "padding_free", "packing"):
        run = tmp_path / f"run_{layout}"
        train_ds, _ = support.encode_splits(files, output_dir=run, token_types=ON, layout=layout)
        assert not run.exists()
        tpl = getattr(train_ds, "template", None) or support.template(layout)
        collator = build_dataset_metrics_collator(tpl, token_type_cfg=ON)
        items = [train_ds[i] for i in range(len(train_ds))]
        batch = collator(items[:4])
        types, labels = batch[TOKEN_TYPES_KEY], batch["labels"]
        assert ((types >= 0) == (labels != -100)).all(), layout  # every supervised position typed


def test_multi_turn_rows_type_every_turn(tmp_path: Path) -> None:
    a, b = _coordjson_rows(2)
    row = {**a, "messages": [*a["messages"], b["messages"][0], b["messages"][1]]}
    row.pop("assistant_payload", None)
    assert answer_texts(row) == [a["messages"][1]["content"], b["messages"][1]["content"]]
    path = _write(tmp_path / "multi.jsonl", [row])
    train_ds, _ = support.encode_splits([path], output_dir=tmp_path / "run", token_types=ON)
    batch = build_dataset_metrics_collator(support.template(), token_type_cfg=ON)([train_ds[0]])
    types, labels = batch[TOKEN_TYPES_KEY], batch["labels"]
    assert ((types >= 0) == (labels != -100)).all()


def test_multimodal_text_parts_are_the_answer() -> None:
    row = {"messages": [{"role": "assistant", "content": [{"type": "text", "text": "{"}, {"text": "}"}]}]}
    assert answer_texts(row) == ["{}"]


def test_a_row_that_fails_to_align_in_training_warns_once_naming_file_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "rows.jsonl", _coordjson_rows(3))
    train_ds, _ = support.encode_splits([path], output_dir=tmp_path / "run", token_types=ON)
    items = [dict(x) for x in train_ds]
    for item in items[1:]:  # the text no longer is the one the labels were made from
        item[ANSWER_TEXTS_KEY] = ['{"objects": []}']
    collator = build_dataset_metrics_collator(support.template(), token_type_cfg=ON)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            batch = collator(items)
    assert (batch[TOKEN_TYPES_KEY][0] >= 0).any() and (batch[TOKEN_TYPES_KEY][1:] == -1).all()
    warned = [r.getMessage() for r in caplog.records if "gets no token types" in r.getMessage()]
    assert len(warned) == 1
    assert f"{path.resolve()}:2 gets no token types (the typed answer's tokens are not" in warned[0]


@pytest.mark.slow
def test_cli_stops_with_one_line_and_exit_2_when_no_row_can_be_typed(tmp_path: Path) -> None:
    assets = support.demo_assets()
    train = _write(tmp_path / "rows.jsonl", [_with_answer(r, PLAIN) for r in _coordjson_rows(3)])
    config = {
        "model": {"path": str(assets.model_dir), "max_length": support.MAX_LENGTH},
        "data": {"train": [train.name]},
        "training": {"output_dir": "out", "max_steps": 1},
        "custom": {"token_type_metrics": ON},
    }
    line = support.cli_stop_line(tmp_path, config)
    assert line.startswith(f"coordexp train: {train.resolve()}:1: no token types: not a JSON or CoordJSON")
    assert not (tmp_path / "out" / "coordexp_config.yaml").exists()  # stopped before training


def test_untyped_rows_come_from_the_pre_pass_and_its_cache_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One process, two processes and a cache hit list the same untyped rows; the token-type
    settings are part of the cache key (other included datasets: indexed again, not read)."""
    rows = _coordjson_rows(9)
    rows[2] = _with_answer(rows[2], PLAIN)
    rows[7] = _with_answer(rows[7], BAD_ARITY)
    path = _write(tmp_path / "rows.jsonl", rows)
    cache = tmp_path / "cache"
    listed = []
    # num_proc is not in the key (it changes nothing): one process indexes into its own folder.
    for run, num_proc, folder in (("one", 1, "alone"), ("two", 2, "cache"), ("hit", 2, "cache")):
        support.encode_splits(
            [path], output_dir=tmp_path / run, token_types=ON, cache_dir=tmp_path / folder, num_proc=num_proc
        )
        listed.append(_records(tmp_path / run))
    out = capsys.readouterr().out
    assert listed[0] == listed[1] == listed[2]
    assert [(r["line"], r["kind"]) for r in listed[0]] == [(3, "untyped"), (8, "untyped")]
    assert out.count("from the cache") == 1  # the third build only
    # Excluding lvis changes the key: the pre-pass runs again and lists nothing.
    support.encode_splits(
        [path], output_dir=tmp_path / "off", token_types={**ON, "include": ["coco"]}, cache_dir=cache
    )
    assert "from the cache" not in capsys.readouterr().out
    assert not (tmp_path / "off" / UNTYPED_ROWS_FILE).exists()
