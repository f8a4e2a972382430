"""Every file and folder name of a run folder (``output_dir``), said once.

Written by ms-swift / transformers: :data:`LOGGING_FILE`, :data:`TRAINER_STATE_FILE` (in the run
folder and in each ``checkpoint-<step>``), :data:`TB_DIR`. Written by coordexp: :data:`CONFIG_FILE`
(the resolved training YAML), :data:`REFUSED_ROWS_FILE`, :data:`UNTYPED_ROWS_FILE`, and, in the
monitor's dump folder, :data:`EVENTS_FILE` and the sample dumps (:func:`sample_dump_name`); the
detection evaluation's folder per evaluation (:func:`detection_eval_dir`) with
:data:`DET_PREDICTIONS_FILE`, :data:`DET_METRICS_FILE`, :data:`DET_COCO_GT_FILE` and
:data:`DET_COCO_PREDS_FILE`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "DET_COCO_GT_FILE",
    "DET_COCO_PREDS_FILE",
    "DET_METRICS_FILE",
    "DET_PREDICTIONS_FILE",
    "EVENTS_FILE",
    "LOGGING_FILE",
    "REFUSED_ROWS_FILE",
    "SAMPLE_DUMP",
    "TB_DIR",
    "TRAINER_STATE_FILE",
    "UNTYPED_ROWS_FILE",
    "checkpoint_step_of",
    "detection_eval_dir",
    "newest_checkpoint",
    "sample_dump_name",
]

LOGGING_FILE: Final = "logging.jsonl"
TRAINER_STATE_FILE: Final = "trainer_state.json"
TB_DIR: Final = "runs"
CONFIG_FILE: Final = "coordexp_config.yaml"
REFUSED_ROWS_FILE: Final = "coordexp_refused_rows.jsonl"
UNTYPED_ROWS_FILE: Final = "coordexp_untyped_rows.jsonl"
EVENTS_FILE: Final = "events.jsonl"
DET_PREDICTIONS_FILE: Final = "predictions.jsonl"
DET_METRICS_FILE: Final = "metrics.json"
DET_COCO_GT_FILE: Final = "coco_gt.json"
DET_COCO_PREDS_FILE: Final = "coco_preds.json"

CHECKPOINT_DIR: Final = re.compile(r"checkpoint-(\d+)")
"""HF's checkpoint folders, ``checkpoint-<global step>``."""
SAMPLE_DUMP: Final = re.compile(r"step_(\d+)_(train|eval)(?:_\d+)?\.jsonl")
"""The monitor's sample dumps: ``step_<global step>_<mode>[_<n>].jsonl``."""


def checkpoint_step_of(name: str) -> int | None:
    """The step of a ``checkpoint-<step>`` folder name (None for any other name)."""
    match = CHECKPOINT_DIR.fullmatch(name)
    return int(match.group(1)) if match else None


def sample_dump_name(global_step: int, mode: str, suffix: str = "") -> str:
    """The file name of a sample dump (``suffix``: ``_<n>`` for a step's further dumps)."""
    return f"step_{global_step}_{mode}{suffix}.jsonl"


def detection_eval_dir(run_dir: Path, global_step: int) -> Path:
    """The detection evaluation's folder at ``global_step``: ``eval_detection/step_<7 digits>``."""
    return run_dir / "eval_detection" / f"step_{global_step:07d}"


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` of ``run_dir`` with the highest step that holds a trainer state."""
    found = [
        (step, p)
        for p in (run_dir.iterdir() if run_dir.is_dir() else ())
        if (step := checkpoint_step_of(p.name)) is not None and (p / TRAINER_STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None
