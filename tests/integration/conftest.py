"""Real ms-swift training runs on the embedded tiny Qwen3 (few steps, evaluation twice)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.launch import TrainConfig, demo_config
from tests.run_configs import small_run_config


@pytest.fixture(scope="session")
def demo_assets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture
def make_config(demo_assets_root: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """The demo config, shrunk to 4 steps with 2 evaluations, strict guards, then overridden."""

    def build(*, layout: str = "padded", **overrides: Any) -> TrainConfig:
        raw = demo_config(demo_assets_root).model_dump()
        return small_run_config(raw, tmp_path / f"run_{layout}", layout=layout, **overrides)

    return build
