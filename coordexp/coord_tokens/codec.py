"""Coord tokens ``<|coord_0|>`` .. ``<|coord_999|>``: 1000 ordered bins, and their tokenizer ids."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

COORD_BINS: Final = 1000
COORD_TOKEN_PREFIX: Final = "<|coord_"
COORD_TOKEN_SUFFIX: Final = "|>"
_COORD_RE: Final = re.compile(f"^{re.escape(COORD_TOKEN_PREFIX)}(\\d{{1,3}}){re.escape(COORD_TOKEN_SUFFIX)}$")
# Anything spelled like a coord token inside a text, whatever stands between the delimiters: the ones
# that are not one of the COORD_BINS tokens (``<|coord_1555|>``, ``<|coord_007|>``) are not in the
# vocabulary, so the tokenizer would split them into ordinary text pieces.
_COORD_LIKE_RE: Final = re.compile(
    f"{re.escape(COORD_TOKEN_PREFIX)}[^|<>\\s]*{re.escape(COORD_TOKEN_SUFFIX)}"
)


class CoordVocabError(ValueError):
    """The tokenizer (or the logits' vocab) does not carry the full coord vocabulary."""


def coord_token(k: int) -> str:
    """The token text of bin ``k`` (0 <= k < 1000)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < COORD_BINS:
        raise ValueError(f"coord bin must be an int in [0, {COORD_BINS}), got {k!r}")
    return f"{COORD_TOKEN_PREFIX}{k}{COORD_TOKEN_SUFFIX}"


def parse_coord_token(s: object) -> int | None:
    """The bin of a coord-token string, or None when ``s`` is not exactly one coord token."""
    if not isinstance(s, str):
        return None
    m = _COORD_RE.match(s)
    if m is None:
        return None
    digits = m.group(1)
    # Reject non-canonical spellings ("<|coord_007|>") so text <-> bin is a bijection.
    if len(digits) > 1 and digits.startswith("0"):
        return None
    return int(digits)


def invalid_coord_tokens(text: str) -> list[str]:
    """The coord-token lookalikes in ``text`` that are not one of the ``COORD_BINS`` tokens, in order."""
    return [m.group(0) for m in _COORD_LIKE_RE.finditer(text) if parse_coord_token(m.group(0)) is None]


# Aliases named after the int <-> token direction, for call sites that read better that way.
int_to_token = coord_token


def token_to_int(s: str) -> int:
    """Like ``parse_coord_token`` but raising on a non-coord string."""
    k = parse_coord_token(s)
    if k is None:
        raise ValueError(f"not a coord token: {s!r}")
    return k


def get_coord_token_ids(tokenizer: Any) -> list[int]:
    """Ids of ``<|coord_0|>`` .. ``<|coord_999|>`` in bin order; raises ``CoordVocabError`` if incomplete."""
    tokens = [coord_token(k) for k in range(COORD_BINS)]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    unk = getattr(tokenizer, "unk_token_id", None)
    missing = [t for t, i in zip(tokens, ids, strict=True) if i is None or (unk is not None and i == unk)]
    if missing:
        raise CoordVocabError(
            f"tokenizer is missing {len(missing)} of the {COORD_BINS} coord tokens (first: {missing[:3]}); "
            f"the tokenizer must contain the {COORD_BINS} coord tokens "
            f"<|coord_0|> .. <|coord_{COORD_BINS - 1}|>"
        )
    if len(set(ids)) != COORD_BINS:
        raise CoordVocabError(
            f"coord tokens map to {len(set(ids))} distinct ids, expected {COORD_BINS}; "
            f"the tokenizer must contain the {COORD_BINS} coord tokens as distinct tokens"
        )
    return [int(i) for i in ids]


def validate_coord_ids(ids: Sequence[int], vocab_size: int) -> None:
    """Raise ``CoordVocabError`` unless ``ids`` are ``COORD_BINS`` distinct ids that all index into logits
    of ``vocab_size`` (the check is :meth:`~coordexp.functional.coord_slice.CoordSlice.check_vocab`)."""
    if len(ids) != COORD_BINS:
        raise CoordVocabError(f"expected {COORD_BINS} coord ids, got {len(ids)}")
    # Imported here: the rest of the codec is plain text and ints, without torch.
    from coordexp.functional.coord_slice import CoordSlice

    try:
        coord = CoordSlice.from_ids(ids)
    except ValueError as exc:  # empty, negative or repeated ids
        raise CoordVocabError(str(exc)) from exc
    try:
        coord.check_vocab(vocab_size)
    except ValueError as exc:
        raise CoordVocabError(f"{exc}; resize the model embeddings to the tokenizer") from exc


def is_coord_token(token_id: int, coord_ids: Iterable[int]) -> bool:
    """Whether ``token_id`` is one of ``coord_ids`` (pass a set for repeated lookups)."""
    return int(token_id) in (coord_ids if isinstance(coord_ids, set | frozenset) else set(coord_ids))


def coord_ids_are_consecutive(ids: Sequence[int]) -> bool:
    """True when the ids are ``first, first+1, ...``: the coord logits are then a plain slice."""
    return len(ids) > 0 and all(int(b) - int(a) == 1 for a, b in itertools.pairwise(ids))


__all__ = [
    "COORD_BINS",
    "CoordVocabError",
    "coord_ids_are_consecutive",
    "coord_token",
    "get_coord_token_ids",
    "int_to_token",
    "invalid_coord_tokens",
    "is_coord_token",
    "parse_coord_token",
    "token_to_int",
    "validate_coord_ids",
]
