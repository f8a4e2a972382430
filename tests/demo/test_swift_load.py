"""The demo folder is a complete offline checkpoint for ms-swift, and coord tokens stay single tokens."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.demo import DemoAssets

swift = pytest.importorskip("swift")

_COORD_RE = re.compile(r"<\|coord_(\d+)\|>")


@pytest.fixture(scope="module")
def loaded(demo_assets: DemoAssets) -> tuple[Any, Any]:
    return swift.get_model_processor(
        str(demo_assets.model_dir),
        model_type=demo_assets.model_type,
        device_map="cpu",
        attn_impl="sdpa",
    )


def test_loads_offline(demo_assets: DemoAssets, no_network: list[str]) -> None:
    model, tokenizer = swift.get_model_processor(
        str(demo_assets.model_dir), model_type=demo_assets.model_type, device_map="cpu", attn_impl="sdpa"
    )
    assert no_network == []
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert model.dtype == torch.float32
    coord_ids = get_coord_token_ids(tokenizer)
    assert max(coord_ids) < model.config.vocab_size


def test_coord_tokens_single_in_labels(
    demo_assets: DemoAssets, loaded: tuple[Any, Any], read_jsonl: Callable[[Path], list[dict[str, Any]]]
) -> None:
    model, tokenizer = loaded
    template = swift.get_template(tokenizer, template_type=demo_assets.template_type, max_length=2048)
    template.set_mode("train")
    coord_ids = get_coord_token_ids(tokenizer)
    rows = [row for path in demo_assets.train_files for row in read_jsonl(path)[:8]]
    for row in rows:
        encoded = template.encode(row, return_length=True)
        supervised = [t for t in encoded["labels"] if t != -100]
        answer = row["messages"][1]["content"]
        expected = [coord_ids[int(k)] for k in _COORD_RE.findall(answer)]
        # Every coord string became exactly one supervised token, in order, and nothing else is one.
        assert [t for t in supervised if t in set(coord_ids)] == expected
        # The supervised text is the answer plus the template's end of turn (no <think> block).
        assert tokenizer.decode(supervised) == answer + tokenizer.eos_token + "\n"
        assert encoded["length"] == len(encoded["input_ids"])
    # One forward pass: the logits cover the whole vocabulary, coord rows included.
    with torch.no_grad():
        out = model(input_ids=torch.tensor([encoded["input_ids"]]))
    assert out.logits.shape[-1] == len(tokenizer)
