"""The assistant-answer text and its per-character types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.coord_tokens.codec import coord_token
from coordexp.coord_tokens.payload import (
    TokenType,
    char_types_by_span,
    serialize_payload,
    typed_serialization,
)

D, C, F = int(TokenType.DESC), int(TokenType.COORD), int(TokenType.FORMAT)


def test_exact_text_and_spans() -> None:
    payload = {"objects": [{"desc": "red car", "bbox_2d": [coord_token(12), coord_token(40), 3, 4.5]}]}
    text, types = typed_serialization(payload)
    assert text == serialize_payload(payload)
    assert text == ('{"objects": [{"desc": "red car", "bbox_2d": ["<|coord_12|>", "<|coord_40|>", 3, 4.5]}]}')
    assert len(types) == len(text)
    assert char_types_by_span(text, types) == [
        ('{"objects": [{"desc": ', F),
        ('"red car"', D),
        (', "bbox_2d": ["', F),
        ("<|coord_12|>", C),
        ('", "', F),
        ("<|coord_40|>", C),
        ('", ', F),
        ("3", C),
        (", ", F),
        ("4.5", C),
        ("]}]}", F),
    ]


def test_flat_poly_written_as_pairs() -> None:
    payload = {"objects": [{"desc": "x", "poly": [1, 2, 3, 4, 5, 6]}]}
    assert json.loads(serialize_payload(payload))["objects"][0]["poly"] == [[1, 2], [3, 4], [5, 6]]
    text, _ = typed_serialization(payload)
    assert text == serialize_payload(payload)
    assert '"poly": [[1, 2], [3, 4], [5, 6]]' in text
    paired = {"objects": [{"desc": "x", "poly": [[1, 2], [3, 4]]}]}
    assert serialize_payload(paired).endswith('"poly": [[1, 2], [3, 4]]}]}')
    with pytest.raises(ValueError, match="even"):
        serialize_payload({"poly": [1, 2, 3]})


def test_everything_else_is_format() -> None:
    # A coord string outside a geometry, numbers outside a geometry, other strings, null, booleans.
    payload = {"note": coord_token(3), "n": 5, "label": "car", "desc": None, "bbox_2d": ["abc", True, None]}
    text, types = typed_serialization(payload)
    assert text == serialize_payload(payload)
    assert set(types) == {F}


def test_desc_escapes_and_non_ascii() -> None:
    payload = {"desc": 'a "quoted" crème\n'}
    text, types = typed_serialization(payload)
    assert text == serialize_payload(payload) == '{"desc": "a \\"quoted\\" crème\\n"}'
    assert char_types_by_span(text, types) == [('{"desc": ', F), ('"a \\"quoted\\" crème\\n"', D), ("}", F)]


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.integers(0, 999).map(coord_token),
)
_keys = st.one_of(st.sampled_from(["desc", "bbox_2d", "poly", "objects", "x"]), st.text(max_size=5))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=4))
def test_typed_text_equals_serialized_text(payload: dict[str, Any]) -> None:
    try:
        expected = serialize_payload(payload)
    except ValueError:  # an odd-length flat poly: both refuse it
        with pytest.raises(ValueError):
            typed_serialization(payload)
        return
    text, types = typed_serialization(payload)
    assert text == expected
    assert len(types) == len(text)
    assert set(types) <= {D, C, F}
