"""``coordexp check-logs RUN_DIR``: check a finished (or running) run's logs against the catalog.

The runtime guard stops bad writes from coordexp, but not what the framework, a patched trainer or
an old package version put into the logs. This checks the logs themselves, like a live check of
emitted telemetry against a semantic-convention registry: every key declared, no per-dataset
bucket, finite numbers in range, and every key the run's config enables present in train and eval
form. Exit 0: clean; 1: violations; 2: the run folder or its config cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from coordexp.cli.run_dir import parse_run_args, read_run_or_say_why, run_dir_parser
from coordexp.contracts import classify_log_key, find_dataset_bucket, keys_written_under, metric_key_violation
from coordexp.contracts.catalog import EVAL_PREFIX, conditions_from_config, owner_under
from coordexp.contracts.metric_keys import metric_value_violation
from coordexp.generated.metric_catalog import (
    ALL_KEYS,
    COORDEXP_KEYS,
    DEPRECATED_ALIASES,
    EVAL_ONLY_KEYS,
    METRIC_SPECS,
    TRAIN_ONLY_KEYS,
)
from coordexp.run_folder.names import CONFIG_FILE, LOGGING_FILE, TRAINER_STATE_FILE
from coordexp.run_folder.reader import LogRecord, RunLogs, eval_configured

__all__ = [
    "CheckReport",
    "Violation",
    "bucket_like",
    "check_record",
    "check_run",
    "conditions_from_config",
    "main",
]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule; ``where`` locates it (``source#index (step, mode)``, or ``run`` for coverage)."""

    where: str
    key: str
    rule: str
    detail: str

    def line(self) -> str:
        return f"VIOLATION {self.where}: {self.key}: {self.rule}: {self.detail}"


@dataclass
class CheckReport:
    """Everything check-logs found; ``ok`` iff there is no violation."""

    run_dir: str
    sources: dict[str, int]
    config: str | None
    conditions: list[str]
    dataset_labels: list[str]
    expected: list[str]
    seen_train: list[str]
    seen_eval: list[str]
    missing_train: list[str]
    missing_eval: list[str]
    deprecated_seen: dict[str, str]
    notes: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def coverage_line(self) -> str:
        """One line in the spirit of a telemetry live check: how much of the registry was seen."""
        expected = set(self.expected)
        train_expected = expected - EVAL_ONLY_KEYS  # eval-only keys never appear in a train record
        eval_expected = expected - TRAIN_ONLY_KEYS  # nor train-only ones in an eval record
        train_total, total = len(COORDEXP_KEYS - EVAL_ONLY_KEYS), len(COORDEXP_KEYS)
        parts = [
            f"coverage: train {len(self.seen_train)}/{train_total} catalog keys seen "
            f"({len(train_expected & set(self.seen_train))}/{len(train_expected)} enabled), "
            f"eval {len(self.seen_eval)}/{total} "
            f"({len(eval_expected & set(self.seen_eval))}/{len(eval_expected)} enabled)"
        ]
        never = [*self.missing_train, *(EVAL_PREFIX + k for k in self.missing_eval)]
        parts.append("enabled but never seen: " + (", ".join(never) if never else "none"))
        if self.deprecated_seen:
            aliases = ", ".join(f"{old} -> {new}" for old, new in sorted(self.deprecated_seen.items()))
            parts.append(f"deprecated aliases seen (note): {aliases}")
        return "; ".join(parts)


def _drop_one_word(body: str) -> list[tuple[str, str]]:
    """``body`` without one ``/`` segment, or without one leading or trailing ``_`` word of a segment."""
    segments = body.split("/")
    out: list[tuple[str, str]] = []
    if len(segments) > 1:
        out += [("/".join(segments[:i] + segments[i + 1 :]), seg) for i, seg in enumerate(segments)]
    for i, seg in enumerate(segments):
        words = seg.split("_")
        if len(words) > 1:
            for kept, word in (("_".join(words[1:]), words[0]), ("_".join(words[:-1]), words[-1])):
                out.append(("/".join([*segments[:i], kept, *segments[i + 1 :]]), word))
    return out


def bucket_like(key: str) -> str | None:
    """The word that makes an undeclared key look like a per-dataset bucket of a catalog key.

    Works without knowing the run's dataset labels: ``lvis/token_acc``, ``coord_diag/coco/loss``,
    ``token_acc_coco`` and ``eval_coco_token_acc`` all become a catalog key once one word goes.
    """
    for rest, word in _drop_one_word(key.removeprefix(EVAL_PREFIX)):
        if rest and word and rest in ALL_KEYS:
            return word
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value_violation(base: str, value: object, owner: str, computed_by: str) -> tuple[str, str] | None:
    """``computed_by``: who computes the value in this run (the catalog's ``owner_when``), which
    differs from ``owner`` for a framework key coordexp computes under some condition."""
    spec = METRIC_SPECS[base]
    if _is_number(value):
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            return "non_finite", f"value {number} is not finite"
        found = (
            metric_key_violation(base, number)
            if owner == "coordexp"
            else metric_value_violation(base, number)
            if computed_by == "coordexp"
            else None
        )
        return None if found is None else (found.rule, found.detail)
    if spec.is_number:
        return "not_a_number", f"value {value!r} ({type(value).__name__}) is not a number"
    return None


def check_record(
    record: LogRecord, dataset_labels: Iterable[str] = (), conditions: Iterable[str] = ()
) -> list[Violation]:
    """The key and value rules for one record; ``conditions`` (of the run's config) decide who
    owns a key whose owner depends on them (the catalog's ``owner_when``)."""
    labels = tuple(dataset_labels)
    held = frozenset(conditions)
    out: list[Violation] = []
    where = record.where()
    for key, value in record.values.items():
        owner, base = classify_log_key(key)
        if owner == "unknown":
            label = find_dataset_bucket(key, labels)
            if label is not None:
                out.append(Violation(where, key, "per_dataset_bucket", f"carries dataset label {label!r}"))
            elif (word := bucket_like(key)) is not None:
                detail = f"undeclared, and looks like a per-dataset bucket {word!r} of a catalog key"
                out.append(Violation(where, key, "bucket_like", detail))
            else:
                out.append(Violation(where, key, "undeclared", "neither a catalog key nor eval_ + one"))
            continue
        if owner == "coordexp":
            eval_form = key != base
            if base in EVAL_ONLY_KEYS and record.mode == "train":
                out.append(Violation(where, key, "mode_mismatch", "an eval-only key in a train record"))
            elif base in TRAIN_ONLY_KEYS and record.mode == "eval":
                out.append(Violation(where, key, "mode_mismatch", "a train-only key in an eval record"))
            elif eval_form and record.mode == "train":
                out.append(Violation(where, key, "mode_mismatch", "eval_ key in a train record"))
            elif not eval_form and record.mode == "eval":
                out.append(Violation(where, key, "mode_mismatch", "train-mode key in an eval record"))
        found = _value_violation(base, value, owner, owner_under(base, held) or owner)
        if found is not None:
            out.append(Violation(where, key, *found))
    return out


def _seen(records: Iterable[LogRecord]) -> tuple[set[str], set[str]]:
    """coordexp keys seen in train records (bare) and in eval records (``eval_`` form)."""
    train: set[str] = set()
    evals: set[str] = set()
    for record in records:
        for key in record.values:
            owner, base = classify_log_key(key)
            if owner != "coordexp":
                continue
            if record.mode == "train" and key == base:
                train.add(base)
            elif record.mode == "eval" and key != base:
                evals.add(base)
    return train, evals


def check_run(logs: RunLogs, *, extra_labels: Iterable[str] = (), train_only: bool = False) -> CheckReport:
    """Check every record of a run and the coverage of the keys its config enables."""
    labels = sorted(set(logs.dataset_labels) | {x.strip().lower() for x in extra_labels if x.strip()})
    custom = logs.config.custom if logs.config is not None else None
    conditions = conditions_from_config(custom)
    expected = keys_written_under(conditions)
    seen_train, seen_eval = _seen(logs.records)
    has_eval = any(r.mode == "eval" for r in logs.records)
    if logs.config is not None and eval_configured(logs.config.raw) is False:
        train_only = True
    report = CheckReport(
        run_dir=str(logs.run_dir),
        sources=dict(logs.sources),
        config=None if logs.config is None else str(logs.config.path),
        conditions=sorted(conditions),
        dataset_labels=labels,
        expected=sorted(expected),
        seen_train=sorted(seen_train),
        seen_eval=sorted(seen_eval),
        missing_train=sorted(expected - EVAL_ONLY_KEYS - seen_train),
        missing_eval=[] if train_only or not has_eval else sorted(expected - TRAIN_ONLY_KEYS - seen_eval),
        deprecated_seen={k: v for k, v in DEPRECATED_ALIASES.items() if k in seen_train | seen_eval},
    )
    for problem in logs.problems:
        where = f"{problem.source}#{problem.index}"
        if problem.fatal:
            report.violations.append(Violation(where, "-", "unreadable", problem.message))
        else:
            report.notes.append(f"{where}: {problem.message}")
    for record in logs.records:
        report.violations += check_record(record, labels, conditions)
    for key in report.missing_train:
        report.violations.append(
            Violation("run", key, "missing", "enabled by the config, never logged in train")
        )
    for key in report.missing_eval:
        report.violations.append(
            Violation("run", EVAL_PREFIX + key, "missing_eval", "enabled by the config, never logged in eval")
        )
    if not train_only and not has_eval:
        report.violations.append(
            Violation(
                "run", "-", "no_eval_records", "no eval record: pass --train-only for a run without eval"
            )
        )
    if train_only:
        report.notes.append("the run does not evaluate (config or --train-only): eval_ keys not required")
    if logs.config is None:
        report.notes.append("no run config found: only the runtime keys are expected, features unchecked")
    else:
        for key in sorted((seen_train | seen_eval) - expected):
            report.violations.append(
                Violation("run", key, "not_enabled", "logged although the run config does not enable it")
            )
    return report


def _print_text(report: CheckReport) -> None:
    print(f"coordexp check-logs {report.run_dir}")
    print("sources: " + ", ".join(f"{name} ({count} records)" for name, count in report.sources.items()))
    enabled = ", ".join(c for c in report.conditions) or "-"
    print(f"config: {report.config or 'none'} (conditions assumed: {enabled})")
    print("dataset labels: " + (", ".join(report.dataset_labels) or "unknown"))
    for note in report.notes:
        print(f"note: {note}")
    for violation in report.violations:
        print(violation.line())
    print(report.coverage_line())
    print("result: OK" if report.ok else f"result: FAIL ({len(report.violations)} violations)")


def build_parser() -> argparse.ArgumentParser:
    parser = run_dir_parser(
        "check-logs",
        f"Check a run's {LOGGING_FILE}, {TRAINER_STATE_FILE} and TensorBoard scalars against the metric "
        "catalog. Exit 0: clean, 1: violations, 2: unreadable run folder or config.",
    )
    parser.add_argument("--config", help=f"the run's YAML (default: RUN_DIR/{CONFIG_FILE})")
    parser.add_argument(
        "--dataset-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="a dataset label of the run, for the per-dataset bucket rule (repeatable)",
    )
    parser.add_argument(
        "--train-only", action="store_true", help="the run had no evaluation: do not require eval_ keys"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_run_args(build_parser(), argv)
    logs = read_run_or_say_why("check-logs", args.run_dir, config_path=args.config)
    if logs is None:
        return 2
    report = check_run(logs, extra_labels=args.dataset_label, train_only=args.train_only)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_text(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
