"""One row of a JSONL file, from its line to the encoded dict the collator gets; the same code for
the pre-pass (:mod:`coordexp.rows.row_index`) and the lazy dataset (:mod:`coordexp.rows.lazy_rows`).

``template.encode`` keeps only token ids and labels (and, for vision-language templates, the media
tensors), so the row fields the collator's enrichers read (payload, dataset label, ids) are merged
back into each encoded dict; ms-swift's collator ignores them and the metrics collator strips them
before the base collator runs.

Media paths (``images``, ``videos``, ``audios``) that are relative resolve against the folder of
the JSONL file they are written in, not the working directory, so a data folder can move as a
whole; a path that does not exist refuses its row.

Each encoded dict also carries where its row was read: the file and the 1-based line
(``SOURCE_FILE_KEY`` / ``SOURCE_LINE_KEY``, plain str / int columns, so they survive Arrow and
packing). Instability dumps read the row back from there; a row's own ``base_idx`` is only a field
of the row.

A row that cannot be trained on as written is refused, with its ``file:line`` and the reason
(``coordexp.rows.refused``): a line that is not a JSON object with ``messages``, a coord-token
lookalike outside the 1000 bins in an assistant message (the tokenizer would split it into plain
text and train it as such), a media file that does not exist, a row the template refuses (too long,
malformed messages, an image it cannot read, any encode error), and a row with nothing supervised.

Each encoded dict also carries its assistant answer texts and ``data.answer_format``
(``ANSWER_TEXTS_KEY`` / ``ANSWER_FORMAT_KEY``): token types are read from the text the labels were
made from. With ``custom.token_type_metrics`` on, the pre-pass lists the rows that cannot be typed
(``coordexp.rows.untyped``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordexp.answers import AnswerFormat
from coordexp.coord_tokens.codec import COORD_BINS, invalid_coord_tokens
from coordexp.functional.targets import IGNORE_INDEX
from coordexp.io.jsonl import JsonlLine, read_jsonl_lines
from coordexp.rows.fields import (
    ANSWER_FORMAT_KEY,
    ANSWER_TEXTS_KEY,
    CARRIED_FIELDS,
    SOURCE_FILE_KEY,
    SOURCE_LINE_KEY,
)

# row (media paths resolved) -> the template's encoded dict, with "lengths"; raises to refuse
Encode = Callable[[dict[str, Any]], dict[str, Any]]


def template_encode(template: Any) -> Encode:
    """The template's own encode, as training runs it (with the row's ``lengths``)."""
    return lambda row: dict(template.encode(row, return_length=True))


@dataclass(frozen=True)
class SourceRow:
    """One non-blank line of a JSONL file: the row, or why it is not one (``problem``)."""

    path: Path
    line: int  # 1-based, counting every physical line (what an editor and the dump reader show)
    row: dict[str, Any] | None
    problem: str | None = None


def read_source_rows(path: Path) -> Iterator[SourceRow]:
    """Every non-blank line of a data file as a row, or why it is not one (the line numbers the
    dump reader counts: :mod:`coordexp.io.jsonl`)."""
    for line in read_jsonl_lines(path):
        yield source_row(line)


def source_row(line: JsonlLine) -> SourceRow:
    """The row a parsed line holds, or why it is not one."""
    if line.problem is not None:
        return SourceRow(line.path, line.number, None, line.problem)
    if not isinstance(line.value, dict) or "messages" not in line.value:
        return SourceRow(line.path, line.number, None, "each row must be an object with 'messages'")
    return SourceRow(line.path, line.number, line.value)


def answer_texts(row: Mapping[str, Any]) -> list[str]:
    """The text of each assistant message, in order (multimodal content: its text parts joined)."""
    texts: list[str] = []
    messages = row.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            parts = [p for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
            texts.append("".join(p["text"] for p in parts))
    return texts


def _bad_coord_tokens(row: Mapping[str, Any]) -> str | None:
    bad = [token for text in answer_texts(row) for token in invalid_coord_tokens(text)]
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
_BUFFER = re.compile(r" ?<_io\.\w+ object at 0x[0-9a-fA-F]+>")


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


def with_resolved_media(row: Mapping[str, Any], source_file: str) -> tuple[dict[str, Any], str | None]:
    """A copy of ``row`` whose relative media paths resolve against its file's folder, and the
    first media problem (a missing file), if any."""
    copy = dict(row)
    return copy, _resolve_media(copy, Path(source_file).parent)


def _encode(
    template: Any, row: dict[str, Any], base: Path, encode: Encode | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The encoded row, or why it is refused."""
    bad = _bad_coord_tokens(row)
    if bad is not None:
        return None, bad
    source, row = row, dict(row)
    missing = _resolve_media(row, base)
    if missing is not None:
        return None, missing
    try:
        enc = (encode or template_encode(template))(row)
    except Exception as exc:  # swift raises its own MaxLengthError and friends
        # An unreadable image's error names an in-memory buffer, not the file: name the row's media
        # (and drop the buffer's address, which would make the same refusal read differently).
        media = {f: source[f] for f in MEDIA_FIELDS if source.get(f) is not None}
        message = _BUFFER.sub("", f"{type(exc).__name__}: {exc}")
        return None, message + (f" (row media: {media})" if media else "")
    labels = enc.get("labels")
    if labels is None or all(int(label) == IGNORE_INDEX for label in labels):
        return None, f"nothing supervised: every label is {IGNORE_INDEX} (no assistant turn to learn?)"
    return enc, None


def encoded_length(enc: Mapping[str, Any]) -> int:
    """The row's token count as ``PackingDataset`` sums it (``lengths`` is a list per row)."""
    lengths = enc["lengths"]
    return int(sum(lengths)) if isinstance(lengths, list) else int(lengths)


def encode_row(
    template: Any,
    src: SourceRow,
    source_file: str,
    answer_format: AnswerFormat = "auto",
    encode: Encode | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The row as the collator gets it (encoded, its carried fields, where it was read, its answer
    texts and how to read them), or why it is refused. ``source_file`` is the absolute path (the
    dump reader must find it whatever the cwd). ``encode`` replaces the template's own encode
    (the pre-pass measures image rows by size: :mod:`coordexp.rows.image_lengths`)."""
    if src.row is None:
        return None, src.problem or "refused"
    enc, reason = _encode(template, src.row, Path(source_file).parent, encode)
    if enc is None:
        return None, reason or "refused"
    for field in CARRIED_FIELDS:
        if field in src.row:
            enc[field] = src.row[field]
    enc[SOURCE_FILE_KEY] = source_file
    enc[SOURCE_LINE_KEY] = src.line
    enc[ANSWER_TEXTS_KEY], enc[ANSWER_FORMAT_KEY] = answer_texts(src.row), answer_format
    return enc, None
