"""Kill a real run after its checkpoint, resume it, and get the uninterrupted run back.

Three real ms-swift runs of the demo (6 optimizer steps, checkpoint and evaluation at step 3, an
instability event on every micro-batch, each carrying the EMA it was judged against):

- A: uninterrupted;
- B: a subprocess that SIGKILLs itself right after logging step 5 (``killed_run_script.py``),
  then resumed in-process with ``resume_from_checkpoint: true``.

B must end with the same single series as A: the same train/eval step records in ``logging.jsonl``
(each once) with the same losses, the same events (so the same EMA: the monitor's state came back
from the checkpoint) and the same sample dumps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordexp.launch import TrainConfig, train
from coordexp.monitor.events import read_events
from tests.processes import child_env

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("killed_run_script.py")
KILL_AFTER_STEP = 5
CHECKPOINT_STEP = 3
RUN_TIMEOUT_S = 600
MONITOR = {
    "ema_decay": 0.5,  # the EMA moves a lot from step to step: a lost EMA cannot go unnoticed
    "spike_factor": 0.9,
    "guard": {"enabled": False, "max_abs_logit": 1e-3},  # an event every micro-batch, nothing zeroed
}


def _config(make_config: Callable[..., TrainConfig], output_dir: Path, **training: Any) -> TrainConfig:
    return make_config(
        training={
            "output_dir": str(output_dir),
            "max_steps": 6,
            "eval_steps": CHECKPOINT_STEP,
            "save_strategy": "steps",
            "save_steps": CHECKPOINT_STEP,
            "report_to": [],
            **training,
        },
        custom={"instability_monitor": MONITOR},
    )


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "logging.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _step(record: dict[str, Any]) -> int:
    return int(str(record["global_step/max_steps"]).split("/")[0])


def _series(run_dir: Path, kind: str) -> list[tuple[int, float]]:
    key = {"train": "loss", "eval": "eval_loss"}[kind]
    return [(_step(r), r[key]) for r in _records(run_dir) if key in r and "train_runtime" not in r]


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return read_events(run_dir / "instability_dumps" / "events.jsonl")


def _dumps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "instability_dumps").glob("step_*.jsonl"))


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    run_a, run_b = tmp_path / "uninterrupted", tmp_path / "killed"
    train(_config(make_config, run_a))

    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(_config(make_config, run_b).model_dump(mode="json")), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(config), str(KILL_AFTER_STEP)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-4000:]
    # The kill came after the checkpoint and after steps the resumed run will log again.
    assert (run_b / f"checkpoint-{CHECKPOINT_STEP}").is_dir()
    assert [s for s, _ in _series(run_b, "train")] == list(range(1, KILL_AFTER_STEP + 1))
    assert max(e["global_step"] for e in _events(run_b)) == KILL_AFTER_STEP - 1
    saved = json.loads((run_b / f"checkpoint-{CHECKPOINT_STEP}" / "trainer_state.json").read_text())
    callback_state = saved["stateful_callbacks"]["MonitorStateCallback"]["attributes"]
    (monitor_state,) = callback_state["monitor_state"]["ranks"]  # one rank

    train(_config(make_config, run_b, resume_from_checkpoint=True))

    # -- one series, equal to the uninterrupted run's ---------------------------------------------
    for kind in ("train", "eval"):
        a, b = _series(run_a, kind), _series(run_b, kind)
        assert [s for s, _ in b] == [s for s, _ in a], kind  # every step once, none missing
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-4, abs=1e-6), kind
    assert sum("train_runtime" in r for r in _records(run_b)) == 1

    # -- the same events, judged against the same EMA (restored from the checkpoint) ---------------
    events_a, events_b = _events(run_a), _events(run_b)
    fields = ("mode", "global_step", "reasons", "guard", "stop")
    assert [[e[f] for f in fields] for e in events_b] == [[e[f] for f in fields] for e in events_a]
    for key in ("loss", "ema"):  # (no EMA before the first train loss: None on both sides)
        assert [e[key] is None for e in events_b] == [e[key] is None for e in events_a], key
        values_a, values_b = ([e[key] for e in ev if e[key] is not None] for ev in (events_a, events_b))
        assert values_b == pytest.approx(values_a, rel=1e-4), key
    assert any("loss_spike" in e["reasons"] for e in events_a if e["global_step"] >= CHECKPOINT_STEP)
    first_after = next(e for e in events_a if e["mode"] == "train" and e["global_step"] == CHECKPOINT_STEP)
    assert monitor_state["ema"] == pytest.approx(first_after["ema"], rel=1e-4)
    assert _dumps(run_b) == _dumps(run_a)

    from coordexp.cli import check_logs

    assert check_logs.main([str(run_b)]) == 0
