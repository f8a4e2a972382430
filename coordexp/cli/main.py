"""``coordexp`` command line: ``train``, ``check-logs``, ``report``.

Configuration is YAML-first: ``train`` takes only the path of its YAML (none: the embedded demo).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _train(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="coordexp train",
        description="Train with the Stage-1 components through ms-swift. Without CONFIG: the embedded demo.",
    )
    parser.add_argument("config", nargs="?", help="training YAML (model, data, training, custom)")
    args = parser.parse_args(list(argv))
    from coordexp.config import ConfigError

    try:
        from coordexp.training import demo_config, load_config, train

        cfg = load_config(args.config) if args.config else demo_config()
        if not args.config:
            print("[coordexp] no config given: running the embedded demo (tiny Qwen3, synthetic data)")
        train(cfg)
    except ConfigError as exc:
        print(f"coordexp train: invalid config:\n{exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": _train, "check-logs": None, "report": None}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(
            "usage: coordexp {train,check-logs,report} ...\n\n"
            "  train [CONFIG.yaml]   train (no config: the embedded demo)\n"
            "  check-logs RUN_DIR    check a run's logged keys against the metric catalog\n"
            "  report RUN_DIR        plot loss composition and diagnostics (PNG + CSV)",
            file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
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
