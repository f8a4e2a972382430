"""The box extras ``box_slots`` / ``box_pairs``: which supervised positions are a box's coordinates.

A sample's boxes are read from the assistant answer text its labels were made from, by the one answer
parser (:func:`coordexp.answers.parse_answer`, ``data.answer_format``: JSON or CoordJSON), never by
counting coord tokens: each ``bbox_2d`` object gives its four coordinate tokens (x1, y1, x2, y2 as
written, ``BoxSlot``) and its link to the previous object of the same answer (``BoxPair``, by
normalised desc; :func:`coordexp.functional.adjacent_repulsion.object_links`). A ``poly`` is no box, so
a dataset may mix both. The text is tokenised like the template does (no special tokens, with
offsets); a coordinate's token is the one holding its first character. The codes are used only when
the token ids equal the supervised label ids (plus the end-of-turn suffix and at most
``MAX_SPECIAL_TAIL`` special tokens), exactly as token types are; otherwise every supervised position
of the sample is ``UNREAD`` and the pass drops its row from the box terms (counted in the
``skipped_incomplete_*`` keys, as the reference drops a truncated row). A sample without answer text
(not loaded by coordexp's loader) is read from its ``assistant_payload`` re-serialised.

Several assistant turns: each turn is its own answer (pairs never cross turns); joined with the suffix,
or the last turn alone, as for token types.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import torch

from coordexp.answers import AnswerFormat, AnswerObject, parse_answer, slot_token_groups
from coordexp.coord_tokens.payload import typed_serialization
from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.functional.adjacent_repulsion import object_links
from coordexp.generated.batch_extras import BOX_PAIRS_KEY, BOX_SLOTS_KEY, IGNORE_INDEX, BoxPair, BoxSlot
from coordexp.rows.enrichers import group_rows, sample_labels, sample_where
from coordexp.rows.fields import (
    ANSWER_FORMAT_KEY,
    ANSWER_TEXTS_KEY,
    PAYLOAD_FIELD,
    Sample,
    sample_fields,
)
from coordexp.rows.token_types import (
    NOT_ALIGNED,
    align_supervised,
    as_payload,
    drop_none,
    resolve_suffix_ids,
    tail_special_ids,
)

__all__ = ["BoxSlotsEnricher", "answer_box_codes", "sample_box_codes"]

logger = logging.getLogger("coordexp.data_collators.enrichers")

_NONE_SLOT, _UNREAD = int(BoxSlot.NONE), int(BoxSlot.UNREAD)
_NONE_LINK = int(BoxPair.NONE)
BOX_KIND = "bbox_2d"

Codes = tuple[list[int], list[int], list[int]]
"""token ids, slot code and link code per token"""


def _box_slots(obj: AnswerObject) -> tuple[Any, ...] | None:
    """The four slots of the object's ``bbox_2d`` geometry (None: no complete box)."""
    for geometry in obj.geometries:
        if geometry.kind == BOX_KIND and len(geometry.slots) == 4 and None not in geometry.bins:
            return geometry.slots
    return None


def answer_box_codes(
    tokenizer: Any, text: str, answer_format: AnswerFormat = "auto"
) -> tuple[Codes | None, str | None]:
    """``((ids, slots, links), None)`` for one answer text, or ``(None, why)`` when it cannot be read."""
    parsed = parse_answer(text, answer_format)
    if not parsed.typed:
        return None, f"not a readable answer: {parsed.problem}"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    boxes = [_box_slots(o) for o in parsed.objects]
    links = object_links([(o.desc, b is not None) for o, b in zip(parsed.objects, boxes, strict=True)])
    slot_codes, link_codes = [_NONE_SLOT] * len(ids), [_NONE_LINK] * len(ids)
    for box, link in zip(boxes, links, strict=True):
        if box is None:
            continue
        (tokens,) = slot_token_groups([box], offsets)
        if len(set(tokens)) != 4:
            return None, "two coordinates of a box share one token"
        for slot, token in enumerate(tokens):
            slot_codes[token], link_codes[token] = slot, link
    return (ids, slot_codes, link_codes), None


def _candidates(
    tokenizer: Any, texts: Sequence[str], answer_format: AnswerFormat, suffix: list[int]
) -> tuple[list[Codes], str | None]:
    """Codes to try against the labels: all turns joined by the suffix, then the last turn alone."""
    turns = [answer_box_codes(tokenizer, t, answer_format) for t in texts]
    problem = next((why for codes, why in turns if codes is None), None)
    read = [codes for codes, _ in turns if codes is not None]
    out: list[Codes] = []
    if read and len(read) == len(turns):
        ids: list[int] = []
        slots: list[int] = []
        links: list[int] = []
        for i, (t_ids, t_slots, t_links) in enumerate(read):
            tail = suffix if i < len(read) - 1 else []
            ids += t_ids + tail
            slots += t_slots + [_NONE_SLOT] * len(tail)
            links += t_links + [_NONE_LINK] * len(tail)
        out.append((ids, slots, links))
    if turns and turns[-1][0] is not None and len(turns) > 1:
        last = turns[-1][0]
        assert last is not None
        out.append(last)
    return out, problem


def sample_box_codes(
    *,
    tokenizer: Any,
    labels: torch.Tensor,
    alternatives: Sequence[Sequence[str]],
    answer_format: AnswerFormat = "auto",
    attention_mask: torch.Tensor | None = None,
    suffix: list[int],
    specials: Collection[int],
) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """``(box_slots, box_pairs, why unread or None)`` aligned to one sample's 1-D ``labels``, from the
    first of ``alternatives`` (each: the sample's assistant turns) whose tokens are the labels'."""
    labels = labels.reshape(-1)
    supervised = labels != IGNORE_INDEX
    if attention_mask is not None:
        supervised &= attention_mask.reshape(-1).to(labels.device) != 0
    slots = torch.full_like(labels, _NONE_SLOT, dtype=torch.int64)
    links = torch.full_like(labels, _NONE_LINK, dtype=torch.int64)
    if not bool(supervised.any()):
        return slots, links, None
    candidates: list[Codes] = []
    problem: str | None = None if alternatives else "no answer text and no usable assistant_payload"
    for texts in alternatives:
        found, why = _candidates(tokenizer, texts, answer_format, suffix)
        candidates += found
        problem = problem or why
    sup_ids = [int(i) for i in labels[supervised].tolist()]
    for ids, slot_codes, link_codes in candidates:
        aligned = align_supervised(sup_ids, ids, slot_codes, suffix, specials, fill=_NONE_SLOT)
        if aligned is not None:
            aligned_links = align_supervised(sup_ids, ids, link_codes, suffix, specials, fill=_NONE_LINK)
            assert aligned_links is not None  # the same ids align the same way
            slots[supervised] = torch.tensor(aligned, dtype=torch.int64, device=labels.device)
            links[supervised] = torch.tensor(aligned_links, dtype=torch.int64, device=labels.device)
            return slots, links, None
    slots[supervised] = _UNREAD
    return slots, links, problem or NOT_ALIGNED


def _sample_texts(sample: Sample) -> list[list[str]]:
    """Candidate answer texts of the sample: its answer texts, else its payload re-serialised (as
    stored, then without the None-valued keys an Arrow struct adds); empty: neither."""
    texts = sample.get(ANSWER_TEXTS_KEY)
    if texts is not None:
        return [[texts] if isinstance(texts, str) else [str(t) for t in texts]]
    base = as_payload(sample_fields(sample).get(PAYLOAD_FIELD))
    if base is None:
        return []
    out = []
    for payload in (base, drop_none(base)):
        try:
            text = [typed_serialization(payload)[0]]
        except (TypeError, ValueError):  # unserialisable payload: no candidate
            continue
        if text not in out:
            out.append(text)
    return out


class BoxSlotsEnricher:
    """box_slots, box_pairs: the answer parser's boxes, aligned to ``labels`` (see the module doc).

    Not optional: the box terms of the objective read them (a failure stops the step)."""

    name = "box_slots"
    emits = frozenset({BOX_SLOTS_KEY, BOX_PAIRS_KEY})
    optional = False

    def __init__(self, template: Any) -> None:
        self.template = template
        self._suffix: list[int] | None = None
        self._specials: frozenset[int] | None = None
        self._warned = WarnOnce()

    def _lazy_init(self) -> tuple[list[int], frozenset[int]]:
        if self._suffix is None or self._specials is None:
            self._suffix = resolve_suffix_ids(self.template)
            self._specials = tail_special_ids(self.template.tokenizer)
        return self._suffix, self._specials

    def sample_codes(
        self, sample: Sample, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        suffix, specials = self._lazy_init()
        slots, links, problem = sample_box_codes(
            tokenizer=self.template.tokenizer,
            labels=labels,
            alternatives=_sample_texts(sample),
            answer_format=sample.get(ANSWER_FORMAT_KEY) or "auto",
            attention_mask=attention_mask,
            suffix=suffix,
            specials=specials,
        )
        if problem is not None:  # the sample is unread (warned once)
            self._warned.log(
                "unread_boxes",
                logger,
                "box terms: %s gives no boxes (%s), so its batch row is left out of bbox_geo / "
                "bbox_size_aux / adjacent repulsion (counted in */skipped_incomplete_rows); further such "
                "rows are not warned about",
                sample_where(sample),
                problem,
            )
        return slots, links

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        labels = batch.get("labels")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 2:
            return  # nothing supervised (an inference batch): no boxes
        slots = torch.full_like(labels, _NONE_SLOT, dtype=torch.int64)
        links = torch.full_like(labels, _NONE_LINK, dtype=torch.int64)
        rows = group_rows(batch, raw)
        if rows is None:  # rows unknown: every supervised position is unread (no boxes, counted)
            slots[labels != IGNORE_INDEX] = _UNREAD
            batch[BOX_SLOTS_KEY], batch[BOX_PAIRS_KEY] = slots, links
            return
        mask = batch.get("attention_mask")
        mask = mask if isinstance(mask, torch.Tensor) and mask.shape == labels.shape else None
        for i, row in enumerate(rows):
            if len(row) == 1:
                slots[i], links[i] = self.sample_codes(row[0], labels[i], None if mask is None else mask[i])
                continue
            parts = [self.sample_codes(s, sample_labels(s)) for s in row]
            row_slots = torch.cat([p[0] for p in parts]) if parts else slots[i]
            if row_slots.numel() != labels.shape[-1]:
                slots[i] = torch.where(labels[i] != IGNORE_INDEX, _UNREAD, _NONE_SLOT)
                continue
            slots[i] = row_slots.to(labels.device)
            links[i] = torch.cat([p[1] for p in parts]).to(labels.device)
        batch[BOX_SLOTS_KEY], batch[BOX_PAIRS_KEY] = slots, links
