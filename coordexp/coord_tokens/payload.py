"""The assistant answer's JSON text, and the same text typed per character.

``serialize_payload`` is what the dataset builder writes as the assistant message;
``typed_serialization`` rebuilds the identical text while recording, for every character, whether it
is description text (DESC), a coordinate (COORD) or JSON scaffolding (FORMAT). Token types are then
the majority type of each token's characters (see ``coordexp.rows.token_types``).

``TokenType`` is generated from ``schemas/batch_extras.schema.json`` (the codes of the
``token_types`` extra) and re-exported here, the lowest layer that needs it, so that ``coord_tokens``
never imports ``rows`` (which imports this module); ``rows.token_types`` re-exports it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from coordexp.coord_tokens.codec import parse_coord_token
from coordexp.generated.batch_extras import TokenType

DESC_KEY: Final = "desc"
GEOMETRY_KEYS: Final = frozenset({"bbox_2d", "poly"})
POLY_KEY: Final = "poly"
# The builder's exact json.dumps settings; typed_serialization mirrors them.
ITEM_SEP: Final = ", "
KEY_SEP: Final = ": "
_DUMPS_KW: Final[dict[str, Any]] = {"ensure_ascii": False, "separators": (ITEM_SEP, KEY_SEP)}


def _is_scalar(v: object) -> bool:
    return not isinstance(v, Mapping | list | tuple)


def _poly_pairs(value: Any) -> Any:
    """A flat ``[x0, y0, x1, y1, ...]`` becomes ``[[x0, y0], [x1, y1], ...]``; anything else is kept."""
    if not isinstance(value, list | tuple) or not value or not all(_is_scalar(v) for v in value):
        return value
    if len(value) % 2:
        raise ValueError(f"flat poly needs an even number of values, got {len(value)}")
    return [[value[i], value[i + 1]] for i in range(0, len(value), 2)]


def normalize_payload(obj: Any) -> Any:
    """The payload as it is written: flat ``poly`` lists as pairs, tuples as lists, mappings as dicts."""
    if isinstance(obj, Mapping):
        return {k: normalize_payload(_poly_pairs(v) if k == POLY_KEY else v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [normalize_payload(v) for v in obj]
    return obj


def serialize_payload(payload: Mapping[str, Any]) -> str:
    """The exact assistant-answer text the dataset builder writes for ``payload``."""
    return json.dumps(normalize_payload(payload), **_DUMPS_KW)


def _key_text(key: object) -> str:
    """json.dumps' rendering of a mapping key (non-str keys are stringified the way json does)."""
    if isinstance(key, str):
        return json.dumps(key, ensure_ascii=False)
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(json.dumps(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


class _TypedWriter:
    """Appends text spans with one type per span; the result is (text, per-char types)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.types: list[int] = []

    def put(self, text: str, ttype: TokenType) -> None:
        self.parts.append(text)
        self.types.extend([int(ttype)] * len(text))

    def value(self, obj: Any, *, under_desc: bool, under_geom: bool) -> None:
        if isinstance(obj, Mapping):
            self.put("{", TokenType.FORMAT)
            for i, (k, v) in enumerate(obj.items()):
                if i:
                    self.put(ITEM_SEP, TokenType.FORMAT)
                self.put(_key_text(k), TokenType.FORMAT)
                self.put(KEY_SEP, TokenType.FORMAT)
                # The context is set by the nearest key: a dict nested in a geometry resets it.
                self.value(v, under_desc=k == DESC_KEY, under_geom=k in GEOMETRY_KEYS)
            self.put("}", TokenType.FORMAT)
        elif isinstance(obj, list | tuple):
            self.put("[", TokenType.FORMAT)
            for i, v in enumerate(obj):
                if i:
                    self.put(ITEM_SEP, TokenType.FORMAT)
                # desc applies to its direct string value only; geometry covers nested pairs.
                self.value(v, under_desc=False, under_geom=under_geom)
            self.put("]", TokenType.FORMAT)
        else:
            self.scalar(obj, under_desc=under_desc, under_geom=under_geom)

    def scalar(self, obj: Any, *, under_desc: bool, under_geom: bool) -> None:
        text = json.dumps(obj, **_DUMPS_KW)
        if isinstance(obj, str):
            if under_desc:
                self.put(text, TokenType.DESC)
            elif under_geom and parse_coord_token(obj) is not None:
                # A coord token needs no escaping, so its text is exactly '"' + token + '"'.
                self.put('"', TokenType.FORMAT)
                self.put(obj, TokenType.COORD)
                self.put('"', TokenType.FORMAT)
            else:
                self.put(text, TokenType.FORMAT)
        elif under_geom and isinstance(obj, int | float) and not isinstance(obj, bool):
            self.put(text, TokenType.COORD)
        else:
            self.put(text, TokenType.FORMAT)


def typed_serialization(payload: Mapping[str, Any]) -> tuple[str, list[int]]:
    """``serialize_payload(payload)`` plus one ``TokenType`` value per character."""
    writer = _TypedWriter()
    writer.value(normalize_payload(payload), under_desc=False, under_geom=False)
    return "".join(writer.parts), writer.types


def char_types_by_span(text: str, types: Sequence[int]) -> list[tuple[str, int]]:
    """Group a typed text into (span, type) runs: a readable view for tests and debugging."""
    from coordexp.answers.model import typed_runs  # lazy: the answers import the coord codec

    return typed_runs(text, types)


__all__ = [
    "DESC_KEY",
    "GEOMETRY_KEYS",
    "TokenType",
    "char_types_by_span",
    "normalize_payload",
    "serialize_payload",
    "typed_serialization",
]
