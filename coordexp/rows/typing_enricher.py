"""The ``token_types`` enricher: per-position GT types aligned to ``labels`` (see ``token_types``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from coordexp.rows.enrichers import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    Rows,
    group_rows,
    sample_labels,
    sample_where,
)
from coordexp.rows.fields import (
    ANSWER_FORMAT_KEY,
    ANSWER_TEXTS_KEY,
    PAYLOAD_FIELD,
    Sample,
    sample_dataset_label,
    sample_fields,
)
from coordexp.rows.token_types import (
    compute_packed_token_types,
    dataset_included,
    ignore_types,
    resolve_suffix_ids,
    tail_special_ids,
    typing_outcome,
)
from coordexp.run_folder.names import UNTYPED_ROWS_FILE

logger = logging.getLogger("coordexp.data_collators.enrichers")  # where these warnings always came from


class TokenTypesEnricher:
    """token_types: per-position GT types aligned to ``labels`` (see ``token_types``)."""

    name = "token_types"
    emits = frozenset({TOKEN_TYPES_KEY})
    optional = True

    def __init__(
        self,
        template: Any,
        include: Iterable[str] = DEFAULT_INCLUDE,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
    ) -> None:
        self.template = template
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._suffix: list[int] | None = None
        self._specials: frozenset[int] | None = None
        self._warned = WarnOnce()

    @property
    def tokenizer(self) -> Any:
        return self.template.tokenizer

    def _lazy_init(self) -> tuple[list[int], frozenset[int]]:
        # Resolved on first use: the template's tokenizer is final by then, and each costs a
        # tokenizer round trip we do not want per sample.
        if self._suffix is None or self._specials is None:
            self._suffix = resolve_suffix_ids(self.template)
            self._specials = tail_special_ids(self.tokenizer)
        return self._suffix, self._specials

    def sample_types(
        self, sample: Sample, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Types for one sample's labels; IGNORE when excluded, without answer text or payload, or
        when they cannot be derived (warned once, naming the row's file:line)."""
        fields = sample_fields(sample)
        texts, payload = sample.get(ANSWER_TEXTS_KEY), fields.get(PAYLOAD_FIELD)
        if (texts is None and payload is None) or not dataset_included(
            sample_dataset_label(sample), self.include, self.exclude
        ):
            return ignore_types(labels.numel(), device=labels.device)
        suffix, specials = self._lazy_init()
        types, problem = typing_outcome(
            tokenizer=self.tokenizer,
            labels=labels,
            answer_texts=texts,
            answer_format=sample.get(ANSWER_FORMAT_KEY) or "auto",
            payload=payload,
            attention_mask=attention_mask,
            suffix_tokens=suffix,
            special_ids=specials,
        )
        if types is None:
            self._warn_untyped(sample, problem)
            return ignore_types(labels.numel(), device=labels.device)
        return types

    def _warn_untyped(self, sample: Sample, problem: str | None) -> None:
        if problem == "nothing supervised":  # e.g. a sample cut away entirely: nothing to type
            return
        where = sample_where(sample)
        self._warned.log(
            "untyped_row",
            logger,
            "token types: %s gets no token types (%s), so its tokens are IGNORE for the token-type "
            "metrics; further such rows are not warned about (the loader lists the rows it cannot "
            "type in %s)",
            where,
            problem,
            UNTYPED_ROWS_FILE,
        )

    def _check_payloads_reach_us(self, rows: Rows) -> None:
        # The usual misconfiguration: swift dropped the row's extra fields. Say so once, since the
        # only symptom would be rows that are silently all IGNORE.
        if self._warned.seen("no_payload"):
            return
        if any(PAYLOAD_FIELD in sample_fields(s) or ANSWER_TEXTS_KEY in s for row in rows for s in row):
            return
        self._warned.log(
            "no_payload",
            logger,
            "token types: no sample carries its answer text (%r, set by coordexp's loader) or %r, so "
            "every row is IGNORE; keep the source fields with remove_unused_columns=False "
            "(template / swift CLI)",
            ANSWER_TEXTS_KEY,
            PAYLOAD_FIELD,
        )

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        labels = batch.get("labels")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 2:
            return  # nothing supervised to type (e.g. an inference batch): skip quietly
        out = torch.full_like(labels, -1, dtype=torch.int64)
        rows = group_rows(batch, raw)
        if rows is None:
            batch[TOKEN_TYPES_KEY] = out  # rows unknown: all IGNORE means "no types"
            return
        self._check_payloads_reach_us(rows)
        mask = batch.get("attention_mask")
        mask = mask if isinstance(mask, torch.Tensor) and mask.shape == labels.shape else None
        for i, row in enumerate(rows):
            if len(row) == 1:
                # One sample per row: type the collated row itself, whatever the padding side.
                out[i] = self.sample_types(row[0], labels[i], None if mask is None else mask[i])
            else:
                parts = [self.sample_types(s, sample_labels(s)) for s in row]
                out[i] = compute_packed_token_types(parts, labels.shape[-1]).to(labels.device)
        batch[TOKEN_TYPES_KEY] = out


__all__ = ["TokenTypesEnricher"]
