"""A split's rows as a map-style dataset that encodes each row when a batch asks for it.

Only the :class:`~coordexp.rows.row_index.RowIndex` lives in memory; ``rows[i]`` seeks to the
row's byte offset, parses the line and encodes it with the template (the same
:func:`~coordexp.rows.data.encode_row` as the pre-pass), in the DataLoader worker that builds
the batch, or in the training process with ``dataloader_num_workers: 0``. Media tensors live only
for the batches in flight. ``rows["lengths"]`` is the column ms-swift's ``PackingDataset`` bins on
(read from the index, nothing is encoded), so packing packs exactly as before.

A row that passed the pre-pass but no longer encodes to what the index says (the file or an image
changed or went away since, or an image's pixels are damaged past the header the pre-pass read,
:mod:`coordexp.rows.image_lengths`) stops the run with a ``DataError`` naming ``file:line``: skipping it
would silently change the data, and another row in its place would change the order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, overload

from coordexp.answers import AnswerFormat
from coordexp.io.jsonl import JsonlLine, parse_jsonl_line
from coordexp.rows.data import encode_row, encoded_length, source_row, with_resolved_media
from coordexp.rows.refused import DataError, one_line
from coordexp.rows.row_index import RowIndex


class LazyRows(Sequence[dict[str, Any]]):
    """``len``, ``rows[i]`` (encoded now), ``rows[a:b]`` and ``rows["lengths"]``."""

    def __init__(self, template: Any, index: RowIndex, *, answer_format: AnswerFormat = "auto") -> None:
        self.template = template
        self.row_index = index
        self.answer_format: AnswerFormat = answer_format
        self._handles: dict[int, IO[bytes]] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.row_index)

    @overload
    def __getitem__(self, key: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, key: slice) -> list[dict[str, Any]]: ...
    @overload
    def __getitem__(self, key: str) -> list[Any]: ...
    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key != "lengths":
                raise KeyError(f"{key!r}: the lazy rows have only a 'lengths' column")
            return self.row_index.length.tolist()
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        if not -len(self) <= key < len(self):
            raise IndexError(key)
        return self._encode(int(key) % len(self))

    def source(self, i: int) -> tuple[str, int, dict[str, Any]]:
        """Row ``i`` as its file holds it (media paths resolved against the file's folder), with
        the file and 1-based line; a row that no longer reads as it did raises ``DataError``."""
        source_file, number, line = self._line(i)
        src = source_row(line)
        if src.row is None:
            raise DataError(f"{source_file}:{number}: {one_line(src.problem or 'refused')}")
        row, problem = with_resolved_media(src.row, source_file)
        if problem is not None:
            raise DataError(f"{source_file}:{number}: {one_line(problem)}")
        return source_file, number, row

    def _line(self, i: int) -> tuple[str, int, JsonlLine]:
        index = self.row_index
        source_file = index.files[int(index.file[i])]
        number = int(index.line[i])
        raw = self._read_line(int(index.file[i]), int(index.offset[i]))
        terminated = raw.endswith(b"\n")
        line = parse_jsonl_line(
            Path(source_file), number, raw[:-1] if terminated else raw, terminated, last=False
        )
        return source_file, number, line

    def _encode(self, i: int) -> dict[str, Any]:
        source_file, number, line = self._line(i)
        enc, reason = encode_row(self.template, source_row(line), source_file, self.answer_format)
        changed = " (it passed the pre-pass: the data changed since; restart to index it again)"
        if enc is None:
            if isinstance(line.value, dict) and line.value.get("images"):
                changed = (
                    " (it passed the pre-pass: the data changed since, or an image is damaged past the "
                    "header the pre-pass read, which data.image_check: decode checks at start)"
                )
            raise DataError(f"{source_file}:{number}: {one_line(reason or 'refused')}{changed}")
        length = encoded_length(enc)
        if length != int(self.row_index.length[i]):
            raise DataError(
                f"{source_file}:{number}: encodes to {length} tokens, the index says "
                f"{int(self.row_index.length[i])}{changed}"
            )
        return enc

    def _read_line(self, file: int, offset: int) -> bytes:
        if self._pid != os.getpid():  # a forked DataLoader worker: its own file positions
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(file)
        if handle is None:
            path = self.row_index.files[file]
            try:
                handle = self._handles[file] = open(path, "rb")  # kept open across rows
            except OSError as exc:
                raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        handle.seek(offset)
        return handle.readline()

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker opens its own files
        return {**self.__dict__, "_handles": {}}
