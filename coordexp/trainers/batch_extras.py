"""Batch-extras keys and accessors at their old import path (a facade over the contract modules:
the generated key constants and the runtime helpers of ``coordexp.contracts.stash``)."""

from coordexp.contracts.stash import (
    BatchExtras,
    get_stashed_batch_extras,
    maybe_pop_and_stash_batch_extras,
    pop_and_stash_batch_extras,
    pop_batch_extras,
)
from coordexp.generated.batch_extras import (
    BATCH_EXTRAS_KEYS,
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
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
