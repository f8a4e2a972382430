"""Resuming a run: which checkpoint (``training.resume_from_checkpoint``) and one series of logs.

``resume_from_checkpoint`` has HF's meaning: a checkpoint folder, or ``true`` for the newest
``checkpoint-<step>`` in ``output_dir``. It is resolved before anything is loaded, so a wrong value
is a one-line config error, not a traceback after the model load. ms-swift's
``resume_only_model`` is honoured by ms-swift's trainer (weights only: no optimizer, scheduler or
RNG state); with ``ignore_data_skip`` as well, ms-swift expects the weights to be loaded by its own
pipeline, which this entry does not do, so that pair is refused (point ``model.path`` at the
checkpoint instead).

The logs. A run killed after its checkpoint at step N has logged steps past N that the resumed run
logs again; appended to, ``logging.jsonl`` (ms-swift) and the monitor's ``events.jsonl`` and sample
dumps would hold two series for those steps. The resumed run supersedes them: before training
continues, the main process drops every record the checkpoint does not cover. What a checkpoint at
step N covers (HF order within a step: train micro-batches, log, evaluate, save):

- ``logging.jsonl``: records of steps <= N (step from ms-swift's ``global_step/max_steps``);
- monitor events and dumps of train micro-batches with ``global_step`` < N (a train micro-batch is
  observed before its optimizer step, so it carries the number of steps already done), and of
  evaluations with ``global_step`` <= N.

TensorBoard files are left alone: the resumed run writes a new event file from step N + 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordexp.config import ConfigError
from coordexp.io.jsonl import read_jsonl_lines
from coordexp.run_folder.names import (
    EVENTS_FILE,
    LOGGING_FILE,
    SAMPLE_DUMP,
    TRAINER_STATE_FILE,
    newest_checkpoint,
)

__all__ = [
    "checkpoint_step",
    "names_a_folder",
    "resolve_resume_checkpoint",
    "resume_setting_errors",
    "supersede_logs_after",
]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", "none", ""})


_KEY = "training.resume_from_checkpoint"


def _as_flag(value: object) -> object:
    """``true``/``false`` spelled as a string (HF's argument parser hands strings through) as a bool."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return value


def names_a_folder(value: object) -> bool:
    """Whether a ``resume_from_checkpoint`` value is a path (to resolve against the YAML's folder)."""
    return isinstance(_as_flag(value), str)


def resume_setting_errors(training: Mapping[str, Any]) -> list[str]:
    """The config-load check: :func:`resolve_resume_checkpoint`'s error as a line, if any."""
    try:
        resolve_resume_checkpoint(training)
    except ConfigError as exc:
        return [str(exc)]
    return []


def resolve_resume_checkpoint(training: Mapping[str, Any]) -> Path | None:
    """The checkpoint folder to resume from (``training`` is the YAML's ``training:`` section), or
    None for a fresh run. Raises ConfigError (one line) for a value that names no usable checkpoint.
    """
    value = _as_flag(training.get("resume_from_checkpoint"))
    if value is None or value is False:
        return None
    if training.get("resume_only_model") and training.get("ignore_data_skip"):
        raise ConfigError(
            f"{_KEY}: resume_only_model with ignore_data_skip is not supported by coordexp train "
            "(ms-swift then expects its own pipeline to load the weights); set model.path to the "
            "checkpoint instead"
        )
    if value is True:
        output_dir = training.get("output_dir")
        if not output_dir:
            raise ConfigError(f"{_KEY}: true needs training.output_dir (where the checkpoints are)")
        found = newest_checkpoint(Path(output_dir))
        if found is None:
            raise ConfigError(f"{_KEY}: true, but {output_dir} has no checkpoint-<step> folder")
        return found
    if not isinstance(value, str):
        raise ConfigError(f"{_KEY}: must be a checkpoint folder or true, got {value!r}")
    path = Path(value).expanduser()
    if not (path / TRAINER_STATE_FILE).is_file():
        raise ConfigError(f"{_KEY}: {value} is not a checkpoint folder (no {TRAINER_STATE_FILE})")
    return path


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint was saved at (its ``trainer_state.json``)."""
    state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    return int(state["global_step"])


def supersede_logs_after(step: int, output_dir: Path, dump_dir: Path | None) -> dict[str, int]:
    """Drop what a run logged after its checkpoint at ``step`` (main process, before resuming).

    Returns how many records or files were dropped, by file.
    """
    dropped: dict[str, int] = {}
    logging_jsonl = output_dir / LOGGING_FILE
    if logging_jsonl.is_file():
        dropped[str(logging_jsonl)] = _keep_lines(logging_jsonl, lambda r: _logged_step(r) <= step)
    if dump_dir is not None:
        events = dump_dir / EVENTS_FILE
        if events.is_file():
            dropped[str(events)] = _keep_lines(
                events, lambda r: _covered(r.get("mode"), r.get("global_step"), step)
            )
        for dump in sorted(dump_dir.glob("step_*.jsonl")) if dump_dir.is_dir() else []:
            match = SAMPLE_DUMP.fullmatch(dump.name)
            if match and not _covered(match.group(2), int(match.group(1)), step):
                dump.unlink()
                dropped[str(dump)] = 1
    return {k: v for k, v in dropped.items() if v}


def _covered(mode: Any, global_step: Any, step: int) -> bool:
    """Whether a monitor record of ``mode`` at ``global_step`` came before the save at ``step``."""
    if not isinstance(global_step, int):
        return True  # not ours to judge: keep
    return global_step < step if mode == "train" else global_step <= step


def _logged_step(record: Mapping[str, Any]) -> int:
    step = record.get("step")
    if isinstance(step, int):
        return step
    progress = record.get("global_step/max_steps")
    match = re.match(r"\s*(\d+)\s*/", progress) if isinstance(progress, str) else None
    return int(match.group(1)) if match else -1  # no step: keep


def _keep_lines(path: Path, keep: Any) -> int:
    """Rewrite ``path`` with the JSON lines ``keep`` accepts (a torn last line goes too); return the
    number of lines dropped. Written to a temporary file first, then renamed over the original."""
    kept: list[bytes] = []
    dropped = 0
    for line in read_jsonl_lines(path):
        if line.error is not None and not line.terminated:  # unterminated tail of a killed write
            dropped += 1
        elif line.error is None and isinstance(line.value, Mapping) and not keep(line.value):
            dropped += 1
        else:
            kept.append(line.raw)  # a complete line that is not JSON is not ours to repair
    if dropped:
        tmp = path.with_name(path.name + ".resume-tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    return dropped
