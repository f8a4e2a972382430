"""``coordexp.io.jsonl``: the one JSONL reader (line numbers, ``file:line: reason``, torn tails)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coordexp.io.jsonl import JsonlError, iter_jsonl, read_jsonl_lines

# blank lines count in the numbering; a CRLF line keeps its "\r"; the tail is torn
CONTENT = b'{"a": 1}\n\n  \n[1,\n\xff\n{"b": 2}\r\n{"c":'


def test_lines_keep_their_physical_numbers_and_say_why_they_are_not_json(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(CONTENT)
    lines = list(read_jsonl_lines(path))
    assert [line.number for line in lines] == [1, 4, 5, 6, 7]
    assert [line.value for line in lines] == [{"a": 1}, None, None, {"b": 2}, None]
    assert [line.problem for line in lines] == [
        None,
        "not valid JSON (Expecting value)",
        "not UTF-8 (invalid start byte at byte 0)",
        None,
        "not valid JSON (Expecting value)",
    ]
    assert [line.terminated for line in lines] == [True, True, True, True, False]
    assert [line.last for line in lines] == [False, False, False, False, True]
    assert lines[3].raw == b'{"b": 2}\r'
    assert lines[1].where == f"{path}:4"
    replaced = list(read_jsonl_lines(path, decode_errors="replace"))[2]
    assert replaced.problem == "not valid JSON (Expecting value)"  # U+FFFD is read, still not JSON


def test_iter_jsonl_raises_skips_or_ignores_the_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(CONTENT)
    with pytest.raises(JsonlError, match=re.escape(f"{path}:4: not valid JSON (Expecting value)")):
        list(iter_jsonl(path))
    assert list(iter_jsonl(path, skip_bad=True)) == [(1, {"a": 1}), (6, {"b": 2})]
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": 3}')  # complete_only: no tail, even a whole one
    assert [n for n, _ in iter_jsonl(path)] == [1, 2, 3]
    assert [n for n, _ in iter_jsonl(path, complete_only=True)] == [1, 2]


def test_an_empty_or_blank_file_has_no_lines(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert list(read_jsonl_lines(path)) == []
    path.write_bytes(b"\n \n\r\n")
    assert list(iter_jsonl(path)) == []
