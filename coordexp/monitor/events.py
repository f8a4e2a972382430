"""The ``events.jsonl`` record of instability events, written so a killed process leaves it usable.

Why the write path looks the way it does:
- One record is one line, appended with ONE ``write(2)`` on a descriptor opened ``O_APPEND``, then
  ``fsync``: no buffered writer can leave half a line in user space, and a record that reached the
  file survives a crash of the process or the machine.
- Linux can still cut a write of a killed process short: the kernel checks for a fatal signal
  between the pages of a write, so a SIGKILL that lands inside a record's write (a window of
  microseconds) leaves a prefix of that record, with no trailing newline. Every newline-terminated
  line is therefore always a whole record; only an unterminated tail can be partial. The next
  ``JsonlAppender`` to write (a resumed run) drops such a torn tail before its first append, and
  ``read_events`` ignores it, so readers only ever see whole records.
- Strict JSON has no NaN or infinity. Non-finite floats are written as the strings ``"nan"``,
  ``"inf"`` and ``"-inf"`` (not ``null``: which one it was is the point of the record), and the
  encoder runs with ``allow_nan=False`` so an unsanitised value fails loudly here, not in a reader.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from coordexp.io.jsonl import iter_jsonl
from coordexp.monitor.observation import MonitorDecision, StepObservation

__all__ = [
    "META_JSON_MAX_CHARS",
    "JsonlAppender",
    "build_event",
    "encode_line",
    "json_float",
    "read_events",
]

META_JSON_MAX_CHARS: Final = 20_000
"""The batch's ``instability_meta_json`` is cut to this many characters in an event record."""

_TAIL_BLOCK: Final = 1 << 16


def json_float(value: float | None) -> float | str | None:
    """``value`` as a strict-JSON value: NaN/inf become ``"nan"``/``"inf"``/``"-inf"``."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def build_event(
    obs: StepObservation, decision: MonitorDecision, ema: float | None, *, time_unix: float
) -> dict[str, Any]:
    """The event record of one step. ``ema`` is the train-loss EMA the step was judged against
    (before this step's update); ``None`` before the first finite train loss."""
    meta = obs.meta_json
    return {
        "time_unix": time_unix,
        "mode": obs.mode,
        "reasons": list(decision.reasons),
        "guard": decision.guard,
        "stop": decision.stop,
        "global_step": obs.global_step,
        "epoch": json_float(obs.epoch),
        "loss": json_float(obs.loss),
        "ema": json_float(ema),
        "learning_rate": json_float(obs.learning_rate),
        "supervised_tokens": obs.supervised_tokens,
        "token_acc": json_float(obs.token_acc),
        "max_abs_logit": json_float(obs.max_abs_logit),
        "loss_finite": math.isfinite(obs.loss),
        "logits_finite": obs.logits_finite and math.isfinite(obs.max_abs_logit),
        "instability_meta_json": None if meta is None else meta[:META_JSON_MAX_CHARS],
        "instability_meta_json_chars": 0 if meta is None else len(meta),
        "instability_meta_json_truncated": meta is not None and len(meta) > META_JSON_MAX_CHARS,
    }


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One JSONL line (ASCII, sorted keys, no inner newline) for ``record``.

    Raises ``ValueError`` for a non-finite float (use ``json_float`` first).
    """
    text = json.dumps(record, allow_nan=False, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.encode("ascii") + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data``; one syscall unless the kernel returns a short count (disk full, signals)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _drop_torn_tail(fd: int) -> int:
    """Truncate an unterminated last line (a record cut short by a kill); return bytes dropped."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    keep, end = 0, size
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    os.ftruncate(fd, keep)
    return size - keep


def _fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class JsonlAppender:
    """Appends whole lines to one JSONL file, durably; see the module docstring for the why.

    Assumes a single writer per file (the main process). Opens the file per append: events are
    rare, and this keeps working if someone moves or deletes the file during the run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.dropped_tail_bytes = 0
        self._tail_ok = False

    def append(self, line: bytes) -> None:
        """Append one newline-terminated line and fsync it. Raises ``OSError`` on disk errors."""
        if not line.endswith(b"\n") or b"\n" in line[:-1]:
            raise ValueError("a JSONL line must end with its only newline")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not self._tail_ok:
                self.dropped_tail_bytes += _drop_torn_tail(fd)
            # A failed or short write below may leave a torn tail: re-check before the next append.
            self._tail_ok = False
            _write_all(fd, line)
            os.fsync(fd)
            self._tail_ok = True
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)


def read_events(path: str | Path) -> list[Any]:
    """Parse every newline-terminated line of ``path``; an unterminated torn tail is ignored.

    Raises :class:`~coordexp.io.jsonl.JsonlError` (a ``ValueError`` naming ``file:line``) when a
    complete line is not JSON.
    """
    return [value for _, value in iter_jsonl(path, complete_only=True)]
