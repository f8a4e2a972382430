"""The pre-pass: one read of a split's JSONL files that finds every row, refuses the bad ones and
measures the good ones, in ``data.num_proc`` processes; what it keeps per row is what indexing needs.

Per kept row: the file (an index into ``files``), the byte offset and 1-based line of its JSON line,
its encoded length (what ``PackingDataset`` bins on) and its dataset label (an index into ``labels``),
each a numpy array: 24 bytes a row, no token lists, no tensors. Refused rows are kept as
``(file, line, reason)``. :mod:`coordexp.rows.lazy_rows` encodes a row again when a batch asks.

Each row goes through :func:`check_row`, the one place where per-row checks run: it encodes the row
exactly as training will (:func:`coordexp.rows.data.encode_row`; images are measured from their
headers, not decoded, :mod:`coordexp.rows.image_lengths`) and returns its length, label
or refusal reason, and, with token types on, whether the row can be typed
(:func:`coordexp.rows.untyped.token_type_problem`). A check on the encoded row goes there.

Parallelism: the files are cut into chunks of whole lines (the main process finds the line starts
while it hashes the file for the cache key) and the chunks go to a ``fork`` pool, results in order.
``fork``, not ``spawn``: the template (tokenizer, processor and, for Qwen-VL, ``template.model``)
reaches the workers without being pickled or rebuilt, and a worker starts in milliseconds instead
of re-importing torch and ms-swift. ``datasets.Dataset.map(num_proc=...)`` would pickle the encode
function with the template through dill in every worker, and keep each encoded row in Arrow.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coordexp.io.jsonl import parse_jsonl_line
from coordexp.rows.data import Encode, SourceRow, encode_row, encoded_length, source_row
from coordexp.rows.fields import sample_dataset_label
from coordexp.rows.image_lengths import ImageCheck, row_encoder
from coordexp.rows.refused import DataError, RefusedRows, one_line
from coordexp.rows.untyped import TypingSetup, UntypedRow, UntypedRows, token_type_problem

_READ_BYTES = 1 << 20  # hashing and line finding read 1 MiB at a time (a 16 MiB read costs 32 MiB of peak)
_CHUNKS_PER_PROCESS = 8  # small enough to balance uneven rows, large enough to amortise the pickling


@dataclass(frozen=True)
class FileScan:
    """A data file's content hash and where each of its physical lines starts."""

    path: str
    sha256: str
    line_starts: np.ndarray  # int64, line n (1-based) starts at line_starts[n - 1]
    size: int


def scan_file(path: str) -> FileScan:
    """One read of ``path``: its SHA-256 and its line starts. Raises ``DataError`` when unreadable."""
    digest = hashlib.sha256()
    starts = [np.zeros(1, dtype=np.int64)]
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_READ_BYTES):
                digest.update(chunk)
                newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
                starts.append(newlines.astype(np.int64) + size + 1)
                size += len(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    line_starts = np.concatenate(starts)
    if len(line_starts) and line_starts[-1] >= size:  # after a final "\n" there is no line
        line_starts = line_starts[:-1]
    return FileScan(path, digest.hexdigest(), line_starts, size)


@dataclass(frozen=True)
class RowCheck:
    """What the pre-pass keeps of one row: its length and label, or why it is refused; and, for a
    kept row, why it gets no token types (``(kind, reason)``, see :mod:`coordexp.rows.untyped`)."""

    length: int = 0
    label: str = ""
    reason: str | None = None
    untyped: tuple[str, str] | None = None


def check_row(
    template: Any,
    src: SourceRow,
    source_file: str,
    typing: TypingSetup | None = None,
    encode: Encode | None = None,
) -> RowCheck:
    """Every per-row check, on the row encoded as training will encode it (``encode``: the
    pre-pass's encode, which measures images by size, :mod:`coordexp.rows.image_lengths`)."""
    enc, reason = encode_row(template, src, source_file, encode=encode)
    if enc is None or src.row is None:
        return RowCheck(reason=reason or "refused")
    untyped = None if typing is None else token_type_problem(typing, src.row, enc["labels"])
    return RowCheck(encoded_length(enc), sample_dataset_label(enc), untyped=untyped)


@dataclass
class RowIndex:
    """A split's kept rows (parallel arrays, in file order) and its refused ones."""

    files: list[str]
    file: np.ndarray  # int32 index into files
    offset: np.ndarray  # int64 byte offset of the line
    line: np.ndarray  # int32, 1-based
    length: np.ndarray  # int32 encoded length
    label: np.ndarray  # int32 index into labels
    labels: list[str]
    refused: list[tuple[int, int, str]] = field(default_factory=list)  # (file, line, reason)
    # kept rows without token types: (file, line, dataset label, kind, reason)
    untyped: list[tuple[int, int, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offset)

    def truncated(self, max_samples: int | None) -> RowIndex:
        """The first ``max_samples`` kept rows, and only the refusals read before the last of them
        (the rows an in-order reader that stops there would have seen)."""
        if max_samples is None or max_samples >= len(self):
            return self
        end = (int(self.file[max_samples - 1]), int(self.line[max_samples - 1]))
        keep = slice(0, max_samples)
        return RowIndex(
            self.files,
            self.file[keep],
            self.offset[keep],
            self.line[keep],
            self.length[keep],
            self.label[keep],
            self.labels,
            [r for r in self.refused if (r[0], r[1]) < end],
            [r for r in self.untyped if (r[0], r[1]) <= end],
        )

    def record(self, refused: RefusedRows, split: str) -> None:
        """Enter this split's refusals and kept count into the run's one record of refusals."""
        refused.begin(split)
        for file, line, reason in self.refused:
            refused.refuse(self.files[file], line, split, reason)
        refused.keep_many(split, len(self))

    def record_untyped(self, untyped: UntypedRows, split: str) -> None:
        """Enter this split's rows without token types, and how many rows of each included dataset
        were checked, into the run's one record of them (nothing when token types are off)."""
        if untyped.setup is None:
            return
        counts = np.bincount(self.label, minlength=len(self.labels))
        for label, count in zip(self.labels, counts.tolist(), strict=True):
            if count and untyped.setup.includes(label):
                untyped.checked[split, label] += count
        for file, line, label, kind, reason in self.untyped:
            untyped.add(UntypedRow(self.files[file], line, split, label, kind, reason))


@dataclass(frozen=True)
class _Chunk:
    file: int
    path: str
    first_line: int  # 1-based number of the chunk's first line
    starts: np.ndarray  # byte offsets of its lines
    end: int  # byte offset after its last line


@dataclass(frozen=True)
class _ChunkResult:
    """A chunk's kept rows as arrays (what a worker sends back is as compact as what is kept)."""

    offset: np.ndarray
    line: np.ndarray
    length: np.ndarray
    label: np.ndarray  # index into labels
    labels: list[str]
    refused: list[tuple[int, str]]  # (line, reason)
    untyped: list[tuple[int, str, str, str]]  # (line, label, kind, reason)


# What a forked worker inherits (set before the pool starts): the template, its pre-pass encode
# and the typing setup.
_TEMPLATE: Any = None
_ENCODE: Encode | None = None
_TYPING: TypingSetup | None = None


def _check_chunk(chunk: _Chunk) -> _ChunkResult:
    kept: list[tuple[int, int, int, str]] = []  # offset, line, length, label
    refused: list[tuple[int, str]] = []
    untyped: list[tuple[int, str, str, str]] = []
    path = Path(chunk.path)
    base = int(chunk.starts[0])
    with open(chunk.path, "rb") as handle:
        handle.seek(base)
        data = handle.read(chunk.end - base)
    bounds = [int(s) - base for s in chunk.starts] + [len(data)]
    for k in range(len(chunk.starts)):
        raw = data[bounds[k] : bounds[k + 1]]
        if not raw.strip():
            continue  # blank lines are not rows, but they count in the line numbers
        terminated = raw.endswith(b"\n")
        number = chunk.first_line + k
        line = parse_jsonl_line(path, number, raw[:-1] if terminated else raw, terminated, last=False)
        check = check_row(_TEMPLATE, source_row(line), chunk.path, _TYPING, _ENCODE)
        if check.reason is not None:
            refused.append((number, check.reason))
            continue
        kept.append((base + bounds[k], number, check.length, check.label))
        if check.untyped is not None:
            untyped.append((number, check.label, check.untyped[0], one_line(check.untyped[1])))
    labels = sorted({row[3] for row in kept})
    label_id = {label: i for i, label in enumerate(labels)}
    return _ChunkResult(
        offset=np.array([row[0] for row in kept], dtype=np.int64),
        line=np.array([row[1] for row in kept], dtype=np.int32),
        length=np.array([row[2] for row in kept], dtype=np.int32),
        label=np.array([label_id[row[3]] for row in kept], dtype=np.int32),
        labels=labels,
        refused=refused,
        untyped=untyped,
    )


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # as DataLoader workers do: num_proc processes, not num_proc x threads


def _chunks(scans: Sequence[FileScan], num_proc: int) -> list[_Chunk]:
    total = sum(len(s.line_starts) for s in scans)
    per_chunk = max(1, min(1024, -(-total // (num_proc * _CHUNKS_PER_PROCESS))))
    chunks: list[_Chunk] = []
    for i, scan in enumerate(scans):
        for first in range(0, len(scan.line_starts), per_chunk):
            starts = scan.line_starts[first : first + per_chunk]
            end = (
                int(scan.line_starts[first + per_chunk])
                if first + per_chunk < len(scan.line_starts)
                else scan.size
            )
            chunks.append(_Chunk(i, scan.path, first + 1, starts, end))
    return chunks


def _results(chunks: list[_Chunk], num_proc: int) -> Iterator[_ChunkResult]:
    if num_proc <= 1 or len(chunks) <= 1:
        yield from map(_check_chunk, chunks)
        return
    # The forked workers would otherwise each warn that the tokenizer's thread pool was forked.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Frozen objects are never visited by the collector, so a worker does not copy the pages of
    # the parent's heap (the template, the model) just to scan them.
    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(chunks)), _init_worker) as pool:
            yield from pool.imap(_check_chunk, chunks)
    finally:
        gc.unfreeze()


def build_index(
    template: Any,
    scans: Sequence[FileScan],
    *,
    num_proc: int,
    progress: Callable[[int], None] = lambda _: None,
    typing: TypingSetup | None = None,
    image_check: ImageCheck = "header",
) -> RowIndex:
    """Check every row of ``scans`` (in ``num_proc`` processes); ``progress`` gets lines done;
    ``typing`` (token types on) also checks that each kept row can be typed; ``image_check``:
    images measured from their headers, or decoded (``data.image_check``)."""
    global _TEMPLATE, _ENCODE, _TYPING
    _TEMPLATE, _ENCODE, _TYPING = template, row_encoder(template, image_check), typing
    chunks = _chunks(scans, num_proc)
    file_ids: list[np.ndarray] = []
    parts: list[_ChunkResult] = []
    refused: list[tuple[int, int, str]] = []
    untyped: list[tuple[int, int, str, str, str]] = []
    try:
        for chunk, part in zip(chunks, _results(chunks, num_proc), strict=True):
            parts.append(part)
            file_ids.append(np.full(len(part.offset), chunk.file, dtype=np.int32))
            refused += [(chunk.file, line, reason) for line, reason in part.refused]
            untyped += [(chunk.file, *row) for row in part.untyped]
            progress(len(chunk.starts))
    finally:
        _TEMPLATE, _ENCODE, _TYPING = None, None, None
    labels = sorted({label for part in parts for label in part.labels})
    label_id = {label: i for i, label in enumerate(labels)}

    def column(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts] or [np.zeros(0, dtype)]).astype(dtype)

    return RowIndex(
        files=[s.path for s in scans],
        file=np.concatenate(file_ids or [np.zeros(0, dtype=np.int32)]),
        offset=column("offset", np.int64),
        line=column("line", np.int32),
        length=column("length", np.int32),
        # each chunk's label ids, mapped to the split's sorted labels
        label=np.concatenate(
            [np.array([label_id[x] for x in part.labels], dtype=np.int32)[part.label] for part in parts]
            or [np.zeros(0, dtype=np.int32)]
        ),
        labels=labels,
        refused=refused,
        untyped=untyped,
    )
