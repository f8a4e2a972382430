"""CoordJSON answers: one ``{"objects": [...]}`` container whose geometry arrays hold bare coord tokens.

Grammar (the canonical writer; the reader also allows whitespace wherever JSON does)::

    answer   := '{"objects": [' [ record { ', ' record } ] ']}'
    record   := '{"desc": ' jstring ', "' gkey '": ' garray '}'     (desc_first)
              | '{"' gkey '": ' garray ', "desc": ' jstring '}'     (geometry_first)
    gkey     := 'bbox_2d' | 'poly'
    garray   := '[' elem { ', ' elem } ']'
    elem     := '<|coord_' k '|>'  (k in 0..999)  |  k  (bare integer 0..999, no leading zero)
    jstring  := a JSON string

``bbox_2d`` has exactly 4 elements, ``poly`` an even count of at least 6 (flat). Bare coord tokens
make the text invalid JSON; with bare integers (coord tokens off) it is valid JSON too.

Reading, per record, with the reference's reason codes: a key other than desc / bbox_2d / poly,
not exactly one geometry or more than two members -> ``unexpected_keys``; desc absent, repeated, not
a JSON string or blank -> ``missing_desc``; key order other than ``field_order`` (when one is given)
-> ``order_violation``; a geometry element that is not a coord token or bare integer 0..999 (a
nested array, a string, a float, 1000), a bad separator or a wrong count -> ``wrong_arity``; any
other structural problem -> ``other``. A record without its closing brace is an incomplete tail
(``dropped_incomplete_tail``). Strict mode (training data) also refuses a desc holding a newline,
carriage return or tab (``bad_desc``), which the reference builder never writes.

- **strict** (training data): after leading whitespace, exactly one closed container followed only
  by whitespace, and every record kept; otherwise no types and the problems, ``objects[i]`` named.
- **salvage** (model output): the first ``{`` from the left that starts a container wins; text
  around it is ignored; dropped records and an incomplete tail are listed as problems beside the
  kept objects; no container at all is ``parse_failed``.

Types (strict and salvage alike, for kept records): the desc's JSON string, quotes included, is DESC;
each geometry element's text (the whole coord token, or the integer) is COORD; everything else -
braces, brackets, separators, whitespace, every key with its quotes - is FORMAT.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final, Literal

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
    scan_json_string,
)
from coordexp.coord_tokens.codec import COORD_BINS

ParseMode = Literal["strict", "salvage"]
FieldOrder = Literal["desc_first", "geometry_first"]
CONTAINER_KEY: Final = "objects"
BBOX_ELEMENTS: Final = 4
MIN_POLY_ELEMENTS: Final = 6
_WS: Final = " \t\n\r"
_COORD_LITERAL: Final = re.compile(r"<\|coord_(\d{1,4})\|>")
_INT_LITERAL: Final = re.compile(r"0(?![0-9])|[1-9][0-9]{0,2}(?![0-9])")
_BAD_DESC_CHARS: Final = "\n\r\t"


class _Rejected(Exception):
    """The text at this ``{`` is no container."""


class _RecordError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Container:
    end: int | None = None  # just after the closing '}'; None: truncated
    objects: list[AnswerObject] = field(default_factory=list)
    problems: list[AnswerProblem] = field(default_factory=list)
    typed: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, type) spans


def _ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _string_end(text: str, i: int) -> int:
    """The index after the JSON string starting at ``text[i] == '"'``."""
    try:
        return scan_json_string(text, i + 1, True)[1]
    except json.JSONDecodeError as exc:
        raise _RecordError("other", f"bad JSON string: {exc.msg}") from None


def balanced_end(text: str, i: int) -> int | None:
    """The index after the bracket closing ``text[i]`` (strings respected), None when it never closes."""
    stack: list[str] = []
    pairs = {"{": "}", "[": "]"}
    while i < len(text):
        char = text[i]
        if char == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                return None
            i = j + 1
            continue
        if char in pairs:
            stack.append(pairs[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
            if not stack:
                return i + 1
        i += 1
    return None


def _value_end(text: str, i: int, limit: int) -> int:
    """The end of one record member's value starting at ``i``: a JSON string, a coord literal, a
    nested ``{...}`` / ``[...]``, or a bare scalar up to the next ``,``, ``}`` or ``]``."""
    if i >= limit:
        raise _RecordError("other", "a key without a value")
    if text[i] == '"':
        return _string_end(text, i)
    literal = _COORD_LITERAL.match(text, i)
    if literal:
        return literal.end()
    if text[i] in "{[":
        end = balanced_end(text, i)
        if end is None or end > limit:
            raise _RecordError("other", f"unbalanced {text[i]!r} in a value")
        return end
    j = i
    while j < limit and text[j] not in ",}]":
        j += 1
    while j > i and text[j - 1] in _WS:
        j -= 1
    if j == i:
        raise _RecordError("other", f"expected a value, found {text[i]!r}")
    return j


def _members(text: str, start: int, end: int) -> list[tuple[str, int, int]]:
    """(key, value start, value end) of the record ``text[start:end]`` (``{`` ... ``}``)."""
    members: list[tuple[str, int, int]] = []
    i = _ws(text, start + 1)
    if i == end - 1:
        return members
    while True:
        if text[i] != '"':
            raise _RecordError("other", f"expected a key string, found {text[i]!r}")
        key_end = _string_end(text, i)
        key = json.loads(text[i:key_end])
        i = _ws(text, key_end)
        if text[i] != ":":
            raise _RecordError("other", f"expected ':' after key {key!r}")
        value_start = _ws(text, i + 1)
        value_end = _value_end(text, value_start, end - 1)
        members.append((key, value_start, value_end))
        i = _ws(text, value_end)
        if text[i] == "," and i < end - 1:
            i = _ws(text, i + 1)
            continue
        if i == end - 1:
            return members
        raise _RecordError("other", f"unexpected {text[i]!r} after the value of {key!r}")


def _geometry(text: str, kind: str, start: int, end: int) -> Geometry:
    if text[start] != "[":
        raise _RecordError("wrong_arity", f"{kind} is not an array")
    slots: list[CoordSlot] = []
    i = _ws(text, start + 1)
    if text[i] != "]":
        while True:
            literal = _COORD_LITERAL.match(text, i) or _INT_LITERAL.match(text, i)
            value = (
                int(literal.group(1) if literal and literal.lastindex else literal.group()) if literal else -1
            )
            if literal is None or value >= COORD_BINS:
                raise _RecordError(
                    "wrong_arity", f"{kind}[{len(slots)}] is not a coord token or integer 0..999"
                )
            slots.append(CoordSlot(value, i, literal.end()))
            i = _ws(text, literal.end())
            if text[i] == ",":
                i = _ws(text, i + 1)
                continue
            if text[i] == "]":
                break
            raise _RecordError("wrong_arity", f"{kind}: expected ',' or ']' after element {len(slots) - 1}")
    if i + 1 != end:
        raise _RecordError("other", f"text after the {kind} array")
    n = len(slots)
    if kind == "bbox_2d" and n != BBOX_ELEMENTS:
        raise _RecordError("wrong_arity", f"bbox_2d has {n} elements, not {BBOX_ELEMENTS}")
    if kind == "poly" and (n % 2 or n < MIN_POLY_ELEMENTS):
        raise _RecordError(
            "wrong_arity", f"poly has {n} elements (needs an even count >= {MIN_POLY_ELEMENTS})"
        )
    return Geometry(kind, tuple(slots))


def _record(
    text: str, start: int, end: int, order: FieldOrder | None, strict: bool, out: _Container
) -> AnswerObject:
    members = _members(text, start, end)
    keys = [k for k, _, _ in members]
    unknown = [k for k in keys if k != DESC_KEY and k not in GEOMETRY_KEYS]
    if unknown:
        raise _RecordError("unexpected_keys", f"unexpected key {unknown[0]!r}")
    if keys.count(DESC_KEY) != 1:
        raise _RecordError("missing_desc", f"{DESC_KEY!r} appears {keys.count(DESC_KEY)} times")
    geoms = [k for k in keys if k in GEOMETRY_KEYS]
    if len(geoms) != 1 or len(members) > 2:
        raise _RecordError("unexpected_keys", f"needs desc and exactly one of bbox_2d / poly, has {keys}")
    if order is not None and (keys[0] == DESC_KEY) != (order == "desc_first"):
        raise _RecordError("order_violation", f"keys {keys} are not {order}")
    desc_start, desc_end = next((s, e) for k, s, e in members if k == DESC_KEY)
    if text[desc_start] != '"' or _string_end(text, desc_start) != desc_end:
        raise _RecordError("missing_desc", "desc is not a JSON string")
    desc = json.loads(text[desc_start:desc_end])
    if not desc.strip():
        raise _RecordError("missing_desc", "desc is blank")
    if strict and any(c in desc for c in _BAD_DESC_CHARS):
        raise _RecordError("bad_desc", f"desc {desc!r} holds a newline, carriage return or tab")
    kind, g_start, g_end = next((k, s, e) for k, s, e in members if k in GEOMETRY_KEYS)
    geometry = _geometry(text, kind, g_start, g_end)
    out.typed.append((desc_start, desc_end, DESC))
    out.typed.extend((s.start, s.end, COORD) for s in geometry.slots)
    return AnswerObject(desc.strip(), (geometry,), start, end)


def _container(text: str, start: int, order: FieldOrder | None, strict: bool) -> _Container:
    """The container starting at ``text[start] == '{'``; raises ``_Rejected`` when it is none."""
    i = _ws(text, start + 1)
    if not text.startswith(f'"{CONTAINER_KEY}"', i):
        raise _Rejected(f'the first key must be "{CONTAINER_KEY}"')
    i = _ws(text, i + len(CONTAINER_KEY) + 2)
    if not text.startswith(":", i) or not text.startswith("[", _ws(text, i + 1)):
        raise _Rejected(f'"{CONTAINER_KEY}" must be followed by ": ["')
    i = _ws(text, _ws(text, i + 1) + 1)
    out = _Container()
    index = 0
    while True:
        if i >= len(text):
            out.problems.append(AnswerProblem("other", "the objects array is not closed"))
            return out
        if text[i] == "]":
            break
        if text[i] != "{":
            raise _Rejected(f"expected a record or ']' in the objects array, found {text[i]!r}")
        end = balanced_end(text, i)
        if end is None:
            out.problems.append(AnswerProblem("dropped_incomplete_tail", "the record is not closed", index))
            return out
        try:
            out.objects.append(_record(text, i, end, order, strict, out))
        except _RecordError as exc:
            out.problems.append(AnswerProblem(exc.reason, exc.detail, index))
        index += 1
        i = _ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _ws(text, i + 1)
        elif i < len(text) and text[i] != "]":
            raise _Rejected(f"expected ',' or ']' after objects[{index - 1}], found {text[i]!r}")
    i = _ws(text, i + 1)
    if i >= len(text):
        out.problems.append(AnswerProblem("other", "the container is not closed"))
    elif text[i] == "}":
        out.end = i + 1
    else:
        raise _Rejected(f"expected '}}' after the objects array, found {text[i]!r}")
    return out


def _types(text: str, spans: list[tuple[int, int, int]]) -> tuple[int, ...]:
    types = [FORMAT] * len(text)
    for start, end, ttype in spans:
        types[start:end] = [ttype] * (end - start)
    return tuple(types)


def parse_coordjson(
    text: str, *, mode: ParseMode = "strict", field_order: FieldOrder | None = None
) -> ParsedAnswer:
    """``text`` read as a CoordJSON answer (see the module docstring); ``field_order`` None accepts
    either order per record."""
    strict = mode == "strict"
    starts = [_ws(text, 0)] if strict else [i for i, c in enumerate(text) if c == "{"]
    reasons: list[str] = []
    for start in starts:
        if start >= len(text) or text[start] != "{":
            reasons.append("the answer does not start with '{'")
            continue
        try:
            found = _container(text, start, field_order, strict)
        except _Rejected as exc:
            reasons.append(str(exc))
            continue
        except _RecordError as exc:  # a bad string in the container's own scaffolding
            reasons.append(exc.detail)
            continue
        problems = list(found.problems)
        if strict and found.end is not None and _ws(text, found.end) != len(text):
            problems.append(AnswerProblem("other", "text after the container"))
        typed = not (strict and problems)
        span = (start, len(text) if found.end is None else found.end)
        return ParsedAnswer(
            text,
            "coordjson",
            _types(text, found.typed) if typed else None,
            tuple(found.objects),
            tuple(problems),
            span=span,
        )
    detail = reasons[0] if reasons else "no '{' in the text"
    return ParsedAnswer(text, None, None, problems=(AnswerProblem("parse_failed", detail),))


def write_coordjson(
    objects: list[tuple[str, str, list[int]]],
    *,
    field_order: FieldOrder = "desc_first",
    coord_tokens: bool = True,
) -> str:
    """The canonical CoordJSON text of (desc, geometry key, bins) records."""
    records = []
    for desc, kind, bins in objects:
        elems = ", ".join(f"<|coord_{b}|>" if coord_tokens else str(b) for b in bins)
        d = f'"desc": {json.dumps(desc, ensure_ascii=False)}'
        g = f'"{kind}": [{elems}]'
        records.append("{" + (f"{d}, {g}" if field_order == "desc_first" else f"{g}, {d}") + "}")
    return '{"' + CONTAINER_KEY + '": [' + ", ".join(records) + "]}"


__all__ = ["FieldOrder", "ParseMode", "parse_coordjson", "write_coordjson"]
