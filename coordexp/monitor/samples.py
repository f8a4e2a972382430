"""Sample dumps: the source JSONL rows of an offending batch, read back from where they were loaded.

A loss spike is only actionable if one can see the data that caused it. The batch's
``instability_meta_json`` names every sample: its ``source_file`` and 1-based ``source_line``, kept
from loading (``coordexp.rows.data``), plus its dataset label and the row's own ``base_idx`` /
``sample_id`` (informational). This module reads those lines back and writes them, with the step's
context, to one file.

Choices:
- The position is the loader's, never a field of the row: a row's ``base_idx`` is whatever its
  author put there. Only a sample WITHOUT a source position (meta built by other code) falls back to
  the ``source_files`` label -> file mapping, where ``base_idx`` counts the file's non-blank lines
  from 0 (blank lines are not records to a JSONL loader).
- One sequential pass per source file per dump, stopping at the last wanted line: dumps are
  rare, and a pass keeps no index that could go stale if the file changes.
- The dump file is written to a temporary file in the same folder, fsynced, then ``os.replace``d
  into place, so a reader (or a crash) never sees half a dump.
- The meta is read with the model generated from ``schemas/instability_meta.schema.json`` (the
  contract the enricher writes and the batch guard checks), never picked apart by hand.
- A sample that cannot be found (no position, no source file for its label, unreadable file,
  line or index past the end) is skipped with one warning per kind and label/file; nothing raises
  except meta that is not JSON matching that schema (``ValueError``), which the monitor reports once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordexp.generated.models.instability_meta import InstabilityMeta
from coordexp.monitor.events import encode_line

__all__ = ["SampleRef", "dump_batch_samples", "parse_meta", "read_lines", "read_rows", "write_atomic"]

WarnFn = Callable[..., bool]


@dataclass(frozen=True)
class SampleRef:
    """One sample named by the batch meta: its batch row, dataset label, source position and ids."""

    row: int
    dataset: str
    base_idx: int | None
    sample_id: int | str | None
    length: int | None
    source_file: str | None = None
    source_line: int | None = None


def parse_meta(meta_json: str) -> list[SampleRef]:
    """The samples of an ``instability_meta_json`` text, row by row.

    Raises ``ValueError`` when the text is not JSON or does not match
    ``instability_meta.schema.json`` (checked strictly by the generated ``InstabilityMeta`` model:
    a row without a ``samples`` list, a sample that is not an object, a non-integer ``base_idx``).
    """
    try:
        rows = InstabilityMeta.model_validate_json(meta_json, strict=True).root
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "/".join(str(p) for p in first["loc"]) or "<root>"
        raise ValueError(
            f"instability meta does not match instability_meta.schema.json at {where}: {first['msg']}"
        ) from exc
    return [
        SampleRef(
            row=row_index,
            dataset=sample.dataset,
            base_idx=sample.base_idx,
            sample_id=sample.sample_id,
            length=sample.length,
            source_file=sample.source_file or None,
            source_line=sample.source_line,
        )
        for row_index, row in enumerate(rows)
        for sample in row.samples
    ]


def read_lines(path: Path, wanted: set[int]) -> dict[int, bytes]:
    """The non-blank lines of ``path`` at the wanted 1-based line numbers (others are absent)."""
    found: dict[int, bytes] = {}
    wanted = {n for n in wanted if n >= 1}
    if not wanted:
        return found
    last = max(wanted)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if number in wanted and line.strip():
                found[number] = line.rstrip(b"\r\n")
            if number >= last:
                break
    return found


def read_rows(path: Path, wanted: set[int]) -> dict[int, bytes]:
    """The lines of ``path`` at the wanted non-blank-line indexes (missing ones are absent)."""
    found: dict[int, bytes] = {}
    wanted = {i for i in wanted if i >= 0}
    if not wanted:
        return found
    last, index = max(wanted), 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            if index in wanted:
                found[index] = line.rstrip(b"\r\n")
            if index >= last:
                break
            index += 1
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _source_fields(raw: bytes) -> dict[str, Any]:
    """``{"source": row}`` for a strict-JSON row, else ``{"source_raw": text}`` (never raises)."""
    try:
        return {"source": json.loads(raw, parse_constant=_reject_constant)}
    except ValueError:
        return {"source_raw": raw.decode("utf-8", errors="replace")}


def write_atomic(path: Path, lines: list[bytes]) -> None:
    """Write ``lines`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


@dataclass(frozen=True)
class _Where:
    """Where one sample's row is: a 1-based line (``by_line``) or a non-blank-line index of ``path``."""

    path: Path
    position: int
    by_line: bool


def _locate(ref: SampleRef, source_files: Mapping[str, Path], warn: WarnFn) -> _Where | None:
    if ref.source_file is not None and ref.source_line is not None:
        return _Where(Path(ref.source_file), ref.source_line, by_line=True)
    # Meta without a source position: the caller's label -> file mapping and the row's base_idx.
    source = source_files.get(ref.dataset)
    if ref.base_idx is None:
        warn(
            "samples:no_position",
            "Instability monitor: a sample of dataset %r has neither a source position nor a "
            "base_idx; such samples are not dumped",
            ref.dataset,
        )
        return None
    if source is None:
        warn(
            f"samples:no_source:{ref.dataset}",
            "Instability monitor: a sample of dataset %r has no source position and no source file "
            "is given for its label; its samples are not dumped",
            ref.dataset,
        )
        return None
    return _Where(source, ref.base_idx, by_line=False)


def _read(where: list[_Where], warn: WarnFn) -> dict[tuple[Path, bool], dict[int, bytes]]:
    """The wanted lines of each file, by (file, by_line); unreadable files are absent (warned)."""
    wanted: dict[tuple[Path, bool], set[int]] = {}
    for w in where:
        wanted.setdefault((w.path, w.by_line), set()).add(w.position)
    found: dict[tuple[Path, bool], dict[int, bytes]] = {}
    for (path, by_line), positions in wanted.items():
        try:
            found[(path, by_line)] = (read_lines if by_line else read_rows)(path, positions)
        except OSError as exc:
            warn(
                f"samples:unreadable:{path}",
                "Instability monitor: cannot read source file %s (%s); its samples are not dumped",
                path,
                exc,
            )
    return found


def dump_batch_samples(
    meta_json: str,
    source_files: Mapping[str, Path],
    out_path: Path,
    context: Mapping[str, Any],
    warn: WarnFn,
) -> int:
    """Write the batch's source rows to ``out_path``; return how many were written (0: no file).

    Each line is ``context`` plus ``row``, ``dataset``, ``base_idx``, ``sample_id``, ``length``,
    ``source_file``, ``source_line`` and ``source`` (the parsed row) or ``source_raw`` (when not
    strict JSON). ``source_files`` (dataset label -> file) is only read for samples without a source
    position. Raises ``ValueError`` for malformed meta and ``OSError`` when the dump itself cannot be
    written.
    """
    located = [(ref, _locate(ref, source_files, warn)) for ref in parse_meta(meta_json)]
    usable = [(ref, where) for ref, where in located if where is not None]
    found = _read([where for _, where in usable], warn)
    lines: list[bytes] = []
    for ref, where in usable:
        rows = found.get((where.path, where.by_line))
        if rows is None:
            continue  # unreadable, already warned
        raw = rows.get(where.position)
        if raw is None:
            warn(
                f"samples:missing:{where.path}",
                "Instability monitor: %s %s not found in %s (file changed since loading?); such "
                "samples are not dumped",
                "line" if where.by_line else "base_idx",
                where.position,
                where.path,
            )
            continue
        record = {
            **context,
            "row": ref.row,
            "dataset": ref.dataset,
            "base_idx": ref.base_idx,
            "sample_id": ref.sample_id,
            "length": ref.length,
            "source_file": str(where.path),
            "source_line": where.position if where.by_line else None,
            **_source_fields(raw),
        }
        lines.append(encode_line(record))
    if lines:
        write_atomic(out_path, lines)
    return len(lines)
