"""Rows carry everything the Stage-1 diagnostics need, and their answer is the serialised payload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.coord_tokens.codec import parse_coord_token
from coordexp.coord_tokens.payload import serialize_payload
from coordexp.demo import DATASET_LABELS, DemoAssets, build_demo_dataset, make_rows


def _bins(tokens: list[str]) -> list[int]:
    bins = [parse_coord_token(t) for t in tokens]
    assert None not in bins, tokens
    return bins  # type: ignore[return-value]


Reader = Callable[[Path], list[dict[str, Any]]]


def test_rows_have_all_fields(demo_assets: DemoAssets, read_jsonl: Reader) -> None:
    n_poly = n_objects = 0
    for path in (*demo_assets.train_files, *demo_assets.val_files):
        split, label = path.stem.split("_")
        rows = read_jsonl(path)
        assert len(rows) > 0
        for i, row in enumerate(rows):
            assert set(row) == {"messages", "assistant_payload", "dataset", "base_idx", "sample_id"}
            assert row["dataset"] == label
            assert row["base_idx"] == i
            assert row["sample_id"] == f"{label}-{split}-{i:06d}"
            user, assistant = row["messages"]
            assert user["role"] == "user" and user["content"]
            assert assistant["role"] == "assistant"
            payload = row["assistant_payload"]
            assert assistant["content"] == serialize_payload(payload)
            assert set(payload) == {"objects"} and payload["objects"]
            for obj in payload["objects"]:
                n_objects += 1
                assert set(obj) <= {"desc", "bbox_2d", "poly"} and obj["desc"]
                x1, y1, x2, y2 = _bins(obj["bbox_2d"])
                assert x1 < x2 and y1 < y2
                if "poly" in obj:
                    n_poly += 1
                    poly = _bins(obj["poly"])
                    assert len(poly) % 2 == 0 and len(poly) >= 6
        assert len({r["sample_id"] for r in rows}) == len(rows)
    # Both shapes of object occur, so token types see bbox-only and bbox+poly objects.
    assert 0 < n_poly < n_objects


def test_labels_and_split_sizes(tmp_path: Path, read_jsonl: Reader) -> None:
    files = build_demo_dataset(tmp_path, seed=3, n_train=5, n_val=2)
    assert [p.name for p in files.train_files] == [f"train_{label}.jsonl" for label in DATASET_LABELS]
    assert [p.name for p in files.val_files] == [f"val_{label}.jsonl" for label in DATASET_LABELS]
    assert [len(read_jsonl(p)) for p in files.train_files] == [5, 5]
    assert [len(read_jsonl(p)) for p in files.val_files] == [2, 2]
    assert {"lvis", "coco"} <= set(DATASET_LABELS)


def test_rows_deterministic_and_independent_per_file() -> None:
    first = list(make_rows("coco", "train", 8, seed=7))
    assert first == list(make_rows("coco", "train", 8, seed=7))
    # A prefix does not depend on how many rows are asked for, nor on the other files.
    assert list(make_rows("coco", "train", 3, seed=7)) == first[:3]
    assert first != list(make_rows("coco", "train", 8, seed=8))
    assert first != list(make_rows("coco", "val", 8, seed=7))


def test_unknown_label_fails_at_call() -> None:
    with pytest.raises(ValueError, match="unknown dataset label"):
        make_rows("objects365", "train", 1)


def test_coordjson_rows_cover_both_orders_both_geometries_and_no_payload() -> None:
    from coordexp.answers import parse_answer
    from coordexp.answers.compare import payload_disagreement

    orders, kinds, with_payload = set(), set(), []
    for label in DATASET_LABELS:
        json_rows = list(make_rows(label, "train", 24))
        for json_row, row in zip(json_rows, make_rows(label, "train", 24, answer="coordjson"), strict=True):
            text = row["messages"][1]["content"]
            parsed = parse_answer(text, "coordjson")
            assert parsed.typed, (text, parsed.problems)
            # the same objects as the JSON demo row, one geometry each
            assert [o.desc for o in parsed.objects] == [
                o["desc"] for o in json_row["assistant_payload"]["objects"]
            ]
            orders |= {text.startswith('{"objects": [{"desc"')} if parsed.objects else set()
            kinds |= {o.kind for o in parsed.objects}
            with_payload.append("assistant_payload" in row)
            if "assistant_payload" in row:
                assert payload_disagreement(row["assistant_payload"], parsed.objects) is None
                assert payload_disagreement(json_row["assistant_payload"], parsed.objects) is None
    assert orders == {True, False} and kinds == {"bbox_2d", "poly"}
    assert any(with_payload) and not all(with_payload)
