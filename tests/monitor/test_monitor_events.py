"""events.jsonl: content, strict JSON, meta cut, main process only, warnings, torn tails, disk errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.monitor import META_JSON_MAX_CHARS, StepObservation, json_float, read_events
from coordexp.monitor.events import JsonlAppender, encode_line

ObsFactory = Callable[..., StepObservation]
NAN, INF = float("nan"), float("inf")


def _events(path: Path) -> list[dict[str, Any]]:
    """Every line must be strict JSON (no NaN/Infinity tokens)."""

    def reject(name: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {name}")

    lines = path.read_text(encoding="ascii").splitlines()
    return [json.loads(line, parse_constant=reject) for line in lines]


def test_event_line_content(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = monitor_factory({"guard": {"enabled": True}, "early_stop": {"enabled": True}})
    monitor.observe(make_obs(loss=2.0))
    meta = json.dumps([{"num_samples": 1, "total_length": 5, "samples": []}])
    decision = monitor.observe(
        make_obs(
            global_step=7,
            epoch=1.25,
            loss=NAN,
            learning_rate=3e-5,
            supervised_tokens=99,
            token_acc=0.25,
            max_abs_logit=-INF,
            logits_finite=False,
            meta_json=meta,
        )
    )
    assert monitor.events_path == monitor.dump_dir / "events.jsonl"
    assert monitor.dump_dir.name == "instability_dumps"
    (event,) = _events(monitor.events_path)
    assert event["reasons"] == list(decision.reasons) == ["nonfinite_loss", "nonfinite_logits"]
    assert event["guard"] is True and event["stop"] is True
    assert event["mode"] == "train" and event["global_step"] == 7 and event["epoch"] == 1.25
    assert event["loss"] == "nan" and event["max_abs_logit"] == "-inf"
    assert event["ema"] == 2.0 and event["learning_rate"] == 3e-5
    assert event["supervised_tokens"] == 99 and event["token_acc"] == 0.25
    assert event["loss_finite"] is False and event["logits_finite"] is False
    assert event["instability_meta_json"] == meta and event["instability_meta_json_truncated"] is False
    assert isinstance(event["time_unix"], float)


def test_json_float() -> None:
    assert [json_float(v) for v in (None, 1.5, NAN, INF, -INF)] == [None, 1.5, "nan", "inf", "-inf"]
    with pytest.raises(ValueError):
        encode_line({"x": NAN})  # the encoder refuses what was not sanitised


def test_meta_is_cut_at_20000_chars(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = monitor_factory()
    meta = "[" + "x" * 30_000 + "]"
    monitor.observe(make_obs(loss=NAN, meta_json=meta))
    monitor.observe(make_obs(loss=NAN, meta_json=meta[:META_JSON_MAX_CHARS]))
    long_event, exact_event = _events(monitor.events_path)
    assert META_JSON_MAX_CHARS == 20_000
    assert long_event["instability_meta_json"] == meta[:20_000]
    assert long_event["instability_meta_json_chars"] == len(meta)
    assert long_event["instability_meta_json_truncated"] is True
    assert exact_event["instability_meta_json_truncated"] is False


def test_one_line_per_event_and_none_without_reasons(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = monitor_factory()
    for step in range(5):
        monitor.observe(make_obs(global_step=step, loss=NAN if step % 2 else 1.0))
    assert [e["global_step"] for e in _events(monitor.events_path)] == [1, 3]


def test_non_main_process_writes_nothing(
    monitor_factory: Any, make_obs: ObsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = monitor_factory({"dump_samples": True}, is_main_process=False)
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        decision = monitor.observe(make_obs(loss=NAN, meta_json="[]"))
    assert decision.reasons == ("nonfinite_loss",)
    assert list(tmp_path.rglob("*")) == []
    assert "not the main process" in caplog.text


def test_dump_dir_setting(tmp_path: Path, monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = monitor_factory({"dump_dir": str(tmp_path / "custom")})
    monitor.observe(make_obs(loss=NAN))
    assert (tmp_path / "custom" / "events.jsonl").is_file()


def test_warns_once_per_reason_kind_with_the_path(
    monitor_factory: Any, make_obs: ObsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = monitor_factory()
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        for step in range(3):
            monitor.observe(make_obs(global_step=step, loss=NAN))
            monitor.observe(make_obs(global_step=step, max_abs_logit=1e4))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert all(str(monitor.events_path) in m for m in messages)
    assert "nonfinite_loss" in messages[0] and "logit_overflow_like" in messages[1]
    assert len(_events(monitor.events_path)) == 6


def test_disk_error_warns_once_and_never_raises(
    monitor_factory: Any, make_obs: ObsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = monitor_factory({"guard": {"enabled": True}})
    monitor.dump_dir.parent.mkdir(parents=True)
    monitor.dump_dir.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        decisions = [monitor.observe(make_obs(global_step=s, loss=NAN)) for s in range(3)]
    assert all(d.guard for d in decisions)  # the decision survives the failed write
    assert sum("cannot append" in r.getMessage() for r in caplog.records) == 1


def test_torn_tail_is_ignored_by_readers_and_dropped_on_next_append(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')  # what a SIGKILL inside write(2) can leave
    assert read_events(path) == [{"a": 1}, {"b": 2}]
    appender = JsonlAppender(path)
    appender.append(encode_line({"d": 4}))
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"d":4}\n'
    assert appender.dropped_tail_bytes == len(b'{"c":')
    single = tmp_path / "single.jsonl"
    single.write_bytes(b'{"torn')
    JsonlAppender(single).append(encode_line({"e": 5}))
    assert single.read_bytes() == b'{"e":5}\n'


def test_appender_rejects_a_line_with_inner_newlines(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        JsonlAppender(tmp_path / "x.jsonl").append(b"a\nb\n")


def test_monitor_does_not_import_torch() -> None:
    code = "import sys, coordexp.monitor; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
