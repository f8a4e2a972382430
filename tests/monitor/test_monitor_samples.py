"""Sample dumps: source rows by base_idx, atomic files, and every failure skipped with one warning."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.monitor import StepObservation

ObsFactory = Callable[..., StepObservation]
NAN = float("nan")


def _meta(*rows: list[tuple[str, int | None]]) -> str:
    """instability_meta_json text for rows of (dataset, base_idx) samples."""
    return json.dumps(
        [
            {
                "num_samples": len(row),
                "total_length": 10 * len(row),
                "samples": [
                    {"dataset": d, "base_idx": i, "sample_id": f"{d}-{i}", "length": 10} for d, i in row
                ],
            }
            for row in rows
        ],
        sort_keys=True,
    )


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    lvis = tmp_path / "lvis.jsonl"
    lvis.write_text("".join(json.dumps({"id": i, "text": f"lvis row {i}"}) + "\n" for i in range(50)))
    coco = tmp_path / "coco.jsonl"
    # a blank line is not a record: base_idx 1 is {"id": 1}; the last row is not strict JSON
    coco.write_text('{"id": 0}\n\n{"id": 1}\n{"id": 2, "x": NaN}\n')
    return {"lvis": lvis, "coco": coco}


def _dump_files(monitor: Any) -> list[Path]:
    return sorted(p for p in monitor.dump_dir.iterdir() if p.name != "events.jsonl")


def test_dump_content_and_atomicity(
    monitor_factory: Any, make_obs: ObsFactory, sources: dict[str, Path]
) -> None:
    monitor = monitor_factory({"dump_samples": True}, source_files=sources)
    meta = _meta([("lvis", 3), ("coco", 1)], [("lvis", 42), ("coco", 2)])
    monitor.observe(make_obs(global_step=12, loss=NAN, meta_json=meta))
    (dump,) = _dump_files(monitor)  # no temp file left next to it
    assert dump.name == "step_12_train.jsonl"
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [(r["row"], r["dataset"], r["base_idx"]) for r in rows] == [
        (0, "lvis", 3),
        (0, "coco", 1),
        (1, "lvis", 42),
        (1, "coco", 2),
    ]
    assert rows[0]["source"] == {"id": 3, "text": "lvis row 3"}
    assert rows[1]["source"] == {"id": 1}
    assert rows[3]["source_raw"] == '{"id": 2, "x": NaN}' and "source" not in rows[3]
    assert rows[0]["sample_id"] == "lvis-3" and rows[0]["length"] == 10
    assert rows[0]["global_step"] == 12 and rows[0]["mode"] == "train"
    assert rows[0]["reasons"] == ["nonfinite_loss"] and rows[0]["source_file"] == str(sources["lvis"])


def test_same_step_and_mode_gets_a_new_file(
    monitor_factory: Any, make_obs: ObsFactory, sources: dict[str, Path]
) -> None:
    monitor = monitor_factory({"dump_samples": True}, source_files=sources)
    for idx in (1, 2, 3):
        monitor.observe(make_obs(mode="eval", global_step=5, loss=NAN, meta_json=_meta([("lvis", idx)])))
    names = [p.name for p in _dump_files(monitor)]
    assert names == ["step_5_eval.jsonl", "step_5_eval_1.jsonl", "step_5_eval_2.jsonl"]
    assert json.loads((monitor.dump_dir / "step_5_eval_2.jsonl").read_text())["base_idx"] == 3


def test_dump_samples_off_writes_only_events(
    monitor_factory: Any, make_obs: ObsFactory, sources: dict[str, Path]
) -> None:
    monitor = monitor_factory(source_files=sources)
    monitor.observe(make_obs(loss=NAN, meta_json=_meta([("lvis", 1)])))
    assert _dump_files(monitor) == []


def test_missing_sources_and_indexes_skip_with_one_warning(
    monitor_factory: Any,
    make_obs: ObsFactory,
    sources: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = {**sources, "gone": tmp_path / "does_not_exist.jsonl"}
    monitor = monitor_factory({"dump_samples": True}, source_files=files)
    meta = _meta([("lvis", 1), ("lvis", 10_000), ("unknown", 0), ("gone", 0), ("lvis", None), ("lvis", -1)])
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        for step in range(3):
            monitor.observe(make_obs(global_step=step, loss=NAN, meta_json=meta))
    dumps = _dump_files(monitor)
    assert len(dumps) == 3
    assert [json.loads(line)["base_idx"] for line in dumps[0].read_text().splitlines()] == [1]
    sample_warnings = [r.getMessage() for r in caplog.records if "nonfinite_loss" not in r.getMessage()]
    assert len(sample_warnings) == 4, sample_warnings  # missing index, no source, unreadable, no base_idx


@pytest.mark.parametrize(
    "meta",
    ["not json", '{"a": 1}', "[1, 2]", '[{"samples": 3}]', '[{"samples": [1]}]', "", "[]"],
)
def test_malformed_meta_never_raises(
    monitor_factory: Any,
    make_obs: ObsFactory,
    sources: dict[str, Path],
    meta: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = monitor_factory({"dump_samples": True, "guard": {"enabled": True}}, source_files=sources)
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        decisions = [monitor.observe(make_obs(global_step=s, loss=NAN, meta_json=meta)) for s in range(2)]
    assert all(d.guard for d in decisions)
    events = [json.loads(line) for line in monitor.events_path.read_text().splitlines()]
    assert len(events) == 2  # the events are still recorded, meta text and all
    assert events[0]["instability_meta_json"] == meta
    assert _dump_files(monitor) == []
    if meta != "[]":
        assert sum("sample dump failed" in r.getMessage() for r in caplog.records) == 1


def test_meta_that_is_not_a_string_is_ignored(
    monitor_factory: Any, make_obs: ObsFactory, sources: dict[str, Path]
) -> None:
    monitor = monitor_factory({"dump_samples": True}, source_files=sources)
    decision = monitor.observe(make_obs(loss=NAN, meta_json=[{"samples": []}]))
    assert decision.reasons == ("nonfinite_loss",)
    event = json.loads(monitor.events_path.read_text())
    assert event["instability_meta_json"] is None


def test_bad_observation_values_never_raise(
    monitor_factory: Any, make_obs: ObsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = monitor_factory()
    with caplog.at_level(logging.WARNING, logger="coordexp.monitor"):
        for bad in ({"loss": "oops"}, {"mode": "predict"}, {"loss": None}, {"supervised_tokens": "x"}):
            decision = monitor.observe(make_obs(**bad))
            assert decision.reasons == () and not decision.guard and not decision.stop
    assert sum("unreadable observation" in r.getMessage() for r in caplog.records) == 1
