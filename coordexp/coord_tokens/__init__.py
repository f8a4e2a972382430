"""Coord tokens (``<|coord_0|>`` .. ``<|coord_999|>``) and the assistant-answer payload text."""

from coordexp.coord_tokens.codec import (
    COORD_BINS,
    CoordVocabError,
    coord_ids_are_consecutive,
    coord_token,
    get_coord_token_ids,
    int_to_token,
    is_coord_token,
    parse_coord_token,
    token_to_int,
    validate_coord_ids,
)
from coordexp.coord_tokens.payload import TokenType, normalize_payload, serialize_payload, typed_serialization

__all__ = [
    "COORD_BINS",
    "CoordVocabError",
    "TokenType",
    "coord_ids_are_consecutive",
    "coord_token",
    "get_coord_token_ids",
    "int_to_token",
    "is_coord_token",
    "normalize_payload",
    "parse_coord_token",
    "serialize_payload",
    "token_to_int",
    "typed_serialization",
    "validate_coord_ids",
]
