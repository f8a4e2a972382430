"""The ``coordexp`` entry point: subcommand dispatch, ``--version`` and one-line user errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import coordexp
from coordexp.cli import check_logs, report
from coordexp.cli.main import main
from tests.cli.runs import make_run


def test_unknown_command_is_named_with_close_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["coordexp: unknown command 'trian' (did you mean 'train'?)"]
    assert captured.out == ""


def test_unknown_command_without_close_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zzz"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "coordexp: unknown command 'zzz' (commands: train, check-logs, report)"
    ]


def test_version_is_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"coordexp {version('coordexp')}"
    assert coordexp.__version__ == version("coordexp")


def test_help_still_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "check-logs RUN_DIR" in out and "--version" in out


def test_real_entry_point_exit_codes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "coordexp"]
    done = subprocess.run([*cmd, "trian"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "unknown command 'trian'" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"coordexp {version('coordexp')}"


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_check_logs_on_an_empty_log_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "logging.jsonl").write_text(content, encoding="utf-8")
    assert check_logs.main([str(run)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "no log records" in lines[0] and "logging.jsonl is empty" in lines[0], lines
    assert "VIOLATION" not in captured.out and "result:" not in captured.out
    assert report.main([str(run)]) == 2
    assert "no log records" in capsys.readouterr().err


def test_check_logs_on_an_empty_log_with_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, jsonl=False, trainer_state=False, tensorboard=False)
    (run / "logging.jsonl").write_text("", encoding="utf-8")
    assert check_logs.main([str(run)]) == 2
    assert "no log records" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check-logs", "report"])
def test_missing_run_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, str(tmp_path / "nope")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], lines


def test_vl_demo_without_the_vl_extra_is_one_line(tmp_path: Path) -> None:
    """Where torchvision cannot be imported (here: made unimportable), ``train --demo vl`` stops
    before building anything, in one line that says how to install VL support."""
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "from coordexp.cli.main import main\n"
        "sys.exit(main(['train', '--demo', 'vl']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coordexp train: error: the --demo vl model"), lines
    assert "torchvision failed to import" in lines[0] and "pip install -e '.[vl]'" in lines[0]
    assert not (tmp_path / "coordexp_demo_vl").exists()


def test_config_and_demo_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "some.yaml", "--demo", "vl"])
    assert info.value.code == 2
    assert "give a CONFIG or --demo, not both" in capsys.readouterr().err
