"""What the commands on one run folder (``check-logs``, ``report``) share: the ``RUN_DIR`` argument of
their parser and reading that folder, saying why when it cannot be read."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from coordexp.run_folder.reader import RunDirError, RunLogs, read_run

__all__ = ["parse_run_args", "read_run_or_say_why", "run_dir_parser"]


def run_dir_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``coordexp COMMAND RUN_DIR``; the command adds its options."""
    parser = argparse.ArgumentParser(prog=f"coordexp {command}", description=description)
    parser.add_argument("run_dir", help="the ms-swift output folder of the run")
    return parser


def parse_run_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` (None: the process's arguments) parsed by ``parser``."""
    return parser.parse_args(list(argv) if argv is not None else None)


def read_run_or_say_why(
    command: str, run_dir: str | Path, *, config_path: str | Path | None = None
) -> RunLogs | None:
    """:func:`~coordexp.run_folder.reader.read_run`, or None after ``coordexp COMMAND: error: why`` on stderr
    (the command then exits with status 2)."""
    try:
        return read_run(run_dir, config_path=config_path)
    except RunDirError as exc:
        print(f"coordexp {command}: error: {exc}", file=sys.stderr)
        return None
