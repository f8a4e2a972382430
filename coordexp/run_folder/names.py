"""Every file and folder name of a run folder (``output_dir``), said once.

Written by ms-swift / transformers: :data:`LOGGING_FILE`, :data:`TRAINER_STATE_FILE` (in the run
folder and in each ``checkpoint-<step>``), :data:`TB_DIR`. Written by coordexp: :data:`CONFIG_FILE`
(the resolved training YAML), :data:`REFUSED_ROWS_FILE`, :data:`UNTYPED_ROWS_FILE`, and, in the
monitor's dump folder, :data:`EVENTS_FILE` and the sample dumps (:func:`sample_dump_name`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVENTS_FILE",
    "LOGGING_FILE",
    "REFUSED_ROWS_FILE",
    "SAMPLE_DUMP",
    "TB_DIR",
    "TRAINER_STATE_FILE",
    "UNTYPED_ROWS_FILE",
    "checkpoint_step_of",
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


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` of ``run_dir`` with the highest step that holds a trainer state."""
    found = [
        (step, p)
        for p in (run_dir.iterdir() if run_dir.is_dir() else ())
        if (step := checkpoint_step_of(p.name)) is not None and (p / TRAINER_STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None
