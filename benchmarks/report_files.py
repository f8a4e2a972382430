"""What every benchmark writes at the end: the machine line and the JSON / Markdown result files."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores"


def write_report(
    report: dict[str, Any],
    json_path: Path | None,
    markdown_path: Path | None,
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if markdown_path:
        markdown_path.write_text(markdown(report), encoding="utf-8")
