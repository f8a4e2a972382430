"""A real SIGKILL in the middle of a run of events leaves events.jsonl parseable.

The child writes ~21 kB events (meta cut at 20,000 chars) as fast as it can, in a bounded loop
(at most 200,000 events or 30 s, so it stops by itself if the kill never comes); the parent kills
it with SIGKILL while it is still writing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordexp.monitor import read_events
from coordexp.monitor.events import JsonlAppender, encode_line

CHILD = """
import json, sys, time
from coordexp.monitor import InstabilityMonitor, StepObservation
monitor = InstabilityMonitor({"enabled": True}, output_dir=sys.argv[1])
samples = [{"dataset": "d", "base_idx": i, "sample_id": i, "length": 7} for i in range(400)]
meta = json.dumps([{"num_samples": 400, "total_length": 2800, "samples": samples}], sort_keys=True)
deadline = time.monotonic() + 30.0
for step in range(200_000):
    monitor.observe(StepObservation(mode="train", global_step=step, loss=float("nan"), meta_json=meta))
    if time.monotonic() > deadline:
        break
"""


def _strict(line: bytes) -> object:
    def reject(name: str) -> object:
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(line, parse_constant=reject)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_mid_run_leaves_only_parseable_lines(tmp_path: Path) -> None:
    events = tmp_path / "instability_dumps" / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60.0
        while (not events.exists() or events.stat().st_size < 200_000) and time.monotonic() < deadline:
            assert proc.poll() is None, "child exited before it was killed"
            time.sleep(0.01)
        assert events.exists(), "child wrote no event within 60 s"
        time.sleep(0.2)
        assert proc.poll() is None, "child finished before the kill: the test would prove nothing"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    data = events.read_bytes()
    *complete, tail = data.split(b"\n")
    assert len(complete) >= 10
    steps = [_strict(line)["global_step"] for line in complete]  # type: ignore[index]
    assert steps == list(range(len(complete)))  # whole records, in order, none lost or doubled
    # The only thing a kill can leave besides whole lines is the unterminated prefix of the record
    # being written (the kernel may stop a multi-page write(2) for a fatal signal). Readers skip it
    # and the next append drops it, after which EVERY line of the file parses.
    assert len(read_events(events)) == len(complete)
    if tail:
        assert tail.startswith(b"{") and len(tail) < len(complete[-1]) + 100
    JsonlAppender(events).append(encode_line({"global_step": len(complete)}))
    lines = events.read_bytes().splitlines()
    assert [_strict(line)["global_step"] for line in lines] == list(range(len(complete) + 1))  # type: ignore[index]
