"""Coord-token codec and the demo tokenizer (deterministic, offline, 1000 special coord tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

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
from coordexp.demo.tokenizer import IM_END, IM_START, PAD_TOKEN, build_demo_tokenizer


def test_coord_token_roundtrip() -> None:
    for k in (0, 1, 12, 999):
        assert parse_coord_token(coord_token(k)) == k
        assert token_to_int(int_to_token(k)) == k
    assert coord_token(7) == "<|coord_7|>"


@pytest.mark.parametrize("bad", [-1, 1000, 1.0, True, "3", None])
def test_coord_token_rejects_out_of_range(bad: Any) -> None:
    with pytest.raises(ValueError):
        coord_token(bad)


@pytest.mark.parametrize(
    "s", ["<|coord_007|>", "<|coord_1000|>", "<|coord_-1|>", "coord_3", " <|coord_3|>", 3]
)
def test_parse_rejects_non_tokens(s: Any) -> None:
    assert parse_coord_token(s) is None
    with pytest.raises(ValueError):
        token_to_int(s)


def test_coord_ids_on_demo_tokenizer(tokenizer: Any) -> None:
    ids = get_coord_token_ids(tokenizer)
    assert len(ids) == COORD_BINS == len(set(ids))
    assert coord_ids_are_consecutive(ids)
    assert ids[-1] < len(tokenizer)
    # Each coord token is one token, also inside JSON text.
    text = '["<|coord_0|>", "<|coord_999|>"]'
    enc = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] in enc and ids[999] in enc
    assert is_coord_token(ids[5], ids) and is_coord_token(ids[5], set(ids))
    assert not is_coord_token(tokenizer.eos_token_id, ids)
    validate_coord_ids(ids, len(tokenizer))


class _FakeTokenizer:
    def __init__(self, mapping: dict[str, int], unk: int | None) -> None:
        self.mapping = mapping
        self.unk_token_id = unk

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int | None]:
        return [self.mapping.get(t, self.unk_token_id) for t in tokens]


@pytest.mark.parametrize("unk", [None, 0])
def test_missing_coord_tokens_raise(unk: int | None) -> None:
    mapping = {coord_token(k): 10 + k for k in range(COORD_BINS - 1)}  # the last bin is missing
    with pytest.raises(CoordVocabError, match="must contain the 1000 coord tokens"):
        get_coord_token_ids(_FakeTokenizer(mapping, unk))


def test_duplicate_coord_ids_raise() -> None:
    mapping = {coord_token(k): 10 + k // 2 for k in range(COORD_BINS)}
    with pytest.raises(CoordVocabError, match="distinct"):
        get_coord_token_ids(_FakeTokenizer(mapping, None))
    assert issubclass(CoordVocabError, ValueError)


def test_validate_coord_ids_beyond_vocab() -> None:
    ids = list(range(100, 100 + COORD_BINS))
    validate_coord_ids(ids, 1100)
    with pytest.raises(CoordVocabError, match=r"beyond the logits' vocabulary \(1099\)"):
        validate_coord_ids(ids, 1099)


def test_consecutive() -> None:
    assert coord_ids_are_consecutive([3, 4, 5])
    assert not coord_ids_are_consecutive([3, 5, 6])
    assert not coord_ids_are_consecutive([])


def test_demo_tokenizer_is_deterministic(tmp_path: Path) -> None:
    build_demo_tokenizer(tmp_path / "a", seed=0)
    build_demo_tokenizer(tmp_path / "b", seed=0)
    build_demo_tokenizer(tmp_path / "c", seed=1)
    a = (tmp_path / "a" / "tokenizer.json").read_bytes()
    assert a == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a != (tmp_path / "c" / "tokenizer.json").read_bytes()


def test_demo_tokenizer_shape(tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert 2000 <= len(tok) <= 4000
    assert tok.eos_token == IM_END and tok.pad_token == PAD_TOKEN
    assert tok.convert_tokens_to_ids(IM_START) is not None
    ids = get_coord_token_ids(tok)
    assert all(tok.added_tokens_decoder[i].special for i in ids)
    messages = [{"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
