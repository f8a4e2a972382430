"""Rows the token-type metrics cannot type, found at load, so that a feature never drops silently.

With ``custom.token_type_metrics`` enabled, every loaded row of an included dataset is typed once at
load (:func:`token_type_problem`, the same code the collator runs): a row whose answer text does not
parse (``data.answer_format``) or whose typed tokens are not its supervised labels is listed in
``<output_dir>/coordexp_untyped_rows.jsonl`` (one record per row: file, line, split, dataset, kind,
reason) with one console summary line. Such a row still trains (its labels come from its text); only
the token-type metrics leave it out. A row whose ``assistant_payload`` disagrees with its answer text
is listed in the same file with kind ``payload_mismatch`` (the text trains; the payload is not used).
When no train row of an included dataset can be typed, the run stops with a :class:`DataError`
naming the first such row and the reason (``coordexp train`` exits 2).

:func:`token_type_problem` is pure and takes picklable inputs (:class:`TypingSetup`), so it can run
in a loader's worker processes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from coordexp.answers import AnswerFormat, parse_answer
from coordexp.answers.compare import payload_disagreement
from coordexp.config.loading import held_section
from coordexp.generated.models.config import TokenTypeMetricsConfig
from coordexp.monitor.samples import write_atomic
from coordexp.rows.data import answer_texts
from coordexp.rows.enrichers import DEFAULT_EXCLUDE, DEFAULT_INCLUDE
from coordexp.rows.fields import PAYLOAD_FIELD, sample_dataset_label
from coordexp.rows.refused import DataError
from coordexp.rows.token_types import (
    dataset_included,
    resolve_suffix_ids,
    tail_special_ids,
    typing_outcome,
)
from coordexp.run_folder.names import UNTYPED_ROWS_FILE

UNTYPED: Final = "untyped"
PAYLOAD_MISMATCH: Final = "payload_mismatch"
_SHOWN_ON_CONSOLE = 5


@dataclass(frozen=True)
class TypingSetup:
    """What typing a row needs besides the row: picklable (a tokenizer, ids, strings)."""

    tokenizer: Any
    suffix: tuple[int, ...]
    specials: frozenset[int]
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    answer_format: AnswerFormat = "auto"

    def includes(self, label: str) -> bool:
        """Whether rows of dataset ``label`` get token types."""
        return dataset_included(label, self.include, self.exclude)

    @classmethod
    def for_run(cls, template: Any, token_types: Any, answer_format: AnswerFormat) -> TypingSetup | None:
        """The setup of a run, None when ``custom.token_type_metrics`` is absent or disabled.

        ``token_types``: the parsed section, or a mapping a caller holds (parsed into the model)."""
        if token_types is None:
            return None
        section = held_section(TokenTypeMetricsConfig, token_types)
        if not section.enabled:
            return None
        return cls(
            tokenizer=template.tokenizer,
            suffix=tuple(resolve_suffix_ids(template)),
            specials=tail_special_ids(template.tokenizer),
            include=section.include,
            exclude=section.exclude,
            answer_format=answer_format,
        )


def token_type_problem(
    setup: TypingSetup, row: Mapping[str, Any], labels: Sequence[int]
) -> tuple[str, str] | None:
    """``(kind, reason)`` when the row cannot be typed (``untyped``) or its ``assistant_payload``
    disagrees with its answer text (``payload_mismatch``); None when it is fine or not typed at all
    (its dataset is not included)."""
    if not setup.includes(sample_dataset_label(row)):
        return None
    texts = answer_texts(row)
    types, problem = typing_outcome(
        tokenizer=setup.tokenizer,
        labels=labels,
        answer_texts=texts,
        answer_format=setup.answer_format,
        suffix_tokens=list(setup.suffix),
        special_ids=setup.specials,
    )
    if types is None:
        return UNTYPED, problem or "cannot be typed"
    payload = row.get(PAYLOAD_FIELD)
    if payload is None:
        return None
    # The last turn is the answer a payload describes (a single-turn row's only one).
    mismatch = payload_disagreement(payload, parse_answer(texts[-1], setup.answer_format).objects)
    return None if mismatch is None else (PAYLOAD_MISMATCH, mismatch)


@dataclass(frozen=True)
class UntypedRow:
    file: str
    line: int
    split: str
    dataset: str
    kind: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class UntypedRows:
    """The untyped and payload-mismatch rows of every split, with checked / untyped counts per
    (split, dataset), filled from the pre-pass (``RowIndex.record_untyped``). ``setup`` None (token
    types off): nothing is checked."""

    setup: TypingSetup | None
    rows: list[UntypedRow] = field(default_factory=list)
    checked: Counter[tuple[str, str]] = field(default_factory=Counter)
    untyped: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, row: UntypedRow) -> None:
        self.rows.append(row)
        if row.kind == UNTYPED:
            self.untyped[row.split, row.dataset] += 1

    def enforce(self, output_dir: Path, *, console: bool = True) -> None:
        """List the rows (file + console); raise ``DataError`` when an included dataset's train rows
        are all untyped."""
        path = output_dir / UNTYPED_ROWS_FILE
        if self.rows:
            write_atomic(
                path, [(json.dumps(asdict(r), ensure_ascii=False) + "\n").encode() for r in self.rows]
            )
            if console:
                self._print_summary(path)
        for (split, label), n in self.checked.items():
            if split != "train" or self.untyped[split, label] < n:
                continue
            first = next(r for r in self.rows if r.kind == UNTYPED and (r.split, r.dataset) == (split, label))
            raise DataError(
                f"{first.where}: no token types: {first.reason} (none of the {n} train rows of dataset "
                f"{label!r} can be typed, and custom.token_type_metrics includes it; data.answer_format "
                f"is {self.setup.answer_format if self.setup else 'auto'}; every untyped row: {path})"
            )

    def _print_summary(self, path: Path) -> None:
        splits = dict.fromkeys(split for split, _ in self.checked)
        counts = ", ".join(
            f"{split} {sum(n for (s, _), n in self.untyped.items() if s == split)} of "
            f"{sum(n for (s, _), n in self.checked.items() if s == split)}"
            for split in splits
        )
        mismatched = sum(r.kind == PAYLOAD_MISMATCH for r in self.rows)
        also = (
            f"; {mismatched} row(s) whose assistant_payload disagrees with the answer text"
            if mismatched
            else ""
        )
        print(f"[coordexp] rows without token types: {counts}{also}; every row: {path}")
        for row in self.rows[:_SHOWN_ON_CONSOLE]:
            print(f"[coordexp]   {row.where}: {row.kind}: {row.reason}")
        if len(self.rows) > _SHOWN_ON_CONSOLE:
            print(f"[coordexp]   ... and {len(self.rows) - _SHOWN_ON_CONSOLE} more")


__all__ = [
    "PAYLOAD_MISMATCH",
    "UNTYPED",
    "TypingSetup",
    "UntypedRow",
    "UntypedRows",
    "token_type_problem",
]
