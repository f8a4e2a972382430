"""Rows from JSONL files, encoded by the ms-swift template, with the fields the enrichers need.

``template.encode`` keeps only token ids and labels, so the row fields the collator's enrichers read
(payload, dataset label, source index) are merged back into each encoded dict; ms-swift's collator
ignores them and the metrics collator strips them before the base collator runs. Packed datasets
go through Arrow, which would add ``"poly": None`` to objects without polygons and break the exact
payload serialisation, so there the payload travels as JSON text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("coordexp")

CARRIED_FIELDS = ("assistant_payload", "dataset", "dataset_name", "metadata", "base_idx", "sample_id")


@dataclass(frozen=True)
class SourceRow:
    path: Path
    index: int
    row: dict[str, Any]


def read_jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open(encoding="utf-8") as handle:
        index = 0
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "messages" not in row:
                raise ValueError(f"{path}:{lineno}: each row must be an object with 'messages'")
            yield SourceRow(path, index, row)
            index += 1


def encode_rows(
    template: Any,
    files: Sequence[str],
    *,
    max_samples: int | None = None,
    payload_as_json: bool = False,
    split: str = "train",
) -> list[dict[str, Any]]:
    """Encode every row; rows the template refuses (e.g. too long) are skipped and counted."""
    encoded: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for name in files:
        for src in read_jsonl(Path(name)):
            if max_samples is not None and len(encoded) >= max_samples:
                break
            try:
                enc = dict(template.encode(dict(src.row), return_length=True))
            except Exception as exc:  # swift raises its own MaxLengthError and friends
                kind = type(exc).__name__
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            for field in CARRIED_FIELDS:
                if field in src.row:
                    enc[field] = src.row[field]
            enc.setdefault("base_idx", src.index)
            if payload_as_json and isinstance(enc.get("assistant_payload"), dict):
                enc["assistant_payload"] = json.dumps(enc["assistant_payload"], ensure_ascii=False)
            encoded.append(enc)
    if not encoded:
        raise ValueError(f"no {split} row could be encoded from {list(files)} (skipped: {skipped or 'none'})")
    logger.info(
        "coordexp: encoded %d %s rows%s", len(encoded), split, f" (skipped {skipped})" if skipped else ""
    )
    if skipped:
        print(f"[coordexp] {split}: skipped {sum(skipped.values())} rows the template refused: {skipped}")
    return encoded


def source_files_by_label(files: Sequence[str]) -> dict[str, str]:
    """Dataset label -> the one file holding it (for sample dumps); labels spread over files are left out."""
    owners: dict[str, set[str]] = {}
    for name in files:
        for src in read_jsonl(Path(name)):
            label = str(src.row.get("dataset") or src.row.get("dataset_name") or "default").lower()
            owners.setdefault(label, set()).add(name)
    return {label: next(iter(paths)) for label, paths in owners.items() if len(paths) == 1}


def build_dataset(
    template: Any,
    files: Sequence[str],
    *,
    layout: str,
    packing_length: int,
    max_samples: int | None,
    split: str,
) -> Any:
    """A dataset for the trainer: a list for padded / padding_free, a swift PackingDataset for packing."""
    packed = layout == "packing"
    rows = encode_rows(template, files, max_samples=max_samples, payload_as_json=packed, split=split)
    if not packed:
        return rows
    import datasets
    from swift.dataset import PackingDataset

    return PackingDataset(template, datasets.Dataset.from_list(rows), packing_length=packing_length)
