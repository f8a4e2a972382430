"""The fields a data row carries and THE dataset-label rule, said once.

A row's fields reach an encoded sample through ms-swift (``_extra_kwargs`` with
``remove_unused_columns=False``, or top-level keys); the loader adds its own top-level keys (where the
row came from, its answer texts); :func:`sample_dataset_label` is the one rule every reader of a
row's label (metrics, token types, dumps, ``check-logs``, the guards' bucket check) goes through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "ANSWER_FORMAT_KEY",
    "ANSWER_TEXTS_KEY",
    "CARRIED_FIELDS",
    "DEFAULT_LABEL",
    "EXTRA_KWARGS_KEY",
    "GENERIC_LABELS",
    "META_FIELDS",
    "MIXED_LABEL",
    "PAYLOAD_FIELD",
    "SOURCE_FILE_KEY",
    "SOURCE_LINE_KEY",
    "Sample",
    "dataset_included",
    "is_source_line",
    "row_label",
    "sample_dataset_label",
    "sample_fields",
]

Sample = Mapping[str, Any]

DEFAULT_LABEL: Final = "default"
MIXED_LABEL: Final = "mixed"
# Labels that name no dataset (a metric key containing one is no per-dataset bucket).
GENERIC_LABELS: Final = frozenset({"", DEFAULT_LABEL, MIXED_LABEL})
EXTRA_KWARGS_KEY: Final = "_extra_kwargs"  # where ms-swift's Template.encode keeps the row's extra columns
PAYLOAD_FIELD: Final = "assistant_payload"
# Source-row fields the loader carries onto the encoded row for the metrics collator (in this
# order); the collator keeps them away from the model inputs.
CARRIED_FIELDS: Final = (PAYLOAD_FIELD, "dataset", "dataset_name", "metadata", "base_idx", "sample_id")
META_FIELDS: Final = frozenset(CARRIED_FIELDS)

# Where the row came from: its file and 1-based line, put on the encoded sample by the loader
# (coordexp.rows.data) as top-level keys no row field can shadow, for instability dumps.
SOURCE_FILE_KEY: Final = "coordexp_source_file"
SOURCE_LINE_KEY: Final = "coordexp_source_line"
# The row's assistant answer texts (one per assistant turn; multimodal content: its text parts
# joined) and the data.answer_format to read them with, put there by the loader: token types are
# derived from the text the labels were made from. Top-level keys, never model inputs.
ANSWER_TEXTS_KEY: Final = "coordexp_answer_texts"
ANSWER_FORMAT_KEY: Final = "coordexp_answer_format"


def sample_fields(sample: Sample) -> Mapping[str, Any]:
    """The source row's extra fields of an encoded sample (``_extra_kwargs`` over top-level keys)."""
    extra = sample.get(EXTRA_KWARGS_KEY)
    if isinstance(extra, Mapping):
        return {**sample, **extra}
    return sample


def _text(value: Any) -> str | None:
    """A usable label: non-empty text (other non-None values are stringified), else None."""
    if isinstance(value, str):
        return value or None
    return None if value is None else str(value)


def sample_dataset_label(sample: Sample) -> str:
    """metadata._fusion_source, else metadata.dataset, else dataset, else dataset_name, else 'default'.

    THE label of a row, as written (case kept), for an encoded sample or a source JSONL row alike:
    every reader of a row's label (metrics, token types, dumps, ``check-logs``) calls this.
    """
    fields = sample_fields(sample)
    meta = fields.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    for value in (
        meta.get("_fusion_source"),
        meta.get("dataset"),
        fields.get("dataset"),
        fields.get("dataset_name"),
    ):
        label = _text(value)
        if label is not None:
            return label
    return DEFAULT_LABEL


def is_source_line(value: object) -> bool:
    """A usable SOURCE_LINE_KEY value: a 1-based int."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def row_label(labels: Sequence[str]) -> str:
    """A packed row's label: the shared label of its samples, else 'mixed' ('default' when empty)."""
    unique = set(labels)
    if not unique:
        return DEFAULT_LABEL
    return labels[0] if len(unique) == 1 else MIXED_LABEL


def dataset_included(label: str, include: Iterable[str], exclude: Iterable[str] = ()) -> bool:
    """Whether samples of ``label`` get token types: lower-cased label in include and not in exclude.

    The lists are lower-cased too, so a config spelling ``LVIS`` still matches.
    """
    key = str(label).lower()
    return key in {str(x).lower() for x in include} and key not in {str(x).lower() for x in exclude}
