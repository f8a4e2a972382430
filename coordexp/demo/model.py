"""A tiny random-init Qwen3 causal LM saved next to the demo tokenizer.

The folder written here (tokenizer files + ``config.json`` + weights) is a complete local
checkpoint: ms-swift's ``get_model_processor(dir, model_type='qwen3', ...)`` loads it without any
hub access, which is what the offline demo training run and the tests rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

__all__ = ["build_demo_config", "build_demo_model", "save_seeded_model"]

ModelT = TypeVar("ModelT", bound=PreTrainedModel)


def build_demo_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    vocab_size: int | None = None,
) -> Qwen3Config:
    """Config of the demo model; the vocabulary is the tokenizer's (coord tokens included), or
    ``vocab_size`` rows when given: a larger embedding, as real checkpoints pad theirs (the extra ids are
    never produced by the tokenizer; benchmarks use it for a realistic logits width)."""
    vocab = len(tokenizer) if vocab_size is None else vocab_size
    if vocab < len(tokenizer):
        raise ValueError(f"vocab_size={vocab} is below the tokenizer's {len(tokenizer)} tokens")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
    return Qwen3Config(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        # Untied head: the coord rows of the output layer then train independently of the input
        # embeddings, as in the real Qwen3 checkpoints this demo stands in for.
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["Qwen3ForCausalLM"],
        # Stored in config.json; ms-swift reads it to pick the load dtype (fp32 on CPU).
        dtype="float32",
    )


def build_demo_model(
    save_dir: str | Path, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **sizes: Any
) -> Qwen3ForCausalLM:
    """Build a seeded random-init ``Qwen3ForCausalLM`` and save it into ``save_dir``; ``sizes`` are
    :func:`build_demo_config`'s keywords (hidden size, layers, heads, vocab, ...).

    ``save_dir`` should be the folder the tokenizer was saved to, so that one folder is the whole
    checkpoint. The weights depend only on ``seed`` and the sizes; the caller's global torch RNG is
    left untouched (``fork_rng``) so building assets never shifts the seed of a later training run.
    """
    config = build_demo_config(tokenizer, **sizes)
    return save_seeded_model(Qwen3ForCausalLM, config, tokenizer, save_dir, seed=seed)


def save_seeded_model(
    model_cls: Callable[[Any], ModelT],
    config: Any,
    tokenizer: PreTrainedTokenizerBase,
    save_dir: str | Path,
    *,
    seed: int,
) -> ModelT:
    """``model_cls(config)`` with weights from ``seed`` alone (the caller's torch RNG untouched),
    generation ids from the tokenizer, saved into ``save_dir``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    # The tokenizer has no bos; generation stops on the chat template's end-of-turn token.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_dir)
    return model
