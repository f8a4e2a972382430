"""The README's example rows are rows the loader takes as written (VL row, CoordJSON row)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from coordexp.answers import parse_answer
from coordexp.coord_tokens.codec import invalid_coord_tokens
from coordexp.coord_tokens.payload import serialize_payload

README = Path(__file__).resolve().parents[1] / "README.md"


def _json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_coordjson_row_example() -> None:
    rows = [json.loads(b) for b in _json_blocks() if "CoordJSON" in b]
    assert len(rows) == 1
    (row,) = rows
    _, answer = row["messages"]
    parsed = parse_answer(answer["content"], "coordjson")  # strict, as training data is read
    assert parsed.typed and parsed.format == "coordjson", parsed.problems
    assert [(o.desc, o.kind) for o in parsed.objects] == [("dog", "bbox_2d"), ("kite", "poly")]
    assert parse_answer(answer["content"]).format == "coordjson"  # auto reads it as CoordJSON too
    assert invalid_coord_tokens(answer["content"]) == []
    assert "assistant_payload" not in row


def test_vl_row_example() -> None:
    rows = [json.loads(b) for b in _json_blocks() if '"images"' in b]
    assert len(rows) == 1
    (row,) = rows
    user, answer = row["messages"]
    assert user["content"].count("<image>") == len(row["images"])
    assert answer["content"] == serialize_payload(row["assistant_payload"])
    assert invalid_coord_tokens(answer["content"]) == []
