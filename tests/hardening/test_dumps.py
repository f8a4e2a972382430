"""Sample dumps lose nothing and are never seen half-written (what tests/monitor did not cover yet).

tests/monitor/test_monitor_kill.py SIGKILLs a writer of ``events.jsonl``;
tests/monitor/test_monitor_samples.py checks a successful dump leaves no temp file. Here:

- a dump whose write fails (disk error at the rename) leaves neither a partial dump nor a temp file,
  an earlier dump of the same name stays intact, the monitor warns once and the event is recorded;
- a writer of large dumps SIGKILLed at a random moment leaves only complete dump files under their
  real names (a ``.step_*.tmp`` file may remain; no reader looks at it).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from coordexp.monitor import InstabilityMonitor, StepObservation, read_events
from coordexp.monitor import samples as samples_module
from coordexp.monitor.samples import write_atomic

ROWS = 400


def _meta(rows: int = ROWS) -> str:
    samples = [{"dataset": "lvis", "base_idx": i, "sample_id": i, "length": 7} for i in range(rows)]
    return json.dumps([{"num_samples": rows, "total_length": 7 * rows, "samples": samples}], sort_keys=True)


def _source(tmp_path: Path, width: int = 100) -> Path:
    path = tmp_path / "lvis.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": "x" * width}) + "\n" for i in range(ROWS)))
    return path


def test_failed_dump_write_leaves_nothing_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "dump.jsonl"
    write_atomic(target, [b'{"a": 1}\n'])

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(samples_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, [b'{"b": 2}\n'] * 1000)
    assert target.read_bytes() == b'{"a": 1}\n'  # the earlier dump is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.jsonl"]  # and no temp file is left

    monitor = InstabilityMonitor(
        {"enabled": True, "dump_samples": True},
        output_dir=tmp_path / "out",
        source_files={"lvis": _source(tmp_path)},
    )
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        for step in range(3):
            decision = monitor.observe(
                StepObservation(mode="train", global_step=step, loss=float("nan"), meta_json=_meta())
            )
            assert decision.reasons == ("nonfinite_loss",)
    assert sum("sample dump failed" in r.getMessage() for r in caplog.records) == 1
    assert len(read_events(monitor.events_path)) == 3  # the events themselves are all recorded
    assert sorted(p.name for p in monitor.dump_dir.iterdir()) == ["events.jsonl"]


CHILD = """
import json, sys, time
from pathlib import Path
from coordexp.monitor import InstabilityMonitor, StepObservation
out, source, meta = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).read_text()
cfg = {"enabled": True, "dump_samples": True}
monitor = InstabilityMonitor(cfg, output_dir=out, source_files={"lvis": source})
deadline = time.monotonic() + 30.0
for step in range(100_000):
    monitor.observe(StepObservation(mode="train", global_step=step, loss=float("nan"), meta_json=meta))
    if time.monotonic() > deadline:
        break
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_while_dumping_leaves_only_complete_dumps(tmp_path: Path) -> None:
    source = _source(tmp_path, width=4000)  # ~1.6 MB per dump: the kill lands inside a write
    meta = tmp_path / "meta.json"
    meta.write_text(_meta())
    dumps = tmp_path / "out" / "instability_dumps"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "out"), str(source), str(meta)])
    try:
        deadline = time.monotonic() + 60.0
        while len(list(dumps.glob("step_*.jsonl"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "child exited before it was killed"
            time.sleep(0.01)
        assert proc.poll() is None, "child finished before the kill: the test would prove nothing"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    files = sorted(dumps.glob("step_*.jsonl"))
    assert len(files) >= 3
    for path in files:
        rows = [json.loads(line) for line in path.read_bytes().splitlines()]
        assert [r["base_idx"] for r in rows] == list(range(ROWS)), path.name  # whole, in order
    events = read_events(dumps / "events.jsonl")
    assert len(events) >= len(files)  # each dump's event was recorded before its dump
