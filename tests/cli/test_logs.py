"""Reading a run folder: the three sources normalise to the same records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordexp.generated import metric_keys as K
from coordexp.run_folder.names import LOGGING_FILE
from coordexp.run_folder.reader import (
    RunDirError,
    find_trainer_state,
    read_logging_jsonl,
    read_run,
    read_tensorboard,
    record_mode,
    tb_tag_to_key,
)
from tests.cli.runs import FULL_CUSTOM, make_run, write_trainer_state


def test_all_sources_are_read_with_modes_and_steps(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    logs = read_run(run)
    assert list(logs.sources) == [
        LOGGING_FILE,
        "checkpoint-4/trainer_state.json",
        "tensorboard:runs/Nov26_03-00-00_host/" + next((run / "runs" / "Nov26_03-00-00_host").iterdir()).name,
    ]
    jsonl = logs.records_from(LOGGING_FILE)
    assert [(r.mode, r.step) for r in jsonl] == [
        ("train", 1),
        ("train", 2),
        ("eval", 2),
        ("train", 3),
        ("train", 4),
        ("eval", 4),
        ("summary", 4),
    ]
    assert jsonl[0].values[K.GLOBAL_STEP_MAX_STEPS] == "1/4"
    assert K.STEP not in jsonl[0].values
    assert logs.config is not None
    assert logs.config.custom.coord_soft_ce_w1 is not None
    assert logs.dataset_labels == {"lvis", "coco"}
    assert logs.preferred_source() == LOGGING_FILE


def test_tensorboard_tags_map_back_to_log_keys(tmp_path: Path) -> None:
    run = make_run(tmp_path, jsonl=False, trainer_state=False)
    (records,) = read_tensorboard(run).values()
    by_mode = {(r.mode, r.step): r.values for r in records}
    assert by_mode[("train", 2)][K.COORD_DIAG_LOSS] == pytest.approx(1.5)
    assert K.LOSS in by_mode[("train", 2)]
    assert by_mode[("eval", 2)]["eval_" + K.COORD_DIAG_LOSS] == pytest.approx(1.575)
    assert by_mode[("eval", 2)][K.EVAL_LOSS] == pytest.approx(2.1)
    assert "eval_" + K.TOKEN_ACC in by_mode[("eval", 2)]
    assert set(by_mode[("summary", 4)]) == {
        K.TRAIN_RUNTIME,
        K.TRAIN_SAMPLES_PER_SECOND,
        K.TRAIN_STEPS_PER_SECOND,
        K.TOTAL_FLOS,
        K.TRAIN_LOSS,
    }
    # text summaries (args/text_summary) are not scalars and never become keys
    assert not any("args" in k or "text_summary" in k for r in records for k in r.values)
    # the progress strings never reach TensorBoard
    assert not any(K.GLOBAL_STEP_MAX_STEPS in r.values for r in records)


def test_tag_mapping() -> None:
    assert tb_tag_to_key("train/coord_diag/loss") == (K.COORD_DIAG_LOSS, "train")
    assert tb_tag_to_key("eval/coord_diag/loss") == ("eval_" + K.COORD_DIAG_LOSS, "eval")
    assert tb_tag_to_key("eval/loss") == (K.EVAL_LOSS, "eval")
    assert tb_tag_to_key("train/train_runtime") == (K.TRAIN_RUNTIME, "summary")


def test_record_mode() -> None:
    assert record_mode({K.LOSS: 1.0, K.EPOCH: 0.5}) == "train"
    assert record_mode({K.EVAL_LOSS: 1.0, K.EPOCH: 0.5}) == "eval"
    assert record_mode({"eval_" + K.COORD_DIAG_LOSS: 1.0, K.EPOCH: 0.5}) == "eval"
    assert record_mode({K.TRAIN_RUNTIME: 1.0, K.TRAIN_LOSS: 1.0}) == "summary"


def test_torn_last_line_is_a_note_and_a_torn_middle_line_a_problem(tmp_path: Path) -> None:
    path = tmp_path / LOGGING_FILE
    good = json.dumps({K.LOSS: 1.0, K.GLOBAL_STEP_MAX_STEPS: "1/4"})
    path.write_text(f'{good}\n{good}\n{{"loss": 1.', encoding="utf-8")
    records, problems = read_logging_jsonl(path)
    assert len(records) == 2
    assert [(p.index, p.fatal) for p in problems] == [(3, False)]
    path.write_text(f'{good}\n{{"loss": 1.\n{good}\n', encoding="utf-8")
    records, problems = read_logging_jsonl(path)
    assert len(records) == 2
    assert [(p.index, p.fatal) for p in problems] == [(2, True)]


def test_trainer_state_prefers_the_run_root_then_the_newest_checkpoint(tmp_path: Path) -> None:
    for step in (2, 10, 4):
        write_trainer_state(tmp_path / f"checkpoint-{step}" / "trainer_state.json", [])
    assert find_trainer_state(tmp_path) == tmp_path / "checkpoint-10" / "trainer_state.json"
    write_trainer_state(tmp_path / "trainer_state.json", [])
    assert find_trainer_state(tmp_path) == tmp_path / "trainer_state.json"


def test_unreadable_run_folders(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        read_run(tmp_path / "nope")
    with pytest.raises(RunDirError, match=r"no logging\.jsonl"):
        read_run(tmp_path)
    nested = tmp_path / "v0-20250101"
    nested.mkdir()
    (nested / LOGGING_FILE).write_text("{}\n", encoding="utf-8")
    with pytest.raises(RunDirError, match="did you mean"):
        read_run(tmp_path)


def test_invalid_config_is_a_run_dir_error(tmp_path: Path) -> None:
    run = make_run(tmp_path, custom={**FULL_CUSTOM, "coord_soft_ce_w1": {"temperature": 0}})
    with pytest.raises(RunDirError, match=r"custom\.coord_soft_ce_w1\.temperature"):
        read_run(run)
