"""The loader as it was before the lazy one (test-only): every row encoded up front into a list.

Kept to prove the lazy loader changes nothing a user sees: the same rows, refusals and logged values
step by step. It reads with :func:`coordexp.rows.data.read_source_rows` and encodes with the same
:func:`~coordexp.rows.data.encode_row`, in one process, keeping every encoded row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, overload

from coordexp.answers import AnswerFormat
from coordexp.launch.config import DataSection
from coordexp.rows.data import encode_row, read_source_rows
from coordexp.rows.refused import RefusedRows


class EncodedRows(Sequence[dict[str, Any]]):
    """Encoded rows as ``PackingDataset`` reads them: ``len``, ``rows[i]`` and ``rows["lengths"]``."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, key: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, key: slice) -> list[dict[str, Any]]: ...
    @overload
    def __getitem__(self, key: str) -> list[Any]: ...
    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return [row[key] for row in self._rows]
        return self._rows[key]


def encode_rows(
    template: Any,
    files: Sequence[str],
    *,
    split: str,
    refused: RefusedRows,
    max_samples: int | None = None,
    answer_format: AnswerFormat = "auto",
) -> list[dict[str, Any]]:
    """Encode every row (up to ``max_samples`` kept ones); refusals go to ``refused``."""
    encoded: list[dict[str, Any]] = []
    refused.begin(split)
    for name in files:
        source_file = os.path.abspath(name)
        for src in read_source_rows(Path(name)):
            if max_samples is not None and len(encoded) >= max_samples:
                return encoded
            enc, reason = encode_row(template, src, source_file, answer_format)
            if enc is None:
                refused.refuse(source_file, src.line, split, reason or "refused")
                continue
            refused.keep(split)
            encoded.append(enc)
    return encoded


def build_eager_datasets(
    template: Any,
    data: DataSection,
    *,
    packing_length: int,
    output_dir: Path,
    main_process_first: AbstractContextManager[Any] | None = None,
    token_types: Any = None,
) -> tuple[Any, Any | None]:
    """``build_datasets`` as it was: lists of encoded rows (or a PackingDataset over them). The
    untyped-rows listing (``token_types``) is not redone here: it changes no row and no value."""
    refused = RefusedRows()
    kw = {"refused": refused, "max_samples": data.max_samples, "answer_format": data.answer_format}
    train = encode_rows(template, data.train, split="train", **kw)
    val = encode_rows(template, data.val, split="val", **kw) if data.val else None
    refused.enforce(data.max_refused_fraction, output_dir)

    def as_dataset(rows: list[dict[str, Any]]) -> Any:
        if data.layout != "packing":
            return rows
        from swift.dataset import PackingDataset

        return PackingDataset(template, EncodedRows(rows), packing_length=packing_length)

    return as_dataset(train), None if val is None else as_dataset(val)
