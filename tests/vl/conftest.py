"""Vision-language tests: one tiny Qwen3-VL demo build per session.

Tests marked ``vl`` need the ``vl`` extra (torchvision built for the installed torch, and
qwen_vl_utils). Without it they skip, except where ``COORDEXP_REQUIRE_VL=1`` (set by ``.ci/run`` in
its VL environment): there they fail, so CI cannot pass with them silently skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.demo import DemoAssets, build_demo_assets
from coordexp.launch import TrainConfig, demo_config
from coordexp.launch.vl_support import missing_vl_dependency
from tests.run_configs import small_run_config

REQUIRE_VL = os.environ.get("COORDEXP_REQUIRE_VL") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture (the session's VL build needs the extra too): skip, or fail under CI."""
    if item.get_closest_marker("vl") is None:
        return
    problem = missing_vl_dependency()
    if problem is None:
        return
    if REQUIRE_VL:
        pytest.fail(f"COORDEXP_REQUIRE_VL=1 but the vl extra cannot be used: {problem}")
    pytest.skip(f"needs the vl extra ({problem}); .ci/run runs these in its VL environment")


@pytest.fixture(scope="session")
def vl_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo_vl")


@pytest.fixture(scope="session")
def vl_assets(vl_root: Path) -> DemoAssets:
    return build_demo_assets(vl_root / "assets", seed=0, kind="vl")


@pytest.fixture
def make_vl_config(vl_root: Path, vl_assets: DemoAssets, tmp_path: Path) -> Callable[..., TrainConfig]:
    """The VL demo config shrunk to 4 steps with 2 evaluations and strict guards, then overridden."""

    def build(*, layout: str = "padded", **overrides: Any) -> TrainConfig:
        raw = demo_config(vl_root, kind="vl").model_dump()
        overrides.setdefault("max_samples", None)  # every row: both labels in train and eval
        return small_run_config(raw, tmp_path / f"run_{layout}", layout=layout, **overrides)

    return build
