"""Fixtures: the real demo tokenizer (1000 coord tokens) and real ms-swift qwen3_nothinking templates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.coord_tokens.codec import coord_token
from coordexp.coord_tokens.payload import serialize_payload
from coordexp.demo.tokenizer import build_demo_tokenizer

torch.set_num_threads(1)

MAX_LENGTH = 512


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo tokenizer plus a tiny Qwen3 config, so swift's get_processor can load the folder offline."""
    from transformers import Qwen3Config

    out = tmp_path_factory.mktemp("demo_tok")
    tok = build_demo_tokenizer(out)
    Qwen3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        architectures=["Qwen3ForCausalLM"],
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from swift import get_processor

    return get_processor(str(tokenizer_dir), model_type="qwen3")


@pytest.fixture
def make_template(tokenizer: Any) -> Callable[..., Any]:
    """A fresh train-mode template; ``packing=True`` sets the flags swift's PackingDataset sets."""
    from swift import get_template

    def make(*, packing: bool = False, remove_unused_columns: bool = False) -> Any:
        template = get_template(
            tokenizer,
            template_type="qwen3_nothinking",
            max_length=MAX_LENGTH,
            remove_unused_columns=remove_unused_columns,
        )
        template.set_mode("train")
        if packing:
            template.packing = True
            template.padding_free = True
        return template

    return make


@pytest.fixture
def template(make_template: Callable[..., Any]) -> Any:
    return make_template()


def _make_payload(seed: int, n_objects: int = 2, *, poly: bool = False) -> dict[str, Any]:
    objs: list[dict[str, Any]] = []
    for i in range(n_objects):
        base = (seed * 97 + i * 131) % 900
        obj: dict[str, Any] = {
            "desc": ("red car", "crème brûlée", "bow tie")[(seed + i) % 3],
            "bbox_2d": [coord_token(base + d) for d in (0, 7, 50, 99)],
        }
        if poly:
            obj["poly"] = [coord_token(base + d) for d in (1, 2, 30, 4, 60, 80)]  # flat: written as pairs
        objs.append(obj)
    return {"objects": objs}


def _make_row(seed: int, dataset: str = "lvis", **extra: Any) -> dict[str, Any]:
    payload = _make_payload(seed, n_objects=1 + seed % 3, poly=seed % 2 == 1)
    return {
        "messages": [
            {"role": "user", "content": f"Detect objects in scene {seed}."},
            {"role": "assistant", "content": serialize_payload(payload)},
        ],
        "assistant_payload": payload,
        "dataset": dataset,
        "base_idx": seed,
        "sample_id": f"{dataset}-{seed:04d}",
        **extra,
    }


@pytest.fixture
def make_row() -> Callable[..., dict[str, Any]]:
    """``make_row(seed, dataset="lvis", **extra)``: a chat row with its payload and source meta."""
    return _make_row


@pytest.fixture
def encode(template: Any) -> Callable[..., dict[str, Any]]:
    def enc(row: dict[str, Any], tpl: Any = None) -> dict[str, Any]:
        encoded: dict[str, Any] = (tpl or template).encode(row, return_length=True)
        return encoded

    return enc
