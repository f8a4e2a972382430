"""Shared factories for the monitor tests: a monitor in tmp_path and observations with defaults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.monitor import InstabilityMonitor, StepObservation

MonitorFactory = Callable[..., InstabilityMonitor]


def _make_obs(**overrides: Any) -> StepObservation:
    """A healthy train observation; override any field."""
    values: dict[str, Any] = {
        "mode": "train",
        "global_step": 1,
        "epoch": 0.5,
        "loss": 1.0,
        "learning_rate": 1e-4,
        "supervised_tokens": 128,
        "token_acc": 0.5,
        "max_abs_logit": 10.0,
        "logits_finite": True,
        "meta_json": None,
    }
    values.update(overrides)
    return StepObservation(**values)


@pytest.fixture
def make_obs() -> Callable[..., StepObservation]:
    """Factory of observations: healthy train values unless overridden."""
    return _make_obs


@pytest.fixture
def monitor_factory(tmp_path: Path) -> MonitorFactory:
    """Build a monitor writing under ``tmp_path/out`` from keyword config values."""

    def build(
        cfg: dict[str, Any] | None = None,
        *,
        is_main_process: bool = True,
        source_files: dict[str, Path] | None = None,
    ) -> InstabilityMonitor:
        return InstabilityMonitor(
            {"enabled": True, **(cfg or {})},
            output_dir=tmp_path / "out",
            is_main_process=is_main_process,
            source_files=source_files,
        )

    return build
