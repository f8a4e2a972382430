"""The answer grammars (coordexp.answers): typed spans, objects and problems, without a tokenizer."""

from __future__ import annotations

import json

import pytest

from coordexp.answers import parse_answer, parse_coordjson, parse_json_answer, typed_runs, write_coordjson
from coordexp.answers.compare import payload_disagreement
from coordexp.coord_tokens.codec import coord_token
from coordexp.coord_tokens.payload import TokenType, serialize_payload, typed_serialization

D, C, F = int(TokenType.DESC), int(TokenType.COORD), int(TokenType.FORMAT)
CAT = '{"objects": [{"desc": "cat", "bbox_2d": [<|coord_12|>, <|coord_56|>, <|coord_200|>, <|coord_512|>]}]}'
BOX = [coord_token(v) for v in (12, 56, 200, 512)]


def test_the_reference_example_is_typed_as_the_reference_says() -> None:
    parsed = parse_answer(CAT)
    assert parsed.format == "coordjson" and parsed.typed
    assert parsed.char_types is not None
    assert typed_runs(CAT, parsed.char_types) == [
        ('{"objects": [{"desc": ', F),
        ('"cat"', D),
        (', "bbox_2d": [', F),
        ("<|coord_12|>", C),
        (", ", F),
        ("<|coord_56|>", C),
        (", ", F),
        ("<|coord_200|>", C),
        (", ", F),
        ("<|coord_512|>", C),
        ("]}]}", F),
    ]
    [obj] = parsed.objects
    assert (obj.desc, obj.kind, obj.bins) == ("cat", "bbox_2d", (12, 56, 200, 512))
    assert [CAT[s.start : s.end] for s in parsed.coord_slot_groups()[0]] == BOX


def test_the_writer_writes_the_reference_example() -> None:
    assert write_coordjson([("cat", "bbox_2d", [12, 56, 200, 512])]) == CAT
    assert write_coordjson([], field_order="geometry_first") == '{"objects": []}'


@pytest.mark.parametrize(
    "payload",
    [
        {"objects": [{"desc": "crème brûlée", "bbox_2d": BOX, "poly": BOX + BOX[:2]}]},
        {"objects": [{"bbox_2d": [1, 2.5, 3, 4], "desc": "x", "poly": [[1, 2], [3, 4], [5, 6]]}]},
        {"object_1": {"desc": "a", "bbox_2d": BOX}, "n": 3, "ok": True, "none": None},
        {"desc": ["list", "not desc"], "bbox_2d": [{"desc": "inner"}, "text", True, None, "<|coord_5|>"]},
        {"objects": []},
    ],
)
def test_json_typing_is_todays_typing_for_todays_writer(payload: dict[str, object]) -> None:
    text, types = typed_serialization(payload)
    parsed = parse_json_answer(text)
    assert parsed.typed and list(parsed.char_types or ()) == types


@pytest.mark.parametrize(
    "kwargs", [{"indent": 2}, {"ensure_ascii": True}, {"separators": (",", ":")}, {"sort_keys": True}]
)
def test_any_json_spelling_gives_the_same_objects(kwargs: dict[str, object]) -> None:
    payload = {"objects": [{"desc": "crème", "bbox_2d": BOX}, {"poly": BOX + BOX[:2], "desc": "b"}]}
    base = parse_answer(serialize_payload(payload))
    other = parse_answer(json.dumps(payload, **kwargs))  # type: ignore[arg-type]
    assert other.format == "json" and other.typed
    assert [(o.desc, o.kind, o.bins) for o in other.objects] == [
        (o.desc, o.kind, o.bins) for o in base.objects
    ]
    # The escaped desc is DESC as a whole, quotes included.
    text, types = other.text, other.char_types or ()
    runs = [json.loads(run) for run, t in typed_runs(text, types) if t == D]
    assert runs == ["crème", "b"]


def test_geometry_first_poly_and_integers() -> None:
    text = '{"objects": [{"poly": [1, 2, 3, 4, 5, 6], "desc": "dog"}]}'
    for fmt in ("auto", "coordjson", "json"):
        parsed = parse_answer(text, fmt)  # type: ignore[arg-type]
        assert parsed.typed and parsed.objects[0].bins == (1, 2, 3, 4, 5, 6)
    assert parse_answer(text).format == "json"  # valid JSON is read as JSON; the types are the same
    assert parse_answer(text, "coordjson").char_types == parse_answer(text, "json").char_types


def test_salvage_reproduces_the_reference_worked_parse() -> None:
    text = (
        'Sure: {"objects": [{"desc": "cat", "bbox_2d": '
        "[<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}, "
        '{"bbox_2d": [<|coord_5|>, <|coord_6|>, <|coord_7|>, <|coord_8|>], "desc": "dog"}, '
        '{"desc": "cow", "bbox_2d": [<|coord_9|>, <|coord_1'
    )
    desc_first = parse_coordjson(text, mode="salvage", field_order="desc_first")
    geometry_first = parse_coordjson(text, mode="salvage", field_order="geometry_first")
    assert [o.desc for o in desc_first.objects] == ["cat"]
    assert [o.desc for o in geometry_first.objects] == ["dog"]
    assert [p.reason for p in desc_first.problems] == ["order_violation", "dropped_incomplete_tail"]
    assert not parse_coordjson(text, mode="strict").typed  # training data: no salvage


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>]}', "wrong_arity"),
        ('{"desc": "a", "bbox_2d": [[<|coord_1|>, <|coord_2|>], [<|coord_3|>, <|coord_4|>]]}', "wrong_arity"),
        ('{"desc": "a", "poly": [1, 2, 3, 4]}', "wrong_arity"),
        ('{"desc": "a", "bbox_2d": [1, 2, 3, 1000]}', "wrong_arity"),
        ('{"desc": "a", "bbox_2d": [1, 2, 3, 04]}', "wrong_arity"),
        ('{"desc": "a", "bbox_2d": ["<|coord_1|>", 2, 3, 4]}', "wrong_arity"),
        ('{"desc": "a", "bbox_2d": [1, 2, 3, 4], "poly": [1, 2, 3, 4, 5, 6]}', "unexpected_keys"),
        ('{"desc": "a", "box": [1, 2, 3, 4]}', "unexpected_keys"),
        ('{"bbox_2d": [1, 2, 3, 4]}', "missing_desc"),
        ('{"desc": "  ", "bbox_2d": [1, 2, 3, 4]}', "missing_desc"),
        ('{"desc": <|coord_3|>, "bbox_2d": [1, 2, 3, 4]}', "missing_desc"),
        ('{"desc": "a\\nb", "bbox_2d": [1, 2, 3, 4]}', "bad_desc"),
    ],
)
def test_strict_record_problems_name_the_record(record: str, reason: str) -> None:
    good = '{"desc": "ok", "bbox_2d": [1, 2, 3, 4]}'
    parsed = parse_answer('{"objects": [' + good + ", " + record + "]}", "coordjson")
    assert not parsed.typed and parsed.char_types is None
    assert parsed.problem is not None
    assert (parsed.problem.reason, parsed.problem.object_index) == (reason, 1), parsed.problems
    assert str(parsed.problem).startswith(f"objects[1]: {reason}: ")


@pytest.mark.parametrize(
    "text",
    [
        '{"objects": [{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>',  # unterminated record
        '{"objects": [{"desc": "a", "bbox_2d": [1, 2, 3, 4]}]',  # container not closed
        '{"objects": [<|coord_1|>]}',  # a bare coord token where a record belongs
        '{"objects": [], "n": <|coord_1|>}',  # a second key
        '{"objects": []} <|coord_1|>',  # text after the container
        "<|coord_1|> is the answer",
    ],
)
def test_strict_refuses_what_is_not_one_closed_container(text: str) -> None:
    parsed = parse_answer(text)
    assert not parsed.typed and parsed.problem is not None


def test_auto_reports_json_problems_for_plain_text() -> None:
    problem = parse_answer("There is a cat.").problem
    assert problem is not None and problem.reason == "not_json"
    with pytest.raises(ValueError, match="answer_format"):
        parse_answer("{}", "yaml")  # type: ignore[arg-type]


def test_payload_disagreement() -> None:
    answer = parse_answer(CAT).objects
    assert payload_disagreement({"objects": [{"desc": "cat", "bbox_2d": BOX}]}, answer) is None
    # a payload geometry the CoordJSON record leaves out is no disagreement
    both = {"objects": [{"desc": "cat", "bbox_2d": BOX, "poly": BOX + BOX[:2]}]}
    assert payload_disagreement(both, answer) is None
    assert payload_disagreement(json.dumps(both), answer) is None  # a payload stored as JSON text
    moved = {"objects": [{"desc": "cat", "bbox_2d": [*BOX[:3], coord_token(513)]}]}
    assert "objects[0].bbox_2d is [12, 56, 200, 512] in the answer" in str(
        payload_disagreement(moved, answer)
    )
    assert "desc is 'cat' in the answer, 'dog'" in str(
        payload_disagreement({"objects": [{"desc": "dog", "bbox_2d": BOX}]}, answer)
    )
    assert "has 1 objects, assistant_payload 0" in str(payload_disagreement({"objects": []}, answer))
    assert payload_disagreement([1], answer) == "assistant_payload is not a JSON object of an answer"
