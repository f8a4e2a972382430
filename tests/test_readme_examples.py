"""The README's example VL row is a row the loader takes as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from coordexp.coord_tokens.codec import invalid_coord_tokens
from coordexp.coord_tokens.payload import serialize_payload

README = Path(__file__).resolve().parents[1] / "README.md"


def test_vl_row_example() -> None:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    rows = [json.loads(b) for b in blocks if '"images"' in b]
    assert len(rows) == 1
    (row,) = rows
    user, answer = row["messages"]
    assert user["content"].count("<image>") == len(row["images"])
    assert answer["content"] == serialize_payload(row["assistant_payload"])
    assert invalid_coord_tokens(answer["content"]) == []
