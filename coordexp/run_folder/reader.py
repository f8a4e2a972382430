"""Read an ms-swift run folder into typed metric records, whichever log files the run left.

A run can be checked or plotted after the fact only from what it wrote: ``logging.jsonl``
(ms-swift, one JSON object per line, the last line possibly torn by a killed process),
``trainer_state.json`` (the HF ``log_history``; only when a checkpoint or the final state was
saved) and the TensorBoard event files under ``runs/``. They carry the same records in three
shapes, so they are normalised here to one :class:`LogRecord` type keyed by the train-or-eval key
names that ``logging.jsonl`` uses (TensorBoard's ``eval/x`` becomes ``eval_x``). The resolved
training YAML (``coordexp_config.yaml``) says which features were on, hence which keys to expect.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from coordexp.config import ConfigError, Stage1CustomConfig, load_custom_config
from coordexp.contracts.catalog import EVAL_PREFIX
from coordexp.contracts.modes import Mode
from coordexp.generated import metric_keys as K
from coordexp.io.jsonl import iter_jsonl, read_jsonl_lines
from coordexp.rows.fields import sample_dataset_label
from coordexp.run_folder.names import (
    CONFIG_FILE,
    LOGGING_FILE,
    TB_DIR,
    TRAINER_STATE_FILE,
    newest_checkpoint,
)

__all__ = [
    "SUMMARY_KEYS",
    "LogMode",
    "LogRecord",
    "ReadProblem",
    "RunConfig",
    "RunDirError",
    "RunLogs",
    "dataset_labels_from_config",
    "eval_configured",
    "find_trainer_state",
    "read_logging_jsonl",
    "read_run",
    "read_run_config",
    "read_tensorboard",
    "read_trainer_state",
    "record_mode",
    "tb_tag_to_key",
]


LogMode = Literal[Mode, "summary"]
"""A logged record's mode: a step's, or the end-of-training summary."""

# Keys only the end-of-training summary record carries (HF's ``train()`` metrics).
SUMMARY_KEYS: frozenset[str] = frozenset(
    {K.TRAIN_RUNTIME, K.TRAIN_SAMPLES_PER_SECOND, K.TRAIN_STEPS_PER_SECOND, K.TOTAL_FLOS, K.TRAIN_LOSS}
)
# Keys every HF evaluation record carries (speed metrics of ``evaluate``).
_EVAL_MARKERS: frozenset[str] = frozenset(
    {K.EVAL_RUNTIME, K.EVAL_SAMPLES_PER_SECOND, K.EVAL_STEPS_PER_SECOND}
)
# Rows read per data file when looking for dataset labels: enough to see the labels, cheap on big files.
_DATA_ROWS_SCANNED = 2000


class RunDirError(Exception):
    """The run folder (or its config) cannot be read at all; the CLIs exit 2 on it."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One logged record: where it came from, when, in which mode, and its key -> value map.

    ``index`` is the 1-based line of ``logging.jsonl``, the position in ``log_history`` or the
    record's ordinal in a TensorBoard file, so a violation can be located in the file.
    """

    source: str
    index: int
    step: int | None
    mode: LogMode
    values: Mapping[str, Any]

    def where(self) -> str:
        step = "?" if self.step is None else str(self.step)
        return f"{self.source}#{self.index} (step {step}, {self.mode})"


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """A part of a log that could not be read; a torn last line is only a note, not a problem."""

    source: str
    index: int
    message: str
    fatal: bool = True


@dataclass(frozen=True, slots=True)
class RunConfig:
    """The run's resolved YAML: the raw mapping, the validated ``custom:`` block and its path."""

    path: Path
    raw: Mapping[str, Any]
    custom: Stage1CustomConfig


@dataclass
class RunLogs:
    """Everything read from a run folder."""

    run_dir: Path
    records: list[LogRecord] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    problems: list[ReadProblem] = field(default_factory=list)
    config: RunConfig | None = None
    dataset_labels: frozenset[str] = frozenset()

    def records_from(self, source: str) -> list[LogRecord]:
        return [r for r in self.records if r.source == source]

    def preferred_source(self) -> str | None:
        """The most complete single view: logging.jsonl, else trainer_state, else TensorBoard
        (``sources`` is filled in that order)."""
        return next((name for name, count in self.sources.items() if count), None)


def record_mode(values: Mapping[str, Any]) -> LogMode:
    """Tell the three record kinds apart by the keys HF always puts in them."""
    if any(k in values for k in SUMMARY_KEYS):
        return "summary"
    if any(k in values for k in _EVAL_MARKERS) or K.EVAL_LOSS in values:
        return "eval"
    if values and all(k.startswith(EVAL_PREFIX) or k in (K.EPOCH, K.STEP) for k in values):
        return "eval"
    return "train"


def _progress_step(values: Mapping[str, Any]) -> int | None:
    """The optimizer step: ``step`` (log_history) or the numerator of ms-swift's "2/4" progress."""
    step = values.get(K.STEP)
    if isinstance(step, int | float) and not isinstance(step, bool) and math.isfinite(step):
        return int(step)
    progress = values.get(K.GLOBAL_STEP_MAX_STEPS)
    if isinstance(progress, str):
        match = re.match(r"\s*(\d+)\s*/", progress)
        if match:
            return int(match.group(1))
    return None


def read_logging_jsonl(path: Path) -> tuple[list[LogRecord], list[ReadProblem]]:
    """Parse ``logging.jsonl``; a torn LAST line (a killed run) is skipped with a non-fatal note."""
    records: list[LogRecord] = []
    problems: list[ReadProblem] = []
    for line in read_jsonl_lines(path, decode_errors="replace"):
        values, error, number = line.value, line.error, line.number
        if error is not None:
            detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            message = "torn last line skipped" if line.last else f"not JSON: {detail}"
            problems.append(ReadProblem(LOGGING_FILE, number, message, fatal=not line.last))
            continue
        if not isinstance(values, dict):
            problems.append(ReadProblem(LOGGING_FILE, number, f"not a JSON object: {type(values).__name__}"))
            continue
        records.append(LogRecord(LOGGING_FILE, number, _progress_step(values), record_mode(values), values))
    return records, problems


def find_trainer_state(run_dir: Path) -> Path | None:
    """``RUN_DIR/trainer_state.json``, else the one in the newest ``checkpoint-<step>``."""
    direct = run_dir / TRAINER_STATE_FILE
    if direct.is_file():
        return direct
    newest = newest_checkpoint(run_dir)
    return None if newest is None else newest / TRAINER_STATE_FILE


def read_trainer_state(path: Path, source: str) -> tuple[list[LogRecord], list[ReadProblem]]:
    """The ``log_history`` of a ``trainer_state.json`` as records."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [], [ReadProblem(source, 0, f"unreadable: {exc}")]
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        return [], [ReadProblem(source, 0, "no log_history list")]
    records: list[LogRecord] = []
    problems: list[ReadProblem] = []
    for i, values in enumerate(history):
        if not isinstance(values, dict):
            problems.append(ReadProblem(source, i, f"log_history entry is not an object: {values!r}"))
            continue
        records.append(LogRecord(source, i, _progress_step(values), record_mode(values), values))
    return records, problems


def tb_tag_to_key(tag: str) -> tuple[str, LogMode]:
    """HF's TensorBoard callback writes ``train/x`` for ``x`` and ``eval/x`` for ``eval_x``."""
    if tag.startswith("eval/"):
        return EVAL_PREFIX + tag[len("eval/") :], "eval"
    key = tag[len("train/") :] if tag.startswith("train/") else tag
    return key, "summary" if key in SUMMARY_KEYS else "train"


def read_tensorboard(run_dir: Path) -> dict[str, list[LogRecord]]:
    """Scalars of every event file under ``RUN_DIR/runs``, one record per (mode, step) and file.

    Text summaries (``args/text_summary``) are tensors, not scalars, and are not read.
    """
    root = run_dir / TB_DIR
    if not root.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[LogRecord]] = {}
    for event_file in sorted(root.rglob("events.out.tfevents.*")):
        source = f"tensorboard:{event_file.relative_to(run_dir).as_posix()}"
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        grouped: dict[tuple[int, LogMode], dict[str, float]] = {}
        for tag in acc.Tags().get("scalars", []):
            key, mode = tb_tag_to_key(tag)
            for event in acc.Scalars(tag):
                grouped.setdefault((int(event.step), mode), {})[key] = float(event.value)
        order = {"train": 0, "eval": 1, "summary": 2}
        ordered = sorted(grouped.items(), key=lambda item: (item[0][0], order[item[0][1]]))
        out[source] = [
            LogRecord(source, i, step, mode, values) for i, ((step, mode), values) in enumerate(ordered)
        ]
    return out


def read_run_config(path: Path) -> RunConfig:
    """Parse the resolved YAML and validate its ``custom:`` block (bad config: RunDirError)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunDirError(f"cannot read the run config {path}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RunDirError(f"the run config {path} is not a mapping")
    try:
        custom = load_custom_config(raw.get("custom"))
    except ConfigError as exc:
        raise RunDirError(f"invalid custom: block in {path}:\n{exc}") from None
    return RunConfig(path, raw, custom)


def _data_paths(raw: Mapping[str, Any]) -> Iterable[str]:
    """Data files the YAML names: ``data.train`` / ``data.val`` (coordexp's training YAML), or
    ms-swift's ``dataset`` / ``val_dataset`` (``path#N`` sample-count suffix dropped)."""
    data = raw.get("data")
    sections = dict(data) if isinstance(data, Mapping) else {}
    values = [sections.get("train"), sections.get("val"), raw.get("dataset"), raw.get("val_dataset")]
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                yield item.split("#", 1)[0]


def eval_configured(raw: Mapping[str, Any]) -> bool | None:
    """Whether the run evaluates: False for an empty ``data.val`` or ``eval_strategy: no``;
    None when the YAML does not say (then eval records are required unless told otherwise)."""
    training = raw.get("training")
    if isinstance(training, Mapping) and str(training.get("eval_strategy", "")).lower() == "no":
        return False
    data = raw.get("data")
    if isinstance(data, Mapping) and "val" in data:
        return bool(data.get("val"))
    return None


def dataset_labels_from_config(config: RunConfig) -> frozenset[str]:
    """Dataset labels the run knows of: the token-metric include/exclude lists, and the label
    (``sample_dataset_label``) of the first rows of the data files the YAML names (when still on disk)."""
    labels: set[str] = set()
    ttm = config.custom.token_type_metrics
    if ttm is not None:
        labels.update(str(x) for x in (*ttm.include, *ttm.exclude))
    for entry in _data_paths(config.raw):
        path = Path(entry)
        if not path.is_absolute() and not path.is_file():
            path = config.path.parent / path
        if not path.is_file() or path.suffix not in (".jsonl", ".json"):
            continue
        try:
            for number, row in iter_jsonl(path, skip_bad=True):
                if number > _DATA_ROWS_SCANNED:
                    break
                if isinstance(row, dict):
                    labels.add(sample_dataset_label(row))  # the label the collator gives the row
        except OSError:
            continue
    return frozenset(x.strip().lower() for x in labels if x.strip())


def _nested_runs_hint(run_dir: Path) -> str:
    nested = sorted(p.parent for p in run_dir.glob(f"*/{LOGGING_FILE}"))
    if not nested:
        return ""
    return " (did you mean " + " or ".join(str(p) for p in nested[:3]) + "?)"


def read_run(run_dir: str | Path, *, config_path: str | Path | None = None) -> RunLogs:
    """Read every log source of a run folder, plus its config.

    Raises :class:`RunDirError` when the folder is missing, holds no log at all, or its config is
    invalid: callers cannot say anything useful about such a run.
    """
    root = Path(run_dir)
    if not root.exists():
        raise RunDirError(f"run folder {root} does not exist")
    if not root.is_dir():
        raise RunDirError(f"{root} is not a folder")
    logs = RunLogs(run_dir=root)
    try:
        jsonl = root / LOGGING_FILE
        if jsonl.is_file():
            records, problems = read_logging_jsonl(jsonl)
            logs.records += records
            logs.problems += problems
            logs.sources[LOGGING_FILE] = len(records)
        state = find_trainer_state(root)
        if state is not None:
            source = state.relative_to(root).as_posix()
            records, problems = read_trainer_state(state, source)
            logs.records += records
            logs.problems += problems
            logs.sources[source] = len(records)
        for source, records in read_tensorboard(root).items():
            logs.records += records
            logs.sources[source] = len(records)
    except OSError as exc:
        raise RunDirError(f"cannot read {root}: {exc}") from None
    if not logs.sources:
        raise RunDirError(
            f"no {LOGGING_FILE}, {TRAINER_STATE_FILE} or TensorBoard events ({TB_DIR}/) in {root}"
            + _nested_runs_hint(root)
        )
    if not any(logs.sources.values()):  # e.g. a run killed before its first log step
        unreadable = {p.source for p in logs.problems if p.fatal}
        found = ", ".join(
            f"{name} has no readable record" if name in unreadable else f"{name} is empty"
            for name in logs.sources
        )
        raise RunDirError(f"no log records in {root}: {found} (did the run log a step?)")
    cfg = Path(config_path) if config_path is not None else root / CONFIG_FILE
    if config_path is not None and not cfg.is_file():
        raise RunDirError(f"config file {cfg} does not exist")
    if cfg.is_file():
        logs.config = read_run_config(cfg)
        logs.dataset_labels = dataset_labels_from_config(logs.config)
    return logs
