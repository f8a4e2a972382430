"""Set-up errors fail at config load, before any model or data is touched.

The ``training:`` section is checked against ms-swift's ``Seq2SeqTrainingArguments`` (unknown keys
with a close match, HF-parser-style coercion, obvious bounds), and the model folder and data files
are checked to exist and be readable. Every error is one line naming the YAML file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from coordexp.cli.main import main
from coordexp.config import ConfigError
from coordexp.launch.arguments import validate_training_arguments
from coordexp.launch.config import load_config


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A model folder (config.json only: nothing here loads it) and one train file."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": []}) + "\n", encoding="utf-8")
    return tmp_path


def write_yaml(
    folder: Path, training: str = "", *, data: str = "train: [train.jsonl]", model: str = "model"
) -> Path:
    text = f"model:\n  path: {model}\ndata:\n  {data}\ntraining:\n  output_dir: out\n"
    text += "".join(f"  {line}\n" for line in training.splitlines() if line.strip())
    path = folder / "stage1.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).splitlines()


# ---------------------------------------------------------------- the training section


def test_unknown_key_names_file_key_and_close_match(inputs: Path) -> None:
    path = write_yaml(inputs, "learnig_rate: 0.001")
    assert error_lines(path) == [
        f"{path}: training.learnig_rate: unknown key (did you mean 'learning_rate'?)"
    ]


def test_unknown_key_without_close_match(inputs: Path) -> None:
    path = write_yaml(inputs, "zzz_qqq: 1")
    assert error_lines(path) == [f"{path}: training.zzz_qqq: unknown key"]


def test_wrong_type(inputs: Path) -> None:
    path = write_yaml(inputs, "max_steps: four")
    assert error_lines(path) == [f"{path}: training.max_steps: must be an integer (got 'four')"]


def test_yaml_numeric_strings_are_coerced(inputs: Path) -> None:
    # YAML 1.1 reads 3e-3 (no dot) as the string "3e-3"; HF's parser would read it as a float.
    path = write_yaml(
        inputs,
        "learning_rate: 3e-3\nmax_steps: '4'\nnum_train_epochs: '2'\nweight_decay: 1e-2\nbf16: 'no'\n"
        "remove_unused_columns: 'False'\neval_strategy: steps\neval_steps: '10'\nreport_to: tensorboard",
    )
    training = load_config(path).training
    assert yaml.safe_load("x: 3e-3")["x"] == "3e-3"  # the YAML quirk this is about
    assert training["learning_rate"] == pytest.approx(3e-3) and isinstance(training["learning_rate"], float)
    assert training["max_steps"] == 4 and isinstance(training["max_steps"], int)
    assert training["num_train_epochs"] == 2
    assert training["weight_decay"] == pytest.approx(0.01)
    assert training["bf16"] is False and training["remove_unused_columns"] is False
    assert training["eval_strategy"] == "steps" and training["eval_steps"] == 10
    assert training["report_to"] == ["tensorboard"]


def test_coerced_values_are_what_the_trainer_gets(inputs: Path) -> None:
    from swift import Seq2SeqTrainingArguments

    path = write_yaml(
        inputs, "learning_rate: 3e-3\nmax_steps: '4'\nlr_scheduler_type: constant\nuse_cpu: 'yes'"
    )
    training = load_config(path).training
    args = Seq2SeqTrainingArguments(**training, check_model=False)
    assert args.learning_rate == pytest.approx(3e-3) and args.max_steps == 4
    assert str(args.lr_scheduler_type.value) == "constant"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("learning_rate: -0.001", "training.learning_rate: must be >= 0 (got -0.001)"),
        ("learning_rate: .nan", "training.learning_rate: must be a finite number (got nan)"),
        ("max_steps: 0", "training.max_steps: must be -1 (train num_train_epochs) or >= 1 (got 0)"),
        ("max_steps: 2.5", "training.max_steps: must be an integer (got 2.5)"),
        ("max_steps: true", "training.max_steps: must be an integer (got True)"),
        ("num_train_epochs: -1", "training.num_train_epochs: must be >= 0 (got -1)"),
        ("per_device_train_batch_size: 0", "training.per_device_train_batch_size: must be >= 1 (got 0)"),
        ("per_device_eval_batch_size: 0", "training.per_device_eval_batch_size: must be >= 1 (got 0)"),
        ("gradient_accumulation_steps: 0", "training.gradient_accumulation_steps: must be >= 1 (got 0)"),
        ("warmup_ratio: 1.5", "training.warmup_ratio: must be in [0, 1] (got 1.5)"),
        ("logging_steps: 0", "training.logging_steps: must be > 0 (got 0)"),
        ("save_steps: -5", "training.save_steps: must be > 0 (got -5)"),
        ("eval_steps: 0", "training.eval_steps: must be > 0 (got 0)"),
        ("bf16: maybe", "training.bf16: must be a boolean (got 'maybe')"),
        (
            "eval_strategy: step",
            "training.eval_strategy: must be one of 'no', 'steps', 'epoch' "
            "(got 'step'; did you mean 'steps'?)",
        ),
        ("lr_scheduler_type: cosin", "training.lr_scheduler_type: must be one of"),
        ("optim: adamw_torhc", "(got 'adamw_torhc'; did you mean 'adamw_torch'?)"),
        ("lr_scheduler_kwargs: [1]", "training.lr_scheduler_kwargs: must be a mapping or a string (got [1])"),
    ],
)
def test_bad_values(inputs: Path, line: str, message: str) -> None:
    path = write_yaml(inputs, line)
    lines = error_lines(path)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: training.") and message in lines[0], lines


def test_allowed_edge_values(inputs: Path) -> None:
    path = write_yaml(
        inputs,
        "max_steps: -1\nlearning_rate: 0\nwarmup_ratio: 1\neval_steps: null\nsave_total_limit: 1\n"
        "optim: adamw_torch\nlr_scheduler_kwargs: {}\ninclude_num_input_tokens_seen: true",
    )
    training = load_config(path).training
    assert training["max_steps"] == -1 and training["eval_steps"] is None
    assert training["optim"] == "adamw_torch" and training["include_num_input_tokens_seen"] is True


def test_every_error_is_reported_once_each(inputs: Path) -> None:
    path = write_yaml(inputs, "learnig_rate: 0.1\nmax_steps: four", data="train: [missing.jsonl]")
    lines = error_lines(path)
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("training.learnig_rate" in x for x in lines) and any("training.max_steps" in x for x in lines)
    assert any("data.train.0" in x for x in lines)


def test_validator_on_its_own() -> None:
    assert validate_training_arguments({}) == {}
    assert validate_training_arguments({"learning_rate": "1e-4"}) == {"learning_rate": 1e-4}
    with pytest.raises(ConfigError, match=r"^training\.learnig_rate: unknown key"):
        validate_training_arguments({"learnig_rate": 1})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", "3e-3", 3e-3),
        ("learning_rate", "4", 4),  # an int literal stays an int, as HF's parser reads a count
        ("learning_rate", 2, 2),
        ("max_steps", "1e3", 1000),
        ("max_steps", 3.0, 3),
        ("bf16", "No", False),
        ("run_name", 2024, "2024"),
    ],
)
def test_validator_reads_values_as_hf_s_parser(key: str, value: object, expected: object) -> None:
    got = validate_training_arguments({key: value})[key]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bf16", "on"),
        ("bf16", "OFF"),
        ("bf16", 1),
        ("max_steps", True),
        ("learning_rate", True),
        ("run_name", True),
    ],
)
def test_validator_refuses_what_pydantic_s_lax_mode_alone_would_take(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^training\.{key}: must be"):
        validate_training_arguments({key: value})


# ---------------------------------------------------------------- input files


def test_missing_data_file_names_file_and_key(inputs: Path) -> None:
    path = write_yaml(inputs, data="train: [train.jsonl]\n  val: [nope.jsonl]")
    missing = inputs / "nope.jsonl"
    assert error_lines(path) == [f"{path}: data.val.0: file not found: {missing}"]


def test_data_path_that_is_a_folder(inputs: Path) -> None:
    (inputs / "folder.jsonl").mkdir()
    path = write_yaml(inputs, data="train: [folder.jsonl]")
    assert error_lines(path) == [f"{path}: data.train.0: not a file: {inputs / 'folder.jsonl'}"]


def test_missing_model_path(inputs: Path) -> None:
    path = write_yaml(inputs, model="no_model")
    assert error_lines(path) == [f"{path}: model.path: folder not found: {inputs / 'no_model'}"]


def test_model_path_without_checkpoint_config(inputs: Path) -> None:
    (inputs / "empty_model").mkdir()
    path = write_yaml(inputs, model="empty_model")
    expected = f"{path}: model.path: no config.json in {inputs / 'empty_model'} (not a checkpoint folder)"
    assert error_lines(path) == [expected]


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    ("training", "data", "model", "fragment"),
    [
        ("learnig_rate: 0.001", "train: [train.jsonl]", "model", "training.learnig_rate: unknown key"),
        ("max_steps: four", "train: [train.jsonl]", "model", "training.max_steps: must be an integer"),
        ("learning_rate: -1e-3", "train: [train.jsonl]", "model", "training.learning_rate: must be >= 0"),
        ("", "train: [nope.jsonl]", "model", "data.train.0: file not found"),
        ("", "train: [train.jsonl]", "no_model", "model.path: folder not found"),
    ],
)
def test_cli_set_up_error_is_one_line_exit_2_and_writes_nothing(
    inputs: Path, capsys: pytest.CaptureFixture[str], training: str, data: str, model: str, fragment: str
) -> None:
    path = write_yaml(inputs, training, data=data, model=model)
    assert main(["train", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"coordexp train: error: {path}: ") and fragment in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (inputs / "out").exists()


def test_relative_paths_are_checked_relative_to_the_yaml(
    inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = inputs / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(write_yaml(inputs))
    assert cfg.data.train == [str(inputs / "train.jsonl")]
