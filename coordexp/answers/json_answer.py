"""Any valid JSON answer, typed per character by walking the text itself.

This is today's writer's format (``serialize_payload``: ``{"objects": [{"desc": ..., "bbox_2d":
["<|coord_12|>", ...], "poly": [[x, y], ...]}]}``) but also any other valid JSON spelling of an
answer: other key orders, spacing, indent, ``ensure_ascii`` escapes, numbers instead of coord tokens.
Nothing is re-serialised: the characters are typed where they stand, so the text the labels were
made from is the text that is typed.

Typing rule (the same as ``typed_serialization`` gives for the writer's text, so today's values
stay equal): the string value of a ``desc`` key, quotes included, is DESC; inside the value of a
``bbox_2d`` / ``poly`` key (nested arrays included) a string that decodes to a coord token has its
quotes FORMAT and its content COORD, and a number (not a boolean) is COORD; everything else (braces,
brackets, separators, whitespace, keys with their quotes, other values) is FORMAT. The context is set
by the nearest key: an object nested in a geometry array resets it, and the items of a list under
``desc`` are not DESC.

Objects: every JSON object holding a ``desc`` or a geometry key is a record, in the order its text
starts; its desc is stripped (as CoordJSON's); its geometry elements are flattened in written order
(``[[x, y], ...]`` pairs included).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from coordexp.answers.model import (
    COORD,
    DESC,
    DESC_KEY,
    FORMAT,
    GEOMETRY_KEYS,
    AnswerObject,
    AnswerProblem,
    CoordSlot,
    Geometry,
    ParsedAnswer,
    coord_bin,
    scan_json_string,
)
from coordexp.coord_tokens.codec import parse_coord_token

_WS: Final = " \t\n\r"
_NUMBER_RE: Final = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS: Final = {"true": True, "false": False, "null": None}
_DESC_CTX: Final = "desc"
_GEOM_CTX: Final = "geom"


class JSONAnswerError(ValueError):
    def __init__(self, pos: int, msg: str) -> None:
        super().__init__(f"{msg} at char {pos}")
        self.pos = pos


class _Walker:
    """A JSON recursive-descent reader that types characters as it goes (FORMAT unless said)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types = [FORMAT] * len(text)
        self.records: list[AnswerObject] = []

    def ws(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in _WS:
            i += 1
        return i

    def expect(self, i: int, char: str) -> int:
        if i >= len(self.text) or self.text[i] != char:
            found = repr(self.text[i]) if i < len(self.text) else "end of text"
            raise JSONAnswerError(i, f"expected {char!r}, found {found}")
        return i + 1

    def string(self, i: int) -> tuple[str, int]:
        try:
            return scan_json_string(self.text, i + 1, True)
        except json.JSONDecodeError as exc:
            raise JSONAnswerError(exc.pos, exc.msg) from None

    def value(self, i: int, ctx: str | None, slots: list[CoordSlot] | None) -> tuple[Any, int]:
        """The value starting at ``i`` (no leading whitespace) and the index just after it."""
        if i >= len(self.text):
            raise JSONAnswerError(i, "expected a value, found end of text")
        char = self.text[i]
        if char == "{":
            return self.obj(i)
        if char == "[":
            return self.array(i, ctx, slots)
        if char == '"':
            value, end = self.string(i)
            if ctx == _DESC_CTX:
                self.types[i:end] = [DESC] * (end - i)
            elif ctx == _GEOM_CTX and parse_coord_token(value) is not None:
                # Quotes FORMAT, the token (however it is escaped) COORD.
                self.types[i + 1 : end - 1] = [COORD] * (end - 1 - (i + 1))
                if slots is not None:
                    slots.append(CoordSlot(parse_coord_token(value), i + 1, end - 1))
            return value, end
        match = _NUMBER_RE.match(self.text, i)
        if match and match.end() > i:
            end = match.end()
            number = json.loads(match.group())
            if ctx == _GEOM_CTX:
                self.types[i:end] = [COORD] * (end - i)
                if slots is not None:
                    slots.append(CoordSlot(coord_bin(number), i, end))
            return number, end
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, i):
                return literal, i + len(word)
        raise JSONAnswerError(i, f"expected a value, found {char!r}")

    def array(self, i: int, ctx: str | None, slots: list[CoordSlot] | None) -> tuple[list[Any], int]:
        items: list[Any] = []
        i = self.ws(i + 1)
        if i < len(self.text) and self.text[i] == "]":
            return items, i + 1
        # desc applies to its direct string value only; a geometry covers nested arrays.
        inner = ctx if ctx == _GEOM_CTX else None
        while True:
            item, i = self.value(self.ws(i), inner, slots)
            items.append(item)
            i = self.ws(i)
            if i < len(self.text) and self.text[i] == ",":
                i += 1
                continue
            return items, self.expect(i, "]")

    def obj(self, start: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        geometries: list[Geometry] = []
        i = self.ws(start + 1)
        if i < len(self.text) and self.text[i] == "}":
            return out, i + 1
        while True:
            i = self.ws(i)
            if i >= len(self.text) or self.text[i] != '"':
                raise JSONAnswerError(i, "expected a key string")
            key, i = self.string(i)
            i = self.ws(self.expect(self.ws(i), ":"))
            is_geom = key in GEOMETRY_KEYS
            slots: list[CoordSlot] | None = [] if is_geom else None
            ctx = _DESC_CTX if key == DESC_KEY else _GEOM_CTX if is_geom else None
            out[key], i = self.value(i, ctx, slots)
            if slots is not None:
                geometries.append(Geometry(key, tuple(slots)))
            i = self.ws(i)
            if i < len(self.text) and self.text[i] == ",":
                i += 1
                continue
            end = self.expect(i, "}")
            break
        if DESC_KEY in out or geometries:
            desc = out.get(DESC_KEY)
            self.records.append(
                AnswerObject(desc.strip() if isinstance(desc, str) else None, tuple(geometries), start, end)
            )
        return out, end


def parse_json_answer(text: str) -> ParsedAnswer:
    """``text`` read as one JSON value (whitespace around it allowed), typed per character; a text
    that is not valid JSON gives no types and a ``not_json`` problem."""
    walker = _Walker(text)
    try:
        start = walker.ws(0)
        _, end = walker.value(start, None, None)
        if walker.ws(end) != len(text):
            raise JSONAnswerError(walker.ws(end), "extra text after the JSON value")
    except JSONAnswerError as exc:
        return ParsedAnswer(text, None, None, problems=(AnswerProblem("not_json", str(exc)),))
    except RecursionError:
        return ParsedAnswer(text, None, None, problems=(AnswerProblem("not_json", "nested too deeply"),))
    records = tuple(sorted(walker.records, key=lambda r: r.start))
    return ParsedAnswer(text, "json", tuple(walker.types), records, span=(start, end))


__all__ = ["JSONAnswerError", "parse_json_answer"]
