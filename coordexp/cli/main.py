"""``coordexp`` command line: ``train``, ``check-logs``, ``report``.

Configuration is YAML-first: ``train`` takes only the path of its YAML (none: the embedded demo).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import coordexp

if TYPE_CHECKING:
    from coordexp.demo.build import DemoKind


def _train(argv: Sequence[str]) -> int:
    from coordexp.demo.build import DEMO_KINDS

    parser = argparse.ArgumentParser(
        prog="coordexp train",
        description="Train with the Stage-1 components through ms-swift. Without CONFIG: the embedded demo.",
    )
    parser.add_argument("config", nargs="?", help="training YAML (model, data, training, custom)")
    parser.add_argument(
        "--demo",
        choices=tuple(DEMO_KINDS),
        help="without CONFIG: which embedded demo ("
        + "; ".join(f"{kind}: {spec.description}" for kind, spec in DEMO_KINDS.items())
        + "; text is the default, vl needs the vl extra)",
    )
    args = parser.parse_args(list(argv))
    if args.config and args.demo:
        parser.error("give a CONFIG or --demo, not both")
    from coordexp.config import ConfigError
    from coordexp.detection.evaluation import DetectionEvalError
    from coordexp.rows.refused import DataError

    try:
        from coordexp.launch import demo_config, load_config, train

        kind: DemoKind = args.demo or "text"
        if not args.config:  # a VL demo checks its dependencies before the build, not after
            from coordexp.launch.vl_support import is_multimodal_model_type, require_vl_dependencies

            if is_multimodal_model_type(DEMO_KINDS[kind].model_type):
                require_vl_dependencies(f"the --demo {kind} model ({DEMO_KINDS[kind].description})")
        cfg = load_config(args.config) if args.config else demo_config(kind=kind, detection=True)
        if not args.config:
            print(f"[coordexp] no config given: running the embedded demo ({DEMO_KINDS[kind].description})")
        train(cfg)
    except ConfigError as exc:  # one line per error, each naming the file and key
        for line in str(exc).splitlines():
            _stderr_line(f"coordexp train: error: {line}")
        return 2
    except DataError as exc:  # refused rows over data.max_refused_fraction: one line, file:line first
        _stderr_line(f"coordexp train: {exc}")
        return 2
    except DetectionEvalError as exc:  # raised on every rank with the same line
        _stderr_line(f"coordexp train: error: {exc}")
        return 1
    return 0


def _stderr_line(line: str) -> None:
    """One write per line: the ranks of a run share stderr, and a line written in two pieces (text,
    then the newline) can interleave with another rank's."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


USAGE = (
    "usage: coordexp {train,check-logs,report} ...\n\n"
    "  train [CONFIG.yaml]   train (no config: the embedded demo; --demo coordjson / vl: the others)\n"
    "  check-logs RUN_DIR    check a run's logged keys against the metric catalog\n"
    "  report RUN_DIR        plot loss composition and diagnostics (PNG + CSV)\n"
    "  --version             print the installed version"
)
COMMANDS = ("train", "check-logs", "report")


def unknown_command(word: str) -> str:
    """The one-line error for a word that is not a subcommand, with the closest one if any."""
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "commands: " + ", ".join(COMMANDS)
    return f"coordexp: unknown command {word!r} ({hint})"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(f"coordexp {coordexp.__version__}")
        return 0
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] not in COMMANDS:
        print(unknown_command(argv[0]), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return _train(rest)
    if command == "check-logs":
        from coordexp.cli import check_logs

        return check_logs.main(rest)
    from coordexp.cli import report

    return report.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
