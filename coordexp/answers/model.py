"""What parsing an assistant answer gives: typed character spans and the objects it holds.

Both answer grammars (:mod:`coordexp.answers.json_answer`, :mod:`coordexp.answers.coordjson`) return a
:class:`ParsedAnswer`; every reader of an answer (token types, the coord-slot grouping of the box
losses, the detection evaluation) reads this one structure, so no second parser ever appears.
"""

from __future__ import annotations

import json.decoder
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from coordexp.coord_tokens.codec import COORD_BINS, parse_coord_token
from coordexp.generated.batch_extras import TokenType

AnswerFormat = Literal["auto", "json", "coordjson"]
ParsedFormat = Literal["json", "coordjson"]
ANSWER_FORMATS: Final[tuple[str, ...]] = ("auto", "json", "coordjson")
DESC_KEY: Final = "desc"
GEOMETRY_KEYS: Final = ("bbox_2d", "poly")

DESC: Final = int(TokenType.DESC)
COORD: Final = int(TokenType.COORD)
FORMAT: Final = int(TokenType.FORMAT)

# The standard library's JSON string reader (escapes, strict control characters): (text, index after
# the opening quote, strict) -> (decoded string, index after the closing quote). Not in typeshed.
scan_json_string: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CoordSlot:
    """One geometry element: its bin (None for a value that is no bin: a float, 1500, ...) and where
    its text is (``text[start:end]``: the coord token or the number, quotes excluded)."""

    bin: int | None
    start: int
    end: int


@dataclass(frozen=True)
class Geometry:
    kind: str
    """``bbox_2d`` or ``poly``"""
    slots: tuple[CoordSlot, ...]
    """every element in written order (nested pairs flattened)"""

    @property
    def bins(self) -> tuple[int | None, ...]:
        return tuple(s.bin for s in self.slots)


@dataclass(frozen=True)
class AnswerObject:
    """One record of the answer: its desc (None when it has none) and its geometries in written
    order (CoordJSON: exactly one; today's JSON may give both ``bbox_2d`` and ``poly``)."""

    desc: str | None
    geometries: tuple[Geometry, ...]
    start: int
    end: int

    @property
    def kind(self) -> str | None:
        """The first geometry's key (CoordJSON's only one)."""
        return self.geometries[0].kind if self.geometries else None

    @property
    def bins(self) -> tuple[int | None, ...]:
        """The first geometry's bins in written order."""
        return self.geometries[0].bins if self.geometries else ()


@dataclass(frozen=True)
class AnswerProblem:
    """Why (part of) an answer cannot be used. ``reason`` is a code (CoordJSON: the reference's
    ``unexpected_keys``, ``missing_desc``, ``order_violation``, ``wrong_arity``, ``other``,
    ``dropped_incomplete_tail``, ``parse_failed``; coordexp adds ``bad_desc`` and ``not_json``);
    ``detail`` says it for a person; ``object_index`` names ``objects[i]`` when one record is at fault."""

    reason: str
    detail: str
    object_index: int | None = None

    def __str__(self) -> str:
        where = "" if self.object_index is None else f"objects[{self.object_index}]: "
        return f"{where}{self.reason}: {self.detail}"


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer text, the format it was read as, its per-character types and its objects.

    ``char_types`` (one ``TokenType`` value per character of ``text``) is None when the text does not
    follow the grammar; then ``problems`` says why. Salvage parsing (model output) may give objects
    and problems together; training data is typed only when there is no problem (:attr:`typed`).
    """

    text: str
    format: ParsedFormat | None
    char_types: tuple[int, ...] | None
    objects: tuple[AnswerObject, ...] = ()
    problems: tuple[AnswerProblem, ...] = ()
    span: tuple[int, int] | None = field(default=None)
    """``text[start:end]`` of the parsed container (salvage mode may ignore text around it)"""

    @property
    def typed(self) -> bool:
        return self.char_types is not None and not self.problems

    @property
    def problem(self) -> AnswerProblem | None:
        return self.problems[0] if self.problems else None

    def coord_slot_groups(self) -> list[tuple[CoordSlot, ...]]:
        """Each object's coord slots in written order (all its geometries): the grouping the box
        losses need, as character spans; map them to tokens with a tokenizer's offsets."""
        return [tuple(s for g in o.geometries for s in g.slots) for o in self.objects]


def slot_token_groups(
    groups: Sequence[Sequence[CoordSlot]], offsets: Sequence[tuple[int, int]]
) -> list[list[int]]:
    """Each object's coord slots as token indices: the token whose ``(start, end)`` character
    offsets (a tokenizer's ``offset_mapping`` of the same text) holds the slot's first character.
    A slot no token holds (offsets of another text) raises ``ValueError``."""
    starts = sorted((int(s), i) for i, (s, e) in enumerate(offsets) if int(e) > int(s))
    out: list[list[int]] = []
    for group in groups:
        indices = []
        for slot in group:
            found = [i for s, i in starts if s <= slot.start < int(offsets[i][1])]
            if not found:
                raise ValueError(f"no token holds the coord slot at characters {slot.start}..{slot.end}")
            indices.append(found[0])
        out.append(indices)
    return out


def coord_bin(value: object) -> int | None:
    """The bin of a geometry element: a coord token string or an int in 0..999; else None."""
    if isinstance(value, str):
        return parse_coord_token(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < COORD_BINS:
        return value
    return None


def typed_runs(text: str, types: Sequence[int]) -> list[tuple[str, int]]:
    """(span, type) runs of a typed text: a readable view for tests and debugging."""
    runs: list[tuple[str, int]] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or types[i] != types[start]:
            runs.append((text[start:i], int(types[start])))
            start = i
    return runs


__all__ = [
    "ANSWER_FORMATS",
    "COORD",
    "DESC",
    "FORMAT",
    "GEOMETRY_KEYS",
    "AnswerFormat",
    "AnswerObject",
    "AnswerProblem",
    "CoordSlot",
    "Geometry",
    "ParsedAnswer",
    "ParsedFormat",
    "coord_bin",
    "scan_json_string",
    "slot_token_groups",
    "typed_runs",
]
