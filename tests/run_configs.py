"""One way to shrink a demo config into a short test run (text and VL integration tests share it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordexp.launch import TrainConfig, parse_config


def small_run_config(
    raw: dict[str, Any],
    output_dir: Path,
    *,
    layout: str = "padded",
    coord_on: bool = True,
    token_metrics: bool = True,
    monitor: bool = True,
    max_samples: int | None = 24,
    training: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
) -> TrainConfig:
    """``raw`` (a demo config's ``model_dump()``) shrunk to 4 steps with 2 evaluations and strict
    guards, then overridden by ``training`` and ``custom``."""
    raw["data"].update(layout=layout, packing_length=512, max_samples=max_samples)
    raw["training"].update(
        output_dir=str(output_dir),
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
        if c.get(section) is None:  # an absent section dumps as None
            c[section] = {}
        c[section].update(values)
    return parse_config(raw)
