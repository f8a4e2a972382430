"""Rows from JSONL files, encoded by the ms-swift template, with the fields the enrichers need.

``template.encode`` keeps only token ids and labels (and, for vision-language templates, the media
tensors), so the row fields the collator's enrichers read (payload, dataset label, ids) are merged
back into each encoded dict; ms-swift's collator ignores them and the metrics collator strips them
before the base collator runs. Packing hands the encoded rows to ms-swift's ``PackingDataset`` as
they are (:class:`EncodedRows`), never through Arrow: Arrow would turn the media tensors into nested
lists that ``packing_row`` cannot take, and add ``"poly": None`` to objects without polygons.

Media paths (``images``, ``videos``, ``audios``) that are relative resolve against the folder of
the JSONL file they are written in, not the working directory, so a data folder can move as a
whole; a path that does not exist refuses its row.

Each encoded dict also carries where its row was read: the file and the 1-based line
(``SOURCE_FILE_KEY`` / ``SOURCE_LINE_KEY``, plain str / int columns, so they survive Arrow and
packing). Instability dumps read the row back from there; a row's own ``base_idx`` is only a field
of the row.

A row that cannot be trained on as written is refused, with its ``file:line`` and the reason
(``coordexp.training.refused``): a line that is not a JSON object with ``messages``, a coord-token
lookalike outside the 1000 bins in an assistant message (the tokenizer would split it into plain
text and train it as such), a media file that does not exist, a row the template refuses (too long,
malformed messages, an image it cannot read, any encode error), and a row with nothing supervised.

Each encoded dict also carries its assistant answer texts and ``data.answer_format``
(``ANSWER_TEXTS_KEY`` / ``ANSWER_FORMAT_KEY``): token types are read from the text the labels were
made from. With ``custom.token_type_metrics`` on, rows that cannot be typed are listed
(``coordexp.rows.untyped``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from coordexp.answers import AnswerFormat
from coordexp.coord_tokens.codec import COORD_BINS, invalid_coord_tokens
from coordexp.functional.targets import IGNORE_INDEX
from coordexp.io.jsonl import read_jsonl_lines
from coordexp.rows.fields import ANSWER_FORMAT_KEY, ANSWER_TEXTS_KEY, SOURCE_FILE_KEY, SOURCE_LINE_KEY
from coordexp.rows.untyped import TypingSetup, UntypedRows, answer_texts
from coordexp.training.config import DataSection
from coordexp.training.refused import RefusedRows

logger = logging.getLogger("coordexp")

CARRIED_FIELDS = ("assistant_payload", "dataset", "dataset_name", "metadata", "base_idx", "sample_id")


class EncodedRows(Sequence[dict[str, Any]]):
    """Encoded rows as ``PackingDataset`` reads them: ``len``, ``rows[i]`` and ``rows["lengths"]``
    (a column), with every value kept as the template made it (tensors stay tensors)."""

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


@dataclass(frozen=True)
class SourceRow:
    """One non-blank line of a JSONL file: the row, or why it is not one (``problem``)."""

    path: Path
    line: int  # 1-based, counting every physical line (what an editor and the dump reader show)
    row: dict[str, Any] | None
    problem: str | None = None


def read_jsonl(path: Path) -> Iterator[SourceRow]:
    """Every non-blank line of a data file as a row, or why it is not one (the line numbers the
    dump reader counts: :mod:`coordexp.io.jsonl`)."""
    for line in read_jsonl_lines(path):
        if line.problem is not None:
            yield SourceRow(path, line.number, None, line.problem)
        elif not isinstance(line.value, dict) or "messages" not in line.value:
            yield SourceRow(path, line.number, None, "each row must be an object with 'messages'")
        else:
            yield SourceRow(path, line.number, line.value)


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


MEDIA_FIELDS = ("images", "videos", "audios")
# ms-swift also takes URLs, data URIs and inline base64 for media: those are left as they are.
_NOT_A_PATH = ("http://", "https://", "data:")
_MAX_PATH_CHARS = 4096


def _resolve_media_path(value: str, base: Path) -> tuple[str, str | None]:
    """``value`` resolved against ``base`` when it is a local path, or why it cannot be used."""
    if value.startswith(_NOT_A_PATH) or len(value) > _MAX_PATH_CHARS:
        return value, None
    path = Path(value).expanduser()
    resolved = path if path.is_absolute() else base / path
    if not resolved.is_file():
        where = "" if path.is_absolute() else f" (relative paths resolve against {base})"
        return value, f"media file not found: {value!r}{where}"
    return str(resolved), None


def _resolve_media(row: dict[str, Any], base: Path) -> str | None:
    """Rewrite the row's relative media paths against ``base`` (in place); the first problem, if any."""
    for field in MEDIA_FIELDS:
        value = row.get(field)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        resolved: list[Any] = []
        for item in items:
            key = "path" if isinstance(item, dict) and isinstance(item.get("path"), str) else None
            text = item[key] if key else item
            if not isinstance(text, str):  # bytes dicts, PIL images: ms-swift's business
                resolved.append(item)
                continue
            new, problem = _resolve_media_path(text, base)
            if problem is not None:
                return f"{field}: {problem}"
            # {"path": ...} (the HF Image form without bytes) becomes the path ms-swift loads.
            resolved.append(new if not key or not item.get("bytes") else {**item, key: new})
        row[field] = resolved if isinstance(value, list) else resolved[0]
    return None


def _encode(template: Any, row: dict[str, Any], base: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The encoded row, or why it is refused."""
    bad = _bad_coord_tokens(row)
    if bad is not None:
        return None, bad
    source, row = row, dict(row)
    missing = _resolve_media(row, base)
    if missing is not None:
        return None, missing
    try:
        enc = dict(template.encode(row, return_length=True))
    except Exception as exc:  # swift raises its own MaxLengthError and friends
        # An unreadable image's error names an in-memory buffer, not the file: name the row's media.
        media = {f: source[f] for f in MEDIA_FIELDS if source.get(f) is not None}
        return None, f"{type(exc).__name__}: {exc}" + (f" (row media: {media})" if media else "")
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
    answer_format: AnswerFormat = "auto",
    untyped: UntypedRows | None = None,
) -> list[dict[str, Any]]:
    """Encode every row (up to ``max_samples`` kept ones); refusals go to ``refused``, rows the
    token-type metrics cannot type to ``untyped``."""
    encoded: list[dict[str, Any]] = []
    refused.begin(split)
    for name in files:
        source_file = os.path.abspath(name)  # the dump reader must find it whatever the cwd then
        base = Path(source_file).parent
        for src in read_jsonl(Path(name)):
            if max_samples is not None and len(encoded) >= max_samples:
                return encoded
            enc, reason = (None, src.problem) if src.row is None else _encode(template, src.row, base)
            if enc is None or src.row is None:
                refused.refuse(source_file, src.line, split, reason or "refused")
                continue
            for field in CARRIED_FIELDS:
                if field in src.row:
                    enc[field] = src.row[field]
            enc[SOURCE_FILE_KEY] = source_file
            enc[SOURCE_LINE_KEY] = src.line
            enc[ANSWER_TEXTS_KEY], enc[ANSWER_FORMAT_KEY] = answer_texts(src.row), answer_format
            if untyped is not None:
                untyped.check(source_file, src.line, split, src.row, enc["labels"])
            refused.keep(split)
            encoded.append(enc)
    return encoded


def build_datasets(
    template: Any, data: DataSection, *, packing_length: int, output_dir: Path, token_types: Any = None
) -> tuple[Any, Any | None]:
    """Train and eval datasets for the trainer (a list for padded / padding_free, a swift
    PackingDataset for packing); raises ``DataError`` when more rows are refused than tolerated, or
    when ``token_types`` (``custom.token_type_metrics``) is on and an included dataset's train rows
    cannot be typed."""
    packed = data.layout == "packing"
    refused = RefusedRows()
    untyped = UntypedRows(TypingSetup.for_run(template, token_types, data.answer_format))

    def encode(files: Sequence[str], split: str) -> list[dict[str, Any]]:
        rows = encode_rows(
            template,
            files,
            split=split,
            refused=refused,
            max_samples=data.max_samples,
            answer_format=data.answer_format,
            untyped=untyped,
        )
        logger.info("coordexp: encoded %d %s rows", len(rows), split)
        return rows

    train_rows = encode(data.train, "train")
    val_rows = encode(data.val, "val") if data.val else None
    refused.enforce(data.max_refused_fraction, output_dir)
    untyped.enforce(output_dir)

    def as_dataset(rows: list[dict[str, Any]]) -> Any:
        if not packed:
            return rows
        from swift.dataset import PackingDataset

        return PackingDataset(template, EncodedRows(rows), packing_length=packing_length)

    return as_dataset(train_rows), None if val_rows is None else as_dataset(val_rows)
