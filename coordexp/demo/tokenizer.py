"""A small, deterministic, offline tokenizer for the demo model and the tests.

It is a ByteLevel BPE trained on synthetic JSON answers of the dataset's shape plus a few user
prompts, with Qwen's chat special tokens and the 1000 coord tokens ``<|coord_0|>`` ..
``<|coord_999|>`` added as *special* tokens with consecutive ids, so each coord stays one token in
``labels`` and ``get_coord_token_ids`` finds them. Nothing is downloaded.

Determinism: the corpus comes from ``random.Random(seed)`` and the BPE trainer is deterministic for
a fixed corpus, so the same seed gives byte-identical ``tokenizer.json``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from coordexp.coord_tokens.codec import COORD_BINS, coord_token

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, IM_START, IM_END)

# Vocab of the trained BPE part (chat specials included); the coord tokens come on top.
BPE_VOCAB_SIZE = 2048
NUM_SYNTHETIC_LINES = 600

# Qwen-style ChatML: ms-swift's qwen3_nothinking template builds prompts itself, but a tokenizer
# with a chat template keeps `apply_chat_template` usable for inference demos.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_COLORS = ("red", "blue", "green", "black", "white", "yellow", "gray", "brown", "orange", "silver")
_NOUNS = (
    "car",
    "person",
    "dog",
    "cat",
    "bicycle",
    "truck",
    "bus",
    "chair",
    "table",
    "tree",
    "cup",
    "bottle",
    "bird",
    "horse",
    "boat",
    "traffic light",
    "umbrella",
    "backpack",
    "laptop",
    "phone",
)
_PROMPTS = (
    "Detect all objects in the image and output their bounding boxes as JSON.",
    "Locate every object. Answer with a JSON object whose objects list has desc and bbox_2d.",
    "Find the objects in this picture and give their boxes in coord tokens.",
    "List the objects with descriptions and polygons.",
    "Output the bounding box of each visible object.",
)
_COORD_RE = re.compile(r"<\|coord_\d+\|>")


def _synthetic_object(rng: random.Random, use_tokens: bool) -> dict[str, object]:
    desc = f"{rng.choice(_COLORS)} {rng.choice(_NOUNS)}"
    x0, y0 = rng.randrange(0, 900), rng.randrange(0, 900)
    box = [x0, y0, rng.randrange(x0 + 1, 1000), rng.randrange(y0 + 1, 1000)]
    geom_key = "poly" if rng.random() < 0.2 else "bbox_2d"
    if geom_key == "bbox_2d":
        values: list[Any] = box
        if use_tokens:
            values = [coord_token(v) for v in box]
    else:
        values = [[rng.randrange(0, 1000), rng.randrange(0, 1000)] for _ in range(3)]
        if use_tokens:
            values = [[coord_token(v) for v in p] for p in values]
    return {"desc": desc, geom_key: values}


def _synthetic_corpus(seed: int) -> list[str]:
    """Answers and prompts; coord tokens are stripped because they are added tokens, not BPE words."""
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(NUM_SYNTHETIC_LINES):
        if i % 5 == 0:
            lines.append(rng.choice(_PROMPTS))
            continue
        objs = [_synthetic_object(rng, use_tokens=rng.random() < 0.7) for _ in range(rng.randint(1, 4))]
        text = json.dumps({"objects": objs}, ensure_ascii=False, separators=(", ", ": "))
        lines.append(_COORD_RE.sub("", text))
    return lines


def train_bpe(seed: int, special_tokens: tuple[str, ...] = CHAT_SPECIAL_TOKENS) -> Tokenizer:
    """The byte-level BPE part, trained on the synthetic corpus (deterministic for a seed)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets then cover whole tokens (leading spaces included), which the
    # per-character token typing relies on.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,  # always reach BPE_VOCAB_SIZE, so the vocab size does not depend on the seed
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_synthetic_corpus(seed), trainer=trainer)
    return backend


def add_coord_tokens(backend: Tokenizer) -> None:
    """The 1000 coord tokens as special tokens with consecutive ids after everything else."""
    coord = [AddedToken(coord_token(k), special=True, normalized=False) for k in range(COORD_BINS)]
    backend.add_special_tokens(coord)


def _train_backend(seed: int) -> Tokenizer:
    backend = train_bpe(seed)
    add_coord_tokens(backend)
    return backend


def build_demo_tokenizer(save_dir: str | Path | None = None, *, seed: int = 0) -> PreTrainedTokenizerFast:
    """Build the demo tokenizer (and ``save_pretrained`` it into ``save_dir`` when given)."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_backend(seed),
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        padding_side="right",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(save_dir))
    return tok


__all__ = [
    "CHAT_SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "IM_END",
    "IM_START",
    "PAD_TOKEN",
    "add_coord_tokens",
    "build_demo_tokenizer",
    "train_bpe",
]
