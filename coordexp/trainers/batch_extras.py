"""Batch-extras keys and accessors at their old import path (a facade over the generated module)."""

from coordexp.generated.batch_extras import (
    BATCH_EXTRAS_KEYS,
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
    BatchExtras,
    get_stashed_batch_extras,
    maybe_pop_and_stash_batch_extras,
    pop_and_stash_batch_extras,
    pop_batch_extras,
)

__all__ = [
    "BATCH_EXTRAS_KEYS",
    "DATASET_LABELS_KEY",
    "DATASET_SEGMENTS_KEY",
    "INSTABILITY_META_JSON_KEY",
    "PACK_NUM_SAMPLES_KEY",
    "TOKEN_TYPES_KEY",
    "BatchExtras",
    "get_stashed_batch_extras",
    "maybe_pop_and_stash_batch_extras",
    "pop_and_stash_batch_extras",
    "pop_batch_extras",
]
