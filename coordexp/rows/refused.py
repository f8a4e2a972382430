"""Rows the loader refuses: where each one is (``file:line``), why, and whether the run may go on.

A refused row is left out of training, which changes what the model learns, so nothing is dropped
silently: every refusal is listed in ``<output_dir>/coordexp_refused_rows.jsonl`` (one record per
row: file, line, split, reason) and summarised on the console. ``data.max_refused_fraction`` says
how much of a split may be refused; above it (by default: any refused row) the run stops with a
:class:`DataError` naming the first refused row and the list. The folder is created only when there
is something to list, so a clean run leaves the output folder to the trainer.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coordexp.monitor.samples import write_atomic
from coordexp.run_folder.names import REFUSED_ROWS_FILE

_SHOWN_ON_CONSOLE = 5
_MAX_REASON_CHARS = 300


class DataError(Exception):
    """The training data cannot be used as given; the message is one line naming ``file:line``."""


def one_line(text: str) -> str:
    """``text`` on one line, cut to a readable length (exception messages can span pages)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON_CHARS else flat[: _MAX_REASON_CHARS - 3] + "..."


@dataclass(frozen=True)
class RefusedRow:
    file: str
    line: int
    split: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class RefusedRows:
    """The refusals of every split, with how many rows each split read (refused or kept)."""

    rows: list[RefusedRow] = field(default_factory=list)
    read: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)

    def begin(self, split: str) -> None:
        """Count ``split`` in, even when its files hold no row at all."""
        self.read[split] += 0

    def refuse(self, file: str, line: int, split: str, reason: str) -> None:
        self.rows.append(RefusedRow(file, line, split, one_line(reason)))
        self.read[split] += 1

    def keep(self, split: str) -> None:
        self.keep_many(split, 1)

    def keep_many(self, split: str, count: int) -> None:
        """``count`` rows of ``split`` kept (the pre-pass enters a split's kept rows at once)."""
        self.read[split] += count
        self.kept[split] += count

    def enforce(self, max_fraction: float, output_dir: Path, *, console: bool = True) -> None:
        """List the refusals (file + console); raise ``DataError`` when a split refused more than
        ``max_fraction`` of its rows or kept none."""
        summary_path = output_dir / REFUSED_ROWS_FILE
        if self.rows:
            lines = [(json.dumps(asdict(r), ensure_ascii=False) + "\n").encode("utf-8") for r in self.rows]
            write_atomic(summary_path, lines)
            if console:
                self._print_summary(summary_path)
        for split, n_read in self.read.items():
            refused = [r for r in self.rows if r.split == split]
            over = len(refused) > max_fraction * n_read
            if not (over or self.kept[split] == 0):
                continue
            if not refused:
                raise DataError(f"{split}: the data files hold no row")
            first = refused[0]
            raise DataError(
                f"{first.where}: {first.reason} ({len(refused)} of {n_read} {split} rows refused, "
                f"data.max_refused_fraction is {max_fraction:g}; every refused row: {summary_path})"
            )

    def _print_summary(self, summary_path: Path) -> None:
        by_split = ", ".join(
            f"{split} {sum(r.split == split for r in self.rows)} of {n}" for split, n in self.read.items()
        )
        print(f"[coordexp] refused rows: {by_split}; every refused row: {summary_path}")
        for row in self.rows[:_SHOWN_ON_CONSOLE]:
            print(f"[coordexp]   {row.where}: {row.reason}")
        if len(self.rows) > _SHOWN_ON_CONSOLE:
            print(f"[coordexp]   ... and {len(self.rows) - _SHOWN_ON_CONSOLE} more")
