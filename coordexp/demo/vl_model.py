"""A tiny random-init Qwen3-VL checkpoint (tokenizer, processor, weights), built offline.

ms-swift's Qwen3-VL template looks the media pad tokens up by fixed ids (``<|image_pad|>`` 151655,
``<|video_pad|>`` 151656), and the model config names the vision start/end ids too. So the
tokenizer keeps Qwen's id layout: the small BPE trained by :mod:`coordexp.demo.tokenizer` fills the
first ids, unreachable placeholder entries (no merge produces them) fill the rest of the 151,643
regular ids, then come Qwen's special tokens in Qwen's order, then the 1000 coord tokens. The
vocabulary is therefore ~152.7k even though the model is tiny (hidden 64): the same logits width
as the real checkpoints.

The folder written here is a complete local checkpoint: ``get_model_processor(dir,
model_type="qwen3_vl")`` loads it without any hub access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, models
from transformers import PreTrainedTokenizerFast

from coordexp.demo.model import save_seeded_model
from coordexp.demo.tokenizer import BPE_VOCAB_SIZE, add_coord_tokens, train_bpe

__all__ = [
    "IMAGE_PATCH",
    "IMAGE_TOKEN_ID",
    "QWEN_SPECIAL_TOKENS",
    "REGULAR_VOCAB",
    "build_vl_model",
    "build_vl_processor",
    "build_vl_tokenizer",
]

# Qwen2/3 tokenizers: 151,643 regular (BPE) ids, then these specials with consecutive ids.
REGULAR_VOCAB = 151_643
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
# Tokens that stay in decoded text (Qwen marks these non-special).
_NON_SPECIAL = frozenset(
    {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
)
IMAGE_TOKEN_ID = REGULAR_VOCAB + QWEN_SPECIAL_TOKENS.index("<|image_pad|>")  # 151655, as ms-swift expects
# Vision tower geometry: 16-pixel patches merged 2x2, so a 64x64 image is 4 tokens.
IMAGE_PATCH = 16
SPATIAL_MERGE = 2

# A Qwen3-VL style chat template: images of a user turn become the vision block.
VL_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _qwen_layout_backend(seed: int) -> Tokenizer:
    """The demo BPE padded with unreachable entries to Qwen's 151,643 regular ids."""
    trained = json.loads(train_bpe(seed, special_tokens=()).to_str())
    vocab: dict[str, int] = dict(trained["model"]["vocab"])
    merges: list[tuple[str, str]] = []
    for merge in trained["model"]["merges"]:  # "a b" strings or [a, b] pairs, by tokenizers version
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merges.append((left, right))
    if len(vocab) > REGULAR_VOCAB or len(vocab) > BPE_VOCAB_SIZE:
        raise AssertionError(f"unexpected BPE size {len(vocab)}")
    # No merge produces these strings, so the tokenizer never emits them: they only hold ids.
    for i in range(len(vocab), REGULAR_VOCAB):
        vocab[f"<|unused_{i}|>"] = i
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    src = Tokenizer.from_str(json.dumps(trained))
    backend.pre_tokenizer = src.pre_tokenizer
    backend.decoder = src.decoder
    backend.post_processor = src.post_processor
    backend.add_special_tokens(
        [AddedToken(t, special=t not in _NON_SPECIAL, normalized=False) for t in QWEN_SPECIAL_TOKENS]
    )
    add_coord_tokens(backend)
    return backend


def build_vl_tokenizer(save_dir: str | Path | None = None, *, seed: int = 0) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_qwen_layout_backend(seed),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    if tok.convert_tokens_to_ids("<|image_pad|>") != IMAGE_TOKEN_ID:
        raise AssertionError("the image pad token must sit at Qwen's id")
    tok.chat_template = VL_CHAT_TEMPLATE
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(save_dir))
    return tok


def build_vl_processor(save_dir: str | Path, tokenizer: PreTrainedTokenizerFast) -> Any:
    """Image processor (16-pixel patches, 2x2 merge, mean/std 0.5) + video processor + tokenizer."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    norm: dict[str, Any] = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    image = Qwen2VLImageProcessor(
        patch_size=IMAGE_PATCH,
        merge_size=SPATIAL_MERGE,
        temporal_patch_size=2,
        min_pixels=(IMAGE_PATCH * SPATIAL_MERGE) ** 2,
        max_pixels=256 * 256,
        **norm,
    )
    video = Qwen3VLVideoProcessor(
        patch_size=IMAGE_PATCH, merge_size=SPATIAL_MERGE, temporal_patch_size=2, **norm
    )
    processor = Qwen3VLProcessor(
        image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=VL_CHAT_TEMPLATE
    )
    processor.save_pretrained(str(save_dir))
    return processor


def build_vl_config(tokenizer: PreTrainedTokenizerFast, *, hidden_size: int = 64, num_layers: int = 2) -> Any:
    from transformers import Qwen3VLConfig

    ids = {t: REGULAR_VOCAB + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    head_dim = 16
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": hidden_size // head_dim,
        "num_key_value_heads": max(1, hidden_size // head_dim // 2),
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        # 3-D rope over (t, h, w): the sections sum to head_dim / 2.
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "bos_token_id": None,
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    vision = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": IMAGE_PATCH,
        "spatial_merge_size": SPATIAL_MERGE,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden_size,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # Untied: the coord rows of the head train independently of the input embeddings.
        tie_word_embeddings=False,
        architectures=["Qwen3VLForConditionalGeneration"],
        dtype="float32",
    )


def build_vl_model(save_dir: str | Path, tokenizer: PreTrainedTokenizerFast, *, seed: int = 0) -> Any:
    """A seeded random-init ``Qwen3VLForConditionalGeneration`` saved into ``save_dir`` (the
    tokenizer's folder); the caller's torch RNG is left untouched."""
    from transformers import Qwen3VLForConditionalGeneration

    return save_seeded_model(
        Qwen3VLForConditionalGeneration, build_vl_config(tokenizer), tokenizer, save_dir, seed=seed
    )
