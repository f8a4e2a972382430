"""Per-position ground-truth token types (``token_types`` batch extra).

A sample's supervised tokens are typed from the assistant answer text the labels were made from:
the text is parsed (:func:`coordexp.answers.parse_answer`, ``data.answer_format``: JSON or
CoordJSON) into one type per character, tokenised like the template does (no special tokens, with
offsets) and every token gets the majority type of its characters. A sample without answer text
(not loaded by coordexp's loader) is typed from its ``assistant_payload`` re-serialised
(``typed_serialization``: today's writer's text, typed identically). The template's end-of-turn
suffix tokens are FORMAT. The result is used only when the token ids equal the supervised label ids
exactly (plus at most ``MAX_SPECIAL_TAIL`` extra supervised special tokens, typed FORMAT): a row is
never given wrong types, only none (all IGNORE); :func:`typing_outcome` says why.

Several assistant turns: every turn is typed and joined, each followed by the suffix; when that does
not match the labels (earlier turns unsupervised), the last turn alone is tried.

Majority tie rule: the lowest ``TokenType`` value wins (DESC < COORD < FORMAT), i.e. content beats
scaffolding. Byte-level BPE often merges a separator with content (``' "'`` before a description,
``' 4'`` in ``[3, 4]``); such a token is predicted for its content, so it is typed by it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from coordexp.answers import AnswerFormat, parse_answer
from coordexp.coord_tokens.codec import COORD_BINS, coord_token
from coordexp.coord_tokens.payload import TokenType, typed_serialization
from coordexp.generated.batch_extras import IGNORE_INDEX
from coordexp.rows.fields import dataset_included

MAX_SPECIAL_TAIL = 8
_FORMAT = int(TokenType.FORMAT)

__all__ = [
    "MAX_SPECIAL_TAIL",
    "TokenType",
    "align_supervised",
    "as_payload",
    "compute_packed_token_types",
    "compute_token_types",
    "dataset_included",
    "drop_none",
    "ignore_types",
    "resolve_suffix_ids",
    "suffix_token_ids",
    "tail_special_ids",
    "text_token_ids",
    "typed_token_ids",
    "typing_outcome",
]


def ignore_types(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    return torch.full((length,), int(TokenType.IGNORE), dtype=torch.int64, device=device)


def _majority(char_types: Sequence[int], start: int, end: int) -> int:
    window = char_types[start:end]
    if not window:
        return _FORMAT  # a token with no characters of its own (should not happen with offsets on)
    counts: dict[int, int] = {}
    for t in window:
        counts[t] = counts.get(t, 0) + 1
    best = max(counts.values())
    return min(t for t, c in counts.items() if c == best)


def typed_token_ids(tokenizer: Any, payload: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """Token ids of the payload's answer text and one type per token (majority of its characters)."""
    return text_token_ids(tokenizer, *typed_serialization(payload))


def text_token_ids(tokenizer: Any, text: str, char_types: Sequence[int]) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` (no special tokens) and one type per token (majority of its characters)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    types = [_majority(char_types, int(s), int(e)) for s, e in enc["offset_mapping"]]
    return ids, types


def tail_special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids that may form the supervised tail: named specials (eos, pad, ...) and special added
    tokens, coord tokens excluded (a coord token past the answer is a mismatch, not a tail)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, tok in decoder.items() if getattr(tok, "special", False))
    coord = tokenizer.convert_tokens_to_ids([coord_token(k) for k in range(COORD_BINS)])
    return frozenset(ids - {int(i) for i in coord if i is not None})


# A template suffix as ms-swift writes one (``swift.template.utils.Prompt``), or plain token ids.
SuffixTokens = Sequence[int | str | Sequence[int | str]]


def suffix_token_ids(tokenizer: Any, suffix: SuffixTokens | None) -> list[int]:
    """Token ids of an end-of-turn suffix in the form ms-swift writes a template suffix.

    Each item is text (tokenised without special tokens, as the template's ``_tokenize`` does), a
    list of token ids or tokenizer attribute names like 'eos_token_id' (what
    ``TemplateMeta._token_attr_to_id`` resolves), or a bare token id.
    """
    ids: list[int] = []
    for part in suffix or []:
        if isinstance(part, str):
            ids.extend(int(i) for i in tokenizer(part, add_special_tokens=False)["input_ids"])
            continue
        for item in part if isinstance(part, Sequence) else [part]:
            value = getattr(tokenizer, item, None) if isinstance(item, str) else item
            if value is None:
                raise ValueError(f"template suffix names {item!r}, which the tokenizer does not define")
            ids.extend(int(v) for v in (value if isinstance(value, list | tuple) else [value]))
    return ids


def resolve_suffix_ids(template: Any) -> list[int]:
    """Token ids of the template's end-of-turn suffix (``template.template_meta.suffix``)."""
    meta = getattr(template, "template_meta", None)
    return suffix_token_ids(template.tokenizer, getattr(meta, "suffix", None))


def as_payload(payload: Any) -> Mapping[str, Any] | None:
    if isinstance(payload, str):  # a payload stored as JSON text keeps its key order through Arrow
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    return payload if isinstance(payload, Mapping) else None


def drop_none(obj: Any) -> Any:
    """Remove None-valued keys: HF datasets fills keys missing from some rows' structs with None."""
    if isinstance(obj, Mapping):
        return {k: drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [drop_none(v) for v in obj]
    return obj


def align_supervised(
    sup_ids: list[int],
    ids: list[int],
    types: list[int],
    suffix: list[int],
    specials: Collection[int],
    fill: int = _FORMAT,
) -> list[int] | None:
    """Per-token values (``types``, or any per-token codes) of the supervised tokens, ``fill`` on the
    suffix and special tail; None when they are not ``ids`` (+ suffix) (+ special tail)."""
    n = len(ids)
    if sup_ids[:n] != ids:
        return None
    rest = sup_ids[n:]
    # The suffix may be supervised in full, in part (truncation) or not at all.
    k = 0
    while k < min(len(rest), len(suffix)) and rest[k] == suffix[k]:
        k += 1
    tail = rest[k:]
    if len(tail) > MAX_SPECIAL_TAIL or any(t not in specials for t in tail):
        return None
    return types + [fill] * len(rest)


AnswerTexts = str | Sequence[str]
NOT_ALIGNED = "the typed answer's tokens are not the supervised label ids (+ end-of-turn suffix)"


def _format_name(answer_format: str) -> str:
    return {"json": "JSON", "coordjson": "CoordJSON"}.get(answer_format, "JSON or CoordJSON")


def _text_candidates(
    tokenizer: Any, texts: Sequence[str], answer_format: AnswerFormat, suffix: list[int]
) -> tuple[list[tuple[list[int], list[int]]], str | None]:
    """(ids, types) to try against the labels (all turns joined by the suffix, then the last turn
    alone) and the first turn's parse problem, if any."""
    if not texts:
        return [], "no assistant answer text"
    turns: list[tuple[list[int], list[int]] | None] = []
    first_problem: str | None = None
    for text in texts:
        parsed = parse_answer(text, answer_format)
        if parsed.char_types is None or parsed.problems:
            turns.append(None)
            first_problem = first_problem or f"not a {_format_name(answer_format)} answer: {parsed.problem}"
            continue
        turns.append(text_token_ids(tokenizer, text, parsed.char_types))
    candidates: list[tuple[list[int], list[int]]] = []
    typed = [t for t in turns if t is not None]
    if len(typed) == len(turns):
        ids: list[int] = []
        types: list[int] = []
        for i, (turn_ids, turn_types) in enumerate(typed):
            between = i < len(typed) - 1  # every turn but the last ends with the suffix
            ids += turn_ids + (suffix if between else [])
            types += turn_types + ([_FORMAT] * len(suffix) if between else [])
        candidates.append((ids, types))
    last = turns[-1]
    if last is not None and len(turns) > 1:
        candidates.append(last)
    return candidates, first_problem


def _payload_candidates(tokenizer: Any, payload: Any) -> tuple[list[tuple[list[int], list[int]]], str | None]:
    base = as_payload(payload)
    if base is None:
        return [], "no answer text and no usable assistant_payload"
    stripped = drop_none(base)
    candidates = []
    for candidate in (base, stripped) if stripped != base else (base,):
        try:
            candidates.append(typed_token_ids(tokenizer, candidate))
        except (TypeError, ValueError):  # unserialisable payload (odd flat poly, bad keys): no types
            return [], "assistant_payload cannot be serialised"
    return candidates, None


def typing_outcome(
    *,
    tokenizer: Any,
    labels: torch.Tensor | Sequence[int],
    answer_texts: AnswerTexts | None = None,
    answer_format: AnswerFormat = "auto",
    payload: Any = None,
    attention_mask: torch.Tensor | Sequence[int] | None = None,
    suffix_tokens: SuffixTokens | None = None,
    special_ids: Collection[int] | None = None,
) -> tuple[torch.Tensor | None, str | None]:
    """(types aligned to the 1-D ``labels``, None) or (None, why the sample cannot be typed).

    ``answer_texts`` (the assistant turns' texts, or one text) are typed when given; otherwise the
    ``payload``. Unsupervised positions (``labels == -100`` or ``attention_mask == 0``) are IGNORE.
    """
    labels_t = torch.as_tensor(labels).reshape(-1)
    supervised = labels_t != IGNORE_INDEX
    if attention_mask is not None:
        supervised &= torch.as_tensor(attention_mask, device=labels_t.device).reshape(-1) != 0
    if not bool(supervised.any()):
        return None, "nothing supervised"
    suffix = suffix_token_ids(tokenizer, suffix_tokens)
    if answer_texts is not None:
        texts = [answer_texts] if isinstance(answer_texts, str) else list(answer_texts)
        candidates, problem = _text_candidates(tokenizer, texts, answer_format, suffix)
    else:
        candidates, problem = _payload_candidates(tokenizer, payload)
    if not candidates:
        return None, problem
    sup_ids = [int(i) for i in labels_t[supervised].tolist()]
    specials = tail_special_ids(tokenizer) if special_ids is None else special_ids
    for ids, types in candidates:
        aligned = align_supervised(sup_ids, ids, types, suffix, specials)
        if aligned is not None:
            out = ignore_types(labels_t.numel(), device=labels_t.device)
            out[supervised] = torch.tensor(aligned, dtype=torch.int64, device=labels_t.device)
            return out, None
    return None, problem or NOT_ALIGNED


def compute_token_types(
    *,
    tokenizer: Any,
    payload: Any = None,
    labels: torch.Tensor | Sequence[int],
    attention_mask: torch.Tensor | Sequence[int] | None = None,
    suffix_tokens: SuffixTokens | None = None,
    special_ids: Collection[int] | None = None,
    answer_texts: AnswerTexts | None = None,
    answer_format: AnswerFormat = "auto",
) -> torch.Tensor | None:
    """Token types aligned to one sample's 1-D ``labels``, or None when they cannot be derived.

    Typed from ``answer_texts`` when given (the assistant text the labels were made from), else from
    ``payload`` re-serialised. ``special_ids`` (the allowed tail tokens) defaults to
    ``tail_special_ids(tokenizer)``; pass it when calling often. ``suffix_tokens`` is the template's
    end-of-turn suffix, as ids or as ms-swift writes a template suffix (see
    :func:`suffix_token_ids`); pass ids (``resolve_suffix_ids``) when calling often.
    """
    types, _ = typing_outcome(
        tokenizer=tokenizer,
        labels=labels,
        answer_texts=answer_texts,
        answer_format=answer_format,
        payload=payload,
        attention_mask=attention_mask,
        suffix_tokens=suffix_tokens,
        special_ids=special_ids,
    )
    return types


def compute_packed_token_types(per_sample: Sequence[torch.Tensor], row_length: int) -> torch.Tensor:
    """Concatenate per-sample types in pack order; a length mismatch makes the whole row IGNORE.

    Each entry is already a full-length tensor for its sample (IGNORE where the sample got no types).
    """
    if not per_sample:
        return ignore_types(row_length)
    row = torch.cat([t.reshape(-1).to(torch.int64) for t in per_sample])
    return row if row.numel() == row_length else ignore_types(row_length, device=row.device)
