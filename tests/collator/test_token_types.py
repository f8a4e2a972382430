"""Token types on the real demo tokenizer and ms-swift's qwen3_nothinking encoding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.rows.token_types import (
    MAX_SPECIAL_TAIL,
    TokenType,
    compute_packed_token_types,
    compute_token_types,
    dataset_included,
    resolve_suffix_ids,
)

IGN, D, C, F = int(TokenType.IGNORE), int(TokenType.DESC), int(TokenType.COORD), int(TokenType.FORMAT)


def _types(template: Any, encoded: dict[str, Any], payload: Any, labels: Any = None) -> torch.Tensor | None:
    return compute_token_types(
        tokenizer=template.tokenizer,
        payload=payload,
        labels=torch.tensor(encoded["labels"] if labels is None else labels),
        attention_mask=None,
        suffix_tokens=resolve_suffix_ids(template),
    )


def test_enum_values() -> None:
    assert [int(t) for t in TokenType] == [-1, 1, 2, 3]


def test_suffix_is_im_end_newline(template: Any) -> None:
    tok = template.tokenizer
    newline = tok("\n")["input_ids"][0]
    assert resolve_suffix_ids(template) == [tok.convert_tokens_to_ids("<|im_end|>"), newline]


def test_types_of_a_real_encoding(
    template: Any, encode: Callable[..., dict[str, Any]], make_row: Callable[..., dict[str, Any]]
) -> None:
    row = make_row(1)  # with a flat poly, written as pairs
    enc = encode(row)
    types = _types(template, enc, row["assistant_payload"])
    assert types is not None
    labels = torch.tensor(enc["labels"])
    tok = template.tokenizer
    coord_ids = set(get_coord_token_ids(tok))
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])

    assert (types[labels == -100] == IGN).all()  # the prompt
    assert (types[labels != -100] != IGN).all()
    for i, lab in enumerate(enc["labels"]):
        if lab in coord_ids:
            assert types[i] == C, pieces[i]
            assert types[i - 1] == F and pieces[i - 1].endswith('"')  # its opening quote
            assert types[i + 1] == F and pieces[i + 1].startswith('"')  # its closing quote
        elif lab != -100:
            assert types[i] != C, pieces[i]
    # The suffix <|im_end|>\n is FORMAT.
    assert pieces[-2:] == ["<|im_end|>", "Ċ"] and types[-2:].tolist() == [F, F]
    # The description words are DESC.
    desc_text = tok.decode(labels[types == D].tolist())
    for obj in row["assistant_payload"]["objects"]:
        assert f'"{obj["desc"]}"' in desc_text
    assert "bbox" not in desc_text and "desc" not in desc_text


def test_mismatch_gives_none(
    template: Any, encode: Callable[..., dict[str, Any]], make_row: Callable[..., dict[str, Any]]
) -> None:
    row = make_row(2)
    enc = encode(row)
    other = make_row(5)["assistant_payload"]
    assert _types(template, enc, other) is None
    assert _types(template, enc, "not json") is None
    assert _types(template, enc, None) is None
    # A truncated answer does not match either.
    labels = list(enc["labels"])
    cut = [*labels[:-10], *([-100] * 10)]
    assert _types(template, enc, row["assistant_payload"], labels=cut) is None
    # No supervised token at all.
    assert _types(template, enc, row["assistant_payload"], labels=[-100] * len(labels)) is None


def test_special_tail(
    template: Any, encode: Callable[..., dict[str, Any]], make_row: Callable[..., dict[str, Any]]
) -> None:
    row = make_row(3)
    enc = encode(row)
    tok = template.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    for tail in ([eos], [pad, eos] * (MAX_SPECIAL_TAIL // 2)):
        types = _types(template, enc, row["assistant_payload"], labels=[*enc["labels"], *tail])
        assert types is not None and types[-len(tail) :].tolist() == [F] * len(tail)
    too_long = [eos] * (MAX_SPECIAL_TAIL + 1)
    assert _types(template, enc, row["assistant_payload"], labels=[*enc["labels"], *too_long]) is None
    word = tok("car", add_special_tokens=False)["input_ids"][0]
    assert _types(template, enc, row["assistant_payload"], labels=[*enc["labels"], word]) is None
    coord = get_coord_token_ids(tok)[0]
    assert _types(template, enc, row["assistant_payload"], labels=[*enc["labels"], coord]) is None


def test_padding_and_attention_mask(
    template: Any, encode: Callable[..., dict[str, Any]], make_row: Callable[..., dict[str, Any]]
) -> None:
    row = make_row(4)
    enc = encode(row)
    n = len(enc["labels"])
    padded = [-100] * 3 + enc["labels"]  # left padding
    mask = [0] * 3 + [1] * n
    types = compute_token_types(
        tokenizer=template.tokenizer,
        payload=row["assistant_payload"],
        labels=torch.tensor(padded),
        attention_mask=torch.tensor(mask),
        suffix_tokens=resolve_suffix_ids(template),
    )
    plain = _types(template, enc, row["assistant_payload"])
    assert types is not None and plain is not None
    assert types[:3].tolist() == [IGN] * 3 and torch.equal(types[3:], plain)


def test_payload_with_none_filled_keys_and_json_text(
    template: Any, encode: Callable[..., dict[str, Any]], make_row: Callable[..., dict[str, Any]]
) -> None:
    import json

    row = make_row(2)  # no poly
    enc = encode(row)
    # What an Arrow struct makes of it when other rows have a poly.
    filled = {"objects": [{**o, "poly": None} for o in row["assistant_payload"]["objects"]]}
    expected = _types(template, enc, row["assistant_payload"])
    assert expected is not None
    assert torch.equal(_types(template, enc, filled), expected)  # type: ignore[arg-type]
    assert torch.equal(_types(template, enc, json.dumps(row["assistant_payload"])), expected)  # type: ignore[arg-type]


def test_dataset_include_rule() -> None:
    assert dataset_included("LVIS", ["lvis"])
    assert dataset_included("lvis", ["LVIS"])
    assert not dataset_included("lvis", ["lvis"], ["lvis"])
    assert not dataset_included("coco", ["lvis"])
    assert not dataset_included("lvis", [])


def test_packed_concatenation() -> None:
    a = torch.tensor([IGN, F, C])
    b = torch.tensor([IGN, D])
    assert compute_packed_token_types([a, b], 5).tolist() == [IGN, F, C, IGN, D]
    assert compute_packed_token_types([a, b], 6).tolist() == [IGN] * 6
    assert compute_packed_token_types([], 2).tolist() == [IGN] * 2


@pytest.mark.parametrize("majority", [True])
def test_majority_tie_prefers_content(template: Any, majority: bool) -> None:
    # ' "' before a description is one token: a FORMAT space and a DESC quote -> DESC.
    from coordexp.rows.token_types import typed_token_ids

    ids, types = typed_token_ids(template.tokenizer, {"desc": "red"})
    pieces = template.tokenizer.convert_ids_to_tokens(ids)
    assert majority and 'Ġ"' in pieces
    assert types[pieces.index('Ġ"')] == D


@pytest.mark.parametrize(
    "form",
    ["ids", "text", "text_pieces", "id_lists", "attribute_names"],
)
def test_suffix_tokens_as_ms_swift_writes_them(
    template: Any, encode: Callable[..., dict[str, Any]], make_row: Callable[..., dict[str, Any]], form: str
) -> None:
    """ms-swift writes a template suffix as text, token-id lists or tokenizer attribute names."""
    tok = template.tokenizer
    im_end, newline = tok.convert_tokens_to_ids("<|im_end|>"), tok("\n")["input_ids"][0]
    suffix: list[Any] = {
        "ids": [im_end, newline],
        "text": ["<|im_end|>\n"],
        "text_pieces": ["<|im_end|>", "\n"],
        "id_lists": [[im_end], [newline]],
        "attribute_names": [["eos_token_id"], "\n"],
    }[form]
    if form == "attribute_names":
        assert tok.eos_token_id == im_end  # the Qwen3 tokenizer's eos is the end-of-turn token
    row = make_row(3)
    encoded = encode(row)
    expected = _types(template, encoded, row["assistant_payload"])
    got = compute_token_types(
        tokenizer=tok,
        payload=row["assistant_payload"],
        labels=torch.tensor(encoded["labels"]),
        suffix_tokens=suffix,
    )
    assert expected is not None and got is not None
    assert torch.equal(got, expected)


def test_suffix_naming_an_undefined_attribute_is_a_clear_error(template: Any) -> None:
    with pytest.raises(ValueError, match="template suffix names 'no_such_token_id'"):
        compute_token_types(
            tokenizer=template.tokenizer,
            payload={"objects": []},
            labels=torch.tensor([1, 2]),
            suffix_tokens=[["no_such_token_id"]],
        )
