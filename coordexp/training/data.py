"""Rows from JSONL files, encoded by the ms-swift template, with the fields the enrichers need.

``template.encode`` keeps only token ids and labels, so the row fields the collator's enrichers read
(payload, dataset label, ids) are merged back into each encoded dict; ms-swift's collator ignores
them and the metrics collator strips them before the base collator runs. Packed datasets go through
Arrow, which would add ``"poly": None`` to objects without polygons and break the exact payload
serialisation, so there the payload travels as JSON text.

Each encoded dict also carries where its row was read: the file and the 1-based line
(``SOURCE_FILE_KEY`` / ``SOURCE_LINE_KEY``, plain str / int columns, so they survive Arrow and
packing). Instability dumps read the row back from there; a row's own ``base_idx`` is only a field
of the row.

A row that cannot be trained on as written is refused, with its ``file:line`` and the reason
(``coordexp.training.refused``): a line that is not a JSON object with ``messages``, a coord-token
lookalike outside the 1000 bins in an assistant message (the tokenizer would split it into plain
text and train it as such), a row the template refuses (too long, malformed messages, any encode
error), and a row with nothing supervised.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordexp.coord_tokens.codec import COORD_BINS, invalid_coord_tokens
from coordexp.data_collators.enrichers import SOURCE_FILE_KEY, SOURCE_LINE_KEY
from coordexp.functional.targets import IGNORE_INDEX
from coordexp.training.config import DataSection
from coordexp.training.refused import RefusedRows

logger = logging.getLogger("coordexp")

CARRIED_FIELDS = ("assistant_payload", "dataset", "dataset_name", "metadata", "base_idx", "sample_id")


@dataclass(frozen=True)
class SourceRow:
    """One non-blank line of a JSONL file: the row, or why it is not one (``problem``)."""

    path: Path
    line: int  # 1-based, counting every physical line (what an editor and the dump reader show)
    row: dict[str, Any] | None
    problem: str | None = None


def read_jsonl(path: Path) -> Iterator[SourceRow]:
    # Binary, split on b"\n" only: the same line numbers the dump reader counts (text mode would
    # also split on a lone "\r").
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield SourceRow(path, lineno, None, f"not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            except json.JSONDecodeError as exc:
                yield SourceRow(path, lineno, None, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict) or "messages" not in row:
                yield SourceRow(path, lineno, None, "each row must be an object with 'messages'")
                continue
            yield SourceRow(path, lineno, row)


def _assistant_texts(row: Mapping[str, Any]) -> Iterator[str]:
    messages = row.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):  # multimodal content: a list of parts, the text ones count
            yield from (
                p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )


def _bad_coord_tokens(row: Mapping[str, Any]) -> str | None:
    bad = [token for text in _assistant_texts(row) for token in invalid_coord_tokens(text)]
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return (
        f"assistant text has a coord token outside the {COORD_BINS} bins: {bad[0]!r}{more} "
        f"(the tokenizer would split it into plain text)"
    )


def _encode(template: Any, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The encoded row, or why it is refused."""
    bad = _bad_coord_tokens(row)
    if bad is not None:
        return None, bad
    try:
        enc = dict(template.encode(dict(row), return_length=True))
    except Exception as exc:  # swift raises its own MaxLengthError and friends
        return None, f"{type(exc).__name__}: {exc}"
    labels = enc.get("labels")
    if labels is None or all(int(label) == IGNORE_INDEX for label in labels):
        return None, f"nothing supervised: every label is {IGNORE_INDEX} (no assistant turn to learn?)"
    return enc, None


def encode_rows(
    template: Any,
    files: Sequence[str],
    *,
    split: str,
    refused: RefusedRows,
    max_samples: int | None = None,
    payload_as_json: bool = False,
) -> list[dict[str, Any]]:
    """Encode every row (up to ``max_samples`` kept ones); refusals go to ``refused``."""
    encoded: list[dict[str, Any]] = []
    refused.begin(split)
    for name in files:
        source_file = os.path.abspath(name)  # the dump reader must find it whatever the cwd then
        for src in read_jsonl(Path(name)):
            if max_samples is not None and len(encoded) >= max_samples:
                return encoded
            enc, reason = (None, src.problem) if src.row is None else _encode(template, src.row)
            if enc is None or src.row is None:
                refused.refuse(source_file, src.line, split, reason or "refused")
                continue
            for field in CARRIED_FIELDS:
                if field in src.row:
                    enc[field] = src.row[field]
            enc[SOURCE_FILE_KEY] = source_file
            enc[SOURCE_LINE_KEY] = src.line
            if payload_as_json and isinstance(enc.get("assistant_payload"), dict):
                enc["assistant_payload"] = json.dumps(enc["assistant_payload"], ensure_ascii=False)
            refused.keep(split)
            encoded.append(enc)
    return encoded


def build_datasets(
    template: Any, data: DataSection, *, packing_length: int, output_dir: Path
) -> tuple[Any, Any | None]:
    """Train and eval datasets for the trainer (a list for padded / padding_free, a swift
    PackingDataset for packing); raises ``DataError`` when more rows are refused than tolerated."""
    packed = data.layout == "packing"
    refused = RefusedRows()

    def encode(files: Sequence[str], split: str) -> list[dict[str, Any]]:
        rows = encode_rows(
            template,
            files,
            split=split,
            refused=refused,
            max_samples=data.max_samples,
            payload_as_json=packed,
        )
        logger.info("coordexp: encoded %d %s rows", len(rows), split)
        return rows

    train_rows = encode(data.train, "train")
    val_rows = encode(data.val, "val") if data.val else None
    refused.enforce(data.max_refused_fraction, output_dir)

    def as_dataset(rows: list[dict[str, Any]]) -> Any:
        if not packed:
            return rows
        import datasets
        from swift.dataset import PackingDataset

        return PackingDataset(template, datasets.Dataset.from_list(rows), packing_length=packing_length)

    return as_dataset(train_rows), None if val_rows is None else as_dataset(val_rows)
