"""Sample dumps: the source JSONL rows of an offending batch, looked up by ``base_idx``.

A loss spike is only actionable if one can see the data that caused it. The batch's
``instability_meta_json`` names every sample (dataset label, ``base_idx``); this module reads those
rows back from the dataset's JSONL file and writes them, with the step's context, to one file.

Choices:
- ``base_idx`` counts the non-blank lines of the source file from 0 (blank lines are not records
  to a JSONL loader).
- One sequential pass per source file per dump, stopping at the largest wanted index: dumps are
  rare, and a pass keeps no index that could go stale if the file changes.
- The dump file is written to a temporary file in the same folder, fsynced, then ``os.replace``d
  into place, so a reader (or a crash) never sees half a dump.
- A sample that cannot be found (no ``base_idx``, no source file for its label, unreadable file,
  index past the end) is skipped with one warning per kind and label/file; nothing raises except a
  malformed meta JSON (``ValueError``), which the monitor reports once.
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

from coordexp.monitor.events import encode_line

__all__ = ["SampleRef", "dump_batch_samples", "parse_meta", "read_rows", "write_atomic"]

WarnFn = Callable[..., bool]


@dataclass(frozen=True)
class SampleRef:
    """One sample named by the batch meta: its batch row, dataset label and source index."""

    row: int
    dataset: str
    base_idx: int | None
    sample_id: int | str | None
    length: int | None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_meta(meta_json: str) -> list[SampleRef]:
    """The samples of an ``instability_meta_json`` text, row by row.

    Raises ``ValueError`` when the text is not JSON or not a list of row objects with a
    ``samples`` list of objects. Odd field values inside a sample (a non-integer ``base_idx``)
    are tolerated and read as unknown.
    """
    data = json.loads(meta_json)
    if not isinstance(data, list):
        raise ValueError("instability meta must be a JSON list of rows")
    refs: list[SampleRef] = []
    for row_index, row in enumerate(data):
        samples = row.get("samples") if isinstance(row, dict) else None
        if not isinstance(samples, list):
            raise ValueError(f"instability meta row {row_index} has no 'samples' list")
        for sample in samples:
            if not isinstance(sample, dict):
                raise ValueError(f"instability meta row {row_index} has a sample that is not an object")
            sample_id = sample.get("sample_id")
            refs.append(
                SampleRef(
                    row=row_index,
                    dataset=str(sample.get("dataset", "default")),
                    base_idx=_opt_int(sample.get("base_idx")),
                    sample_id=sample_id if isinstance(sample_id, int | str) else None,
                    length=_opt_int(sample.get("length")),
                )
            )
    return refs


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


def dump_batch_samples(
    meta_json: str,
    source_files: Mapping[str, Path],
    out_path: Path,
    context: Mapping[str, Any],
    warn: WarnFn,
) -> int:
    """Write the batch's source rows to ``out_path``; return how many were written (0: no file).

    Each line is ``context`` plus ``row``, ``dataset``, ``base_idx``, ``sample_id``, ``length``,
    ``source_file`` and ``source`` (the parsed row) or ``source_raw`` (when not strict JSON).
    Raises ``ValueError`` for malformed meta and ``OSError`` when the dump itself cannot be written.
    """
    usable: list[tuple[SampleRef, Path]] = []
    wanted: dict[Path, set[int]] = {}
    for ref in parse_meta(meta_json):
        source = source_files.get(ref.dataset)
        if ref.base_idx is None:
            warn(
                "samples:no_base_idx",
                "Instability monitor: a sample of dataset %r has no base_idx; such samples are not dumped",
                ref.dataset,
            )
        elif source is None:
            warn(
                f"samples:no_source:{ref.dataset}",
                "Instability monitor: no source file for dataset label %r; its samples are not dumped",
                ref.dataset,
            )
        else:
            usable.append((ref, source))
            wanted.setdefault(source, set()).add(ref.base_idx)
    rows: dict[Path, dict[int, bytes]] = {}
    for source, indexes in wanted.items():
        try:
            rows[source] = read_rows(source, indexes)
        except OSError as exc:
            warn(
                f"samples:unreadable:{source}",
                "Instability monitor: cannot read source file %s (%s); its samples are not dumped",
                source,
                exc,
            )
    lines: list[bytes] = []
    for ref, source in usable:
        if source not in rows:
            continue  # unreadable, already warned
        raw = rows[source].get(ref.base_idx) if ref.base_idx is not None else None
        if raw is None:
            warn(
                f"samples:missing_index:{source}",
                "Instability monitor: base_idx %s not found in %s; such samples are not dumped",
                ref.base_idx,
                source,
            )
            continue
        record = {
            **context,
            "row": ref.row,
            "dataset": ref.dataset,
            "base_idx": ref.base_idx,
            "sample_id": ref.sample_id,
            "length": ref.length,
            "source_file": str(source),
            **_source_fields(raw),
        }
        lines.append(encode_line(record))
    if lines:
        write_atomic(out_path, lines)
    return len(lines)
