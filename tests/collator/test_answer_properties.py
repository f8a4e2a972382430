"""Properties of answer typing, for random answers on the real demo tokenizer.

Whichever format (JSON, CoordJSON) or JSON spelling (separators, indent, ``ensure_ascii``, key order)
wrote an answer, the characters of its descs are DESC, of its coordinates COORD and of everything
else FORMAT; the objects read back are the ones written; every token typed COORD is a coord token id
(and every coord token id is typed COORD); today's writer's text is typed exactly as
``typed_serialization`` types it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordexp.answers import parse_answer, typed_runs
from coordexp.coord_tokens.codec import coord_token, get_coord_token_ids, parse_coord_token
from coordexp.coord_tokens.payload import TokenType, serialize_payload, typed_serialization
from coordexp.rows.token_types import text_token_ids

D, C, F = int(TokenType.DESC), int(TokenType.COORD), int(TokenType.FORMAT)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

_desc_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\t")
descs = st.text(_desc_chars, min_size=1, max_size=12).filter(lambda s: s.strip() != "")
bins = st.integers(0, 999)


@st.composite
def records(draw: st.DrawFn) -> tuple[str, str, list[int], bool]:
    """(desc, geometry key, bins, desc first)"""
    kind = draw(st.sampled_from(["bbox_2d", "poly"]))
    n = 4 if kind == "bbox_2d" else 2 * draw(st.integers(3, 6))
    return draw(descs), kind, draw(st.lists(bins, min_size=n, max_size=n)), draw(st.booleans())


answers = st.lists(records(), max_size=4)
spacing = st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :  ")])


def _as_json(recs: list[tuple[str, str, list[int], bool]], tokens: bool, **dumps: Any) -> str:
    objects = []
    for desc, kind, values, desc_first in recs:
        geometry = [coord_token(v) for v in values] if tokens else values
        if kind == "poly" and len(values) % 4 == 0:  # today's writer: pairs; both must read the same
            geometry = [geometry[i : i + 2] for i in range(0, len(geometry), 2)]
        objects.append({"desc": desc, kind: geometry} if desc_first else {kind: geometry, "desc": desc})
    return json.dumps({"objects": objects}, **dumps)


def _as_coordjson(recs: list[tuple[str, str, list[int], bool]], tokens: bool, sep: tuple[str, str]) -> str:
    item, key = sep
    out = []
    for desc, kind, values, desc_first in recs:
        elems = item.join(coord_token(v) if tokens else str(v) for v in values)
        d = f'"desc"{key}{json.dumps(desc, ensure_ascii=False)}'
        g = f'"{kind}"{key}[{elems}]'
        out.append("{" + (f"{d}{item}{g}" if desc_first else f"{g}{item}{d}") + "}")
    return '{"objects"' + key + "[" + item.join(out) + "]}"


def _check_typed(text: str, recs: list[tuple[str, str, list[int], bool]]) -> list[int]:
    parsed = parse_answer(text)
    assert parsed.typed, (text, parsed.problems)
    types = list(parsed.char_types or ())
    runs = typed_runs(text, types)
    assert [json.loads(run) for run, t in runs if t == D] == [r[0] for r in recs]
    coords = [parse_coord_token(run) if run.startswith("<") else int(run) for run, t in runs if t == C]
    assert coords == [v for r in recs for v in r[2]]
    assert set(types) <= {D, C, F}
    got = [(o.desc, o.kind, list(o.bins)) for o in parsed.objects]
    assert got == [(r[0].strip(), r[1], r[2]) for r in recs]
    return types


@SETTINGS
@given(
    recs=answers,
    tokens=st.booleans(),
    sep=spacing,
    indent=st.sampled_from([None, 0, 2]),
    ascii_=st.booleans(),
)
def test_every_format_and_spelling_types_the_same_characters_alike(
    tokenizer: Any,
    recs: list[tuple[str, str, list[int], bool]],
    tokens: bool,
    sep: Any,
    indent: Any,
    ascii_: bool,
) -> None:
    coord_ids = set(get_coord_token_ids(tokenizer))
    texts = [
        _as_json(recs, tokens, separators=sep, indent=indent, ensure_ascii=ascii_),
        _as_coordjson(recs, tokens, sep),
    ]
    for text in texts:
        types = _check_typed(text, recs)
        ids, token_types = text_token_ids(tokenizer, text, types)
        for token_id, token_type in zip(ids, token_types, strict=True):
            assert (token_id in coord_ids) == (token_type == C and tokens), (text, token_id)


payload_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 1500),
        st.floats(-10, 10),
        st.sampled_from(["<|coord_3|>", "<|coord_999|>", "cat", "é", '"q"']),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["desc", "bbox_2d", "poly", "n", "é"]), inner, max_size=3),
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    payload=st.dictionaries(st.sampled_from(["objects", "desc", "bbox_2d", "x"]), payload_values, max_size=3)
)
def test_todays_writer_is_typed_exactly_as_before(payload: dict[str, Any]) -> None:
    try:
        text, expected = typed_serialization(payload)
    except ValueError:  # an odd flat poly: the writer refuses it, nothing to compare
        return
    assert text == serialize_payload(payload)
    parsed = parse_answer(text, "json")
    assert parsed.typed and list(parsed.char_types or ()) == expected


def test_coord_slots_map_to_the_coord_tokens_of_each_object(tokenizer: Any) -> None:
    from coordexp.answers import slot_token_groups, write_coordjson

    text = write_coordjson([("cat", "bbox_2d", [12, 56, 200, 512])]).removesuffix("]}")
    text += ', {"poly": [' + ", ".join(f"<|coord_{k}|>" for k in range(1, 7)) + '], "desc": "dog"}]}'
    assert parse_answer(text).typed
    parsed = parse_answer(text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    groups = slot_token_groups(parsed.coord_slot_groups(), enc["offset_mapping"])
    ids = enc["input_ids"]
    assert [[parse_coord_token(tokenizer.convert_ids_to_tokens(ids[i])) for i in g] for g in groups] == [
        [12, 56, 200, 512],
        [1, 2, 3, 4, 5, 6],
    ]
