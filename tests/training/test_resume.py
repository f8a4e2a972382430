"""Resume pieces without a trainer run: which checkpoint, the superseded records, the monitor state.

The end-to-end kill-and-resume run is ``tests/integration/test_resume.py``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerControl, TrainerState

from coordexp.config import ConfigError
from coordexp.run_folder.resume import resolve_resume_checkpoint, supersede_logs_after
from tests.hardening.support import custom, stage1_trainer


def _checkpoint(run: Path, step: int) -> Path:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    return folder


def test_true_is_the_newest_checkpoint_a_path_is_checked(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _checkpoint(run, 9)
    newest = _checkpoint(run, 10)  # by step, not by name
    (run / "checkpoint-11").mkdir()  # no trainer_state.json: not a usable checkpoint
    for value in (True, "true", "True"):
        assert resolve_resume_checkpoint({"output_dir": str(run), "resume_from_checkpoint": value}) == newest
    for value in (None, False, "false"):
        assert resolve_resume_checkpoint({"output_dir": str(run), "resume_from_checkpoint": value}) is None
    assert resolve_resume_checkpoint({"resume_from_checkpoint": str(newest)}) == newest
    errors = {
        "no checkpoint-<step> folder": {"output_dir": str(tmp_path / "none"), "resume_from_checkpoint": True},
        "true needs training.output_dir": {"resume_from_checkpoint": True},
        "not a checkpoint folder": {"resume_from_checkpoint": str(run / "checkpoint-11")},
        "must be a checkpoint folder or true": {"resume_from_checkpoint": 3},
        "resume_only_model with ignore_data_skip": {
            "resume_from_checkpoint": str(newest),
            "resume_only_model": True,
            "ignore_data_skip": True,
        },
    }
    for fragment, training in errors.items():
        with pytest.raises(ConfigError, match=r"training\.resume_from_checkpoint: ") as info:
            resolve_resume_checkpoint(training)
        assert fragment in str(info.value) and "\n" not in str(info.value)


def _jsonl(path: Path, records: list[dict[str, Any]], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn, encoding="utf-8")


def test_records_after_the_checkpoint_are_superseded(tmp_path: Path) -> None:
    """Checkpoint at step 3, killed during step 5: what the resumed run will write again goes."""
    dumps = tmp_path / "instability_dumps"
    dumps.mkdir()
    logged = [{"loss": 1.0, "global_step/max_steps": f"{s}/6"} for s in range(1, 6)]
    logged.insert(3, {"eval_loss": 1.0, "global_step/max_steps": "3/6"})
    _jsonl(tmp_path / "logging.jsonl", logged, torn='{"loss": 0.5, "glo')
    # a train micro-batch carries the steps already done; the evaluation after step 3 carries 3
    events = [{"mode": "train", "global_step": s} for s in range(5)] + [{"mode": "eval", "global_step": 3}]
    _jsonl(dumps / "events.jsonl", events)
    for name in ("step_2_train", "step_3_train", "step_3_eval", "step_3_eval_1", "step_4_train_1"):
        (dumps / f"{name}.jsonl").write_text("{}\n", encoding="utf-8")

    dropped = supersede_logs_after(3, tmp_path, dumps)

    kept = [json.loads(x) for x in (tmp_path / "logging.jsonl").read_text().splitlines()]
    assert [r["global_step/max_steps"] for r in kept] == ["1/6", "2/6", "3/6", "3/6"]
    kept_events = [json.loads(x) for x in (dumps / "events.jsonl").read_text().splitlines()]
    assert kept_events == [{"mode": "train", "global_step": s} for s in range(3)] + [events[-1]]
    assert sorted(p.stem for p in dumps.glob("step_*")) == ["step_2_train", "step_3_eval", "step_3_eval_1"]
    assert dropped[str(tmp_path / "logging.jsonl")] == 3  # steps 4, 5 and the torn line
    assert dropped[str(dumps / "events.jsonl")] == 2


def _monitor_and_callback(tmp_path: Path) -> tuple[Any, Any]:
    trainer, _ = stage1_trainer(custom(True), tmp_path)
    component = trainer.stage1_pipeline().monitor
    return component.monitor, component.state_callback()


def test_the_monitor_state_travels_through_trainer_state_json(tmp_path: Path) -> None:
    monitor, callback = _monitor_and_callback(tmp_path / "a")
    monitor.load_state_dict({"ema": 2.5})
    saved = json.loads(json.dumps(callback.state()))  # as trainer_state.json holds it
    name = type(callback).__name__
    assert name == "MonitorStateCallback"

    # the default: read back in on_train_begin from the resumed TrainerState
    fresh, restoring = _monitor_and_callback(tmp_path / "b")
    state = TrainerState(global_step=3, stateful_callbacks={name: saved})
    restoring.on_train_begin(None, state, TrainerControl())
    assert fresh.ema == 2.5
    # a fresh run (step 0) restores nothing, whatever the initial state says
    untouched, other = _monitor_and_callback(tmp_path / "c")
    start = TrainerState(global_step=0, stateful_callbacks={name: saved})
    other.on_train_begin(None, start, TrainerControl())
    assert untouched.ema is None

    # restore_callback_states_from_checkpoint: HF rebuilds the callback from its class and sets the
    # saved attributes (Trainer._load_callback_state); the rebuilt one still reaches its monitor
    rebuilt_monitor, original = _monitor_and_callback(tmp_path / "d")
    rebuilt = type(original)(**saved["args"])
    for attribute, value in saved["attributes"].items():
        setattr(rebuilt, attribute, value)
    assert rebuilt_monitor.ema == 2.5


def test_a_checkpoint_without_monitor_state_warns(tmp_path: Path) -> None:
    monitor, callback = _monitor_and_callback(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback.on_train_begin(None, TrainerState(global_step=4, stateful_callbacks={}), TrainerControl())
    assert monitor.ema is None
    assert any("step 4 holds no instability monitor state" in str(w.message) for w in caught)


def test_a_checkpoint_of_another_world_size_warns_and_uses_rank_0(tmp_path: Path) -> None:
    monitor, callback = _monitor_and_callback(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback.monitor_state = {"ranks": [{"ema": 1.5}, {"ema": 7.0}]}
    assert monitor.ema == 1.5
    message = "holds the instability monitor state of 2 rank(s), this run has 1"
    assert any(message in str(w.message) for w in caught)
