"""JSONL files: one JSON value per line, with each line's position, as every reader here counts them.

Lines are split on ``b"\\n"`` only (text mode would also split on a lone ``"\\r"``, and the line numbers
would no longer be the ones an editor, the loader's ``source_line`` and the dump reader show). Numbers
are 1-based and count every physical line; blank lines are not records. A last line without its
``"\\n"`` is the torn tail a killed writer can leave.

What a bad line means is each caller's choice:

- :func:`iter_jsonl` yields ``(line number, value)``; a bad line raises :class:`JsonlError`
  (``file:line: reason``) or is skipped (``skip_bad``); ``complete_only`` reads only
  ``"\\n"``-terminated lines, so a torn tail is never seen.
- :func:`read_jsonl_lines` yields every non-blank line as a :class:`JsonlLine` (raw bytes, value or
  the reason it is not JSON, whether it is the torn tail or the last line), for callers that
  refuse, report or keep bad lines themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JsonlError", "JsonlLine", "iter_jsonl", "parse_jsonl_line", "read_jsonl_lines"]


class JsonlError(ValueError):
    """A line that is not JSON, as ``file:line: reason``."""


@dataclass(frozen=True)
class JsonlLine:
    """One non-blank line of a JSONL file: its value, or why it has none (``error``)."""

    path: Path
    number: int
    """1-based, counting every physical line (blank ones included)"""
    raw: bytes
    """the line without its ``"\\n"`` (a ``"\\r"`` of a CRLF file stays)"""
    value: Any = None
    error: ValueError | None = None
    """the ``UnicodeDecodeError`` or ``json.JSONDecodeError`` of a line that is not JSON"""
    terminated: bool = True
    """false for a last line without its ``"\\n"`` (a torn tail when it is not JSON)"""
    last: bool = False
    """the file's last non-blank line"""

    @property
    def problem(self) -> str | None:
        """Why the line is not JSON, in one phrase (None when it is)."""
        exc = self.error
        if exc is None:
            return None
        if isinstance(exc, UnicodeDecodeError):
            return f"not UTF-8 ({exc.reason} at byte {exc.start})"
        if isinstance(exc, json.JSONDecodeError):
            return f"not valid JSON ({exc.msg})"
        return f"not valid JSON ({exc})"

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


def read_jsonl_lines(path: str | Path, *, decode_errors: str = "strict") -> Iterator[JsonlLine]:
    """Every non-blank line of ``path``, in order, parsed (see the module docstring).

    ``decode_errors`` is the UTF-8 error handler: ``"strict"`` makes a line with invalid UTF-8 a bad
    line, ``"replace"`` reads it with U+FFFD in place of the invalid bytes. Raises ``OSError`` when
    the file cannot be read.
    """
    path = Path(path)
    pending: tuple[int, bytes, bool] | None = None  # held back until we know whether it is the last
    with path.open("rb") as handle:
        for number, chunk in enumerate(handle, 1):
            if not chunk.strip():
                continue
            if pending is not None:
                yield parse_jsonl_line(path, *pending, decode_errors=decode_errors, last=False)
            terminated = chunk.endswith(b"\n")
            pending = (number, chunk[:-1] if terminated else chunk, terminated)
    if pending is not None:
        yield parse_jsonl_line(path, *pending, decode_errors=decode_errors, last=True)


def parse_jsonl_line(
    path: Path, number: int, raw: bytes, terminated: bool, *, decode_errors: str = "strict", last: bool
) -> JsonlLine:
    """One line's bytes (without its ``"\\n"``) parsed as :func:`read_jsonl_lines` does, for a reader
    that finds the line itself (by byte offset)."""
    try:
        value = json.loads(raw.decode("utf-8", errors=decode_errors))
    except ValueError as exc:  # UnicodeDecodeError, json.JSONDecodeError
        return JsonlLine(path, number, raw, None, exc, terminated, last)
    return JsonlLine(path, number, raw, value, None, terminated, last)


def iter_jsonl(
    path: str | Path, *, skip_bad: bool = False, complete_only: bool = False
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of ``path``.

    A line that is not JSON raises :class:`JsonlError` (``file:line: reason``), or is passed over with
    ``skip_bad``. ``complete_only``: only ``"\\n"``-terminated lines count, so the torn tail of a killed
    writer is ignored whatever it holds.
    """
    for line in read_jsonl_lines(path):
        if complete_only and not line.terminated:
            continue
        if line.error is not None:
            if skip_bad:
                continue
            raise JsonlError(f"{line.where}: {line.problem}") from line.error
        yield line.number, line.value
