"""Real ms-swift training runs on the embedded tiny Qwen3 (few steps, evaluation twice)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.training import TrainConfig, demo_config, parse_config


@pytest.fixture(scope="session")
def demo_assets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture
def make_config(demo_assets_root: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """The demo config, shrunk to 4 steps with 2 evaluations, strict guards, then overridden."""

    def build(
        *,
        layout: str = "padded",
        coord_on: bool = True,
        token_metrics: bool = True,
        monitor: bool = True,
        training: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
    ) -> TrainConfig:
        raw = demo_config(demo_assets_root).model_dump()
        raw["data"].update(layout=layout, packing_length=512, max_samples=24)
        raw["training"].update(
            output_dir=str(tmp_path / f"run_{layout}"),
            max_steps=4,
            eval_steps=2,
            logging_steps=1,
            save_strategy="no",
            per_device_train_batch_size=2,
            per_device_eval_batch_size=2,
            gradient_accumulation_steps=2,
            warmup_steps=0,
        )
        raw["training"].update(training or {})
        c = raw["custom"]
        c["coord_soft_ce_w1"]["enabled"] = coord_on
        c["token_type_metrics"]["enabled"] = token_metrics
        c["instability_monitor"]["enabled"] = monitor
        c["contracts"] = {"mode": "strict"}
        for section, values in (custom or {}).items():
            c.setdefault(section, {}).update(values)
        return parse_config(raw)

    return build
