"""The lazy loader logs the same values step by step as the eager loader it replaced (text demo;
the VL demo's twin is in ``tests/vl``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.launch import TrainConfig, train
from coordexp.rows import datasets as datasets_module
from tests.data.eager import build_eager_datasets

pytestmark = pytest.mark.slow

# Wall-clock and throughput values differ between any two runs.
_TIMING = ("runtime", "per_second", "speed", "elapsed", "remaining", "time", "memory")


def logged_values(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged record without its timing values."""
    records = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if not any(t in k for t in _TIMING)} for r in records]


def eager_and_lazy_logs(
    make: Callable[[str], TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train ``make("lazy")`` with the loader and ``make("eager")`` with the old one; both logs."""
    lazy = train(make("lazy")).output_dir
    with monkeypatch.context() as patch:
        patch.setattr(datasets_module, "build_datasets", build_eager_datasets)
        eager = train(make("eager")).output_dir
    return logged_values(lazy), logged_values(eager)


@pytest.mark.parametrize(
    ("layout", "workers"),
    [("padded", 0), ("packing", 0), ("padded", 2)],
    ids=["padded", "packing", "workers"],
)
def test_the_text_demo_logs_what_the_eager_loader_logged(
    layout: str, workers: int, make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DataLoader workers (the lazy rows encoded and collated in them) the values are still the
    eager loader's in the training process."""

    def make(name: str) -> TrainConfig:
        cfg = make_config(
            layout=layout, training={"dataloader_num_workers": workers if name == "lazy" else 0}
        )
        cfg.training["output_dir"] = str(Path(cfg.training["output_dir"]).with_name(f"{name}_{layout}"))
        return cfg

    lazy, eager = eager_and_lazy_logs(make, monkeypatch)
    assert len(lazy) >= 6 and any("eval_loss" in r for r in lazy)
    assert lazy == eager
