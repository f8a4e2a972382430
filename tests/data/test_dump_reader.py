"""The dump reader: a sample's source position wins over every user field; a position that no longer
holds a row is skipped with one warning."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from coordexp.monitor import InstabilityMonitor, StepObservation


def _meta(*samples: dict[str, Any]) -> str:
    full = [{"dataset": "lvis", "base_idx": None, "sample_id": None, "length": 5, **s} for s in samples]
    return json.dumps([{"num_samples": len(full), "total_length": 5 * len(full), "samples": full}])


def _observe(monitor: InstabilityMonitor, meta: str, step: int = 0) -> list[dict[str, Any]]:
    monitor.observe(StepObservation(mode="train", global_step=step, loss=math.nan, meta_json=meta))
    path = monitor.dump_dir / f"step_{step}_train.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_source_position_wins_over_label_map_and_base_idx(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a"}\n\n{"id": "b"}\n{"id": "c"}\n')
    decoy = tmp_path / "decoy.jsonl"
    decoy.write_text('{"id": "decoy"}\n' * 5)
    monitor = InstabilityMonitor(
        {"dump_samples": True}, output_dir=tmp_path / "run", source_files={"lvis": decoy}
    )
    meta = _meta(
        {"source_file": str(rows), "source_line": 3, "base_idx": 0, "sample_id": "b"},
        {"source_file": str(rows), "source_line": 4, "base_idx": 99},
        {"base_idx": 1},  # no position: the label map and base_idx, the documented fallback
    )
    records = _observe(monitor, meta)
    assert [(r["source"]["id"], r["source_line"], r["base_idx"]) for r in records] == [
        ("b", 3, 0),
        ("c", 4, 99),
        ("decoy", None, 1),
    ]
    assert records[0]["source_file"] == str(rows) and records[0]["sample_id"] == "b"


def test_a_position_without_a_row_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a"}\n\n{"id": "b"}\n')
    monitor = InstabilityMonitor({"dump_samples": True}, output_dir=tmp_path / "run")
    meta = _meta(
        {"source_file": str(rows), "source_line": 1},
        {"source_file": str(rows), "source_line": 2},  # blank now: the file changed since loading
        {"source_file": str(rows), "source_line": 7},  # past the end
        {"source_file": str(tmp_path / "gone.jsonl"), "source_line": 1},
    )
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        for step in range(3):
            assert [r["source"]["id"] for r in _observe(monitor, meta, step)] == ["a"]
    messages = [r.getMessage() for r in caplog.records if "nonfinite_loss" not in r.getMessage()]
    assert len(messages) == 2, messages  # one per kind and file: missing line, unreadable file
    assert any("line 2 not found" in m for m in messages) and any("cannot read" in m for m in messages)
