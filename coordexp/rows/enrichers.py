"""Batch enrichers: small objects that add diagnostics extras to a collated batch.

Each enricher declares the extras keys it writes (``emits``) and whether it is ``optional``
(best-effort: the collator drops its output and warns once when it fails). An enricher gets the
collated ``batch`` (a dict of tensors from the base collator) and ``raw``, the list the base
collator was given: sample dicts (padded / padding-free) or packs, i.e. lists of sample dicts.

How the source row's fields reach a sample dict: see ``coordexp.rows.collator``;
``sample_fields`` reads them from the encoded sample's ``_extra_kwargs`` (ms-swift with
``remove_unused_columns=False``) or from its top-level keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import torch

from coordexp.generated.batch_extras import (
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
)
from coordexp.generated.models.config import InstabilityMonitorConfig, TokenTypeMetricsConfig
from coordexp.rows.fields import (
    DEFAULT_LABEL,
    SOURCE_FILE_KEY,
    SOURCE_LINE_KEY,
    Sample,
    is_source_line,
    row_label,
    sample_dataset_label,
    sample_fields,
)

logger = logging.getLogger("coordexp.data_collators.enrichers")  # the name users configure

# The enrichers' settings default to the schema's defaults of the sections that turn them on
# (custom.instability_monitor, custom.token_type_metrics), read from the generated models.
MONITOR_DEFAULTS: Final = InstabilityMonitorConfig()
TOKEN_TYPE_DEFAULTS: Final = TokenTypeMetricsConfig()
DEFAULT_MAX_META_SAMPLES: Final[int] = MONITOR_DEFAULTS.max_meta_samples
DEFAULT_INCLUDE: Final[tuple[str, ...]] = TOKEN_TYPE_DEFAULTS.include
DEFAULT_EXCLUDE: Final[tuple[str, ...]] = TOKEN_TYPE_DEFAULTS.exclude
Rows = list[list[Sample]]


@runtime_checkable
class Enricher(Protocol):
    """Adds extras to a collated batch in place; writes only the keys in ``emits``."""

    name: str
    emits: frozenset[str]
    optional: bool

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None: ...


# ---------------------------------------------------------------- sample and row helpers


def sample_labels(sample: Sample) -> torch.Tensor:
    """The sample's own 1-D labels (empty when it has none): a packed row's part, before collation."""
    labels = sample.get("labels")
    return torch.as_tensor([] if labels is None else labels, dtype=torch.int64).reshape(-1)


def sample_where(sample: Sample) -> str:
    """``file:line`` of the row the sample was loaded from, for a warning that names it."""
    source_file, source_line = sample.get(SOURCE_FILE_KEY), sample.get(SOURCE_LINE_KEY)
    return f"{source_file}:{source_line}" if is_source_line(source_line) else "a row without file:line"


def sample_length(sample: Sample) -> int:
    """The encoded length: ``length`` when the sample has it, else the length of its ids."""
    length = sample.get("length")
    if isinstance(length, int) and not isinstance(length, bool):
        return length
    for key in ("input_ids", "labels"):
        seq = sample.get(key)
        if seq is not None:
            return len(seq)
    return 0


def batch_num_rows(batch: Mapping[str, Any]) -> int | None:
    for key in ("labels", "input_ids", "attention_mask", "position_ids"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            # mrope position_ids are [3, batch, seq]; the first three keys are [batch, seq].
            return int(value.shape[1] if key == "position_ids" and value.dim() == 3 else value.shape[0])
    return None


def group_rows(batch: Mapping[str, Any], raw: Sequence[Any]) -> Rows | None:
    """The source samples of each collated row, or None when the rows cannot be matched.

    Groups are the packs (packed) or single samples (padded); when the base collator joined them into
    one row (padding-free, or several packs in one batch) all samples form that row, in order.
    """
    groups: Rows = [list(item) if isinstance(item, list | tuple) else [item] for item in raw]
    n_rows = batch_num_rows(batch)
    if n_rows is None or n_rows == len(groups):
        return groups
    if n_rows == 1:
        return [[s for g in groups for s in g]]
    return None


def labels_device(batch: Mapping[str, Any]) -> torch.device:
    for key in ("labels", "input_ids"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def dataset_segments(batch: Mapping[str, Any], n_rows: int) -> list[int]:
    """attention_mask row sums, else the padded length per row, else 0."""
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return [int(v) for v in mask.sum(dim=-1).tolist()]
    ids = batch.get("input_ids")
    if isinstance(ids, torch.Tensor) and ids.dim() >= 1:
        return [int(ids.shape[-1])] * n_rows
    return [0] * n_rows


def _restart_counts(batch: Mapping[str, Any], n_rows: int) -> list[int]:
    """Samples per row from position_ids restarts (fallback when raw rows cannot be matched)."""
    pos = batch.get("position_ids")
    if isinstance(pos, torch.Tensor) and pos.dim() == 2 and pos.shape[0] == n_rows:
        return [max(1, int(v)) for v in (pos == 0).sum(dim=-1).tolist()]
    return [1] * n_rows


# ---------------------------------------------------------------- enrichers


class DatasetMetaEnricher:
    """dataset_labels, dataset_segments, pack_num_samples: attached to every batch."""

    name = "dataset_meta"
    emits = frozenset({DATASET_LABELS_KEY, DATASET_SEGMENTS_KEY, PACK_NUM_SAMPLES_KEY})
    optional = False

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        rows = group_rows(batch, raw)
        n_rows = batch_num_rows(batch)
        n_rows = len(rows) if n_rows is None and rows is not None else (n_rows or 0)
        if rows is not None:
            labels = [row_label([sample_dataset_label(s) for s in row]) for row in rows]
            counts = [len(row) for row in rows]
        else:  # rows not matchable (an unusual base collator): no labels, count restarts
            labels = [DEFAULT_LABEL] * n_rows
            counts = _restart_counts(batch, n_rows)
        batch[DATASET_LABELS_KEY] = labels
        batch[DATASET_SEGMENTS_KEY] = dataset_segments(batch, n_rows)
        batch[PACK_NUM_SAMPLES_KEY] = torch.tensor(counts, dtype=torch.int64, device=labels_device(batch))


class InstabilityMetaEnricher:
    """instability_meta_json: the source samples of each row, for instability dumps."""

    name = "instability_meta"
    emits = frozenset({INSTABILITY_META_JSON_KEY})
    optional = True

    def __init__(self, max_meta_samples: int = DEFAULT_MAX_META_SAMPLES) -> None:
        if max_meta_samples < 0:
            raise ValueError(f"max_meta_samples must be >= 0, got {max_meta_samples}")
        self.max_meta_samples = int(max_meta_samples)

    @staticmethod
    def _sample_meta(sample: Sample) -> dict[str, Any]:
        fields = sample_fields(sample)
        meta = fields.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        base_idx = fields.get("base_idx", meta.get("base_idx"))
        sample_id = fields.get("sample_id", meta.get("sample_id"))
        source_file, source_line = sample.get(SOURCE_FILE_KEY), sample.get(SOURCE_LINE_KEY)
        return {
            "dataset": sample_dataset_label(sample),
            # The schema allows int|None for base_idx and int|str|None for sample_id.
            "base_idx": base_idx if isinstance(base_idx, int) and not isinstance(base_idx, bool) else None,
            "sample_id": sample_id if isinstance(sample_id, int | str | None) else str(sample_id),
            "length": sample_length(sample),
            # Where the dump reader finds the row (None: not loaded by coordexp's loader).
            "source_file": source_file if isinstance(source_file, str) else None,
            "source_line": source_line if is_source_line(source_line) else None,
        }

    def row_meta(self, row: Sequence[Sample]) -> dict[str, Any]:
        return {
            "num_samples": len(row),
            "total_length": sum(sample_length(s) for s in row),
            "samples": [self._sample_meta(s) for s in row[: self.max_meta_samples]],
        }

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        rows = group_rows(batch, raw)
        if rows is None:
            raise ValueError(f"cannot match {len(raw)} raw items to {batch_num_rows(batch)} collated rows")
        entries = [self.row_meta(row) for row in rows]
        batch[INSTABILITY_META_JSON_KEY] = json.dumps(entries, sort_keys=True, ensure_ascii=True)


__all__ = [
    "DatasetMetaEnricher",
    "Enricher",
    "InstabilityMetaEnricher",
    "batch_num_rows",
    "group_rows",
    "sample_labels",
    "sample_where",
]
