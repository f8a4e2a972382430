"""The lazy loader on Qwen3-VL rows: the VL demo logs the eager loader's values step by step, each
row's pixel values are made when the row is read (never kept), and an image deleted after the
pre-pass stops the run naming the row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coordexp.demo import DemoAssets
from coordexp.launch import TrainConfig
from coordexp.launch.config import DataSection
from coordexp.rows.datasets import build_datasets
from coordexp.rows.refused import DataError
from tests.data.eager import build_eager_datasets
from tests.data.test_lazy_rows import same_value
from tests.integration.test_lazy_loader_logs import eager_and_lazy_logs
from tests.vl.test_vl_data import _copy_data, _template, _write

pytestmark = pytest.mark.vl


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["padded", "packing"])
def test_the_vl_demo_logs_what_the_eager_loader_logged(
    layout: str, make_vl_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    def make(name: str) -> TrainConfig:
        cfg = make_vl_config(layout=layout)
        cfg.training["output_dir"] = str(Path(cfg.training["output_dir"]).with_name(f"{name}_{layout}"))
        return cfg

    lazy, eager = eager_and_lazy_logs(make, monkeypatch)
    assert len(lazy) >= 6 and any("eval_loss" in r for r in lazy)
    assert lazy == eager


def test_an_image_deleted_after_the_pre_pass_names_its_row(vl_assets: DemoAssets, tmp_path: Path) -> None:
    path, rows = _copy_data(vl_assets, tmp_path / "data", 3)
    _write(path, rows)
    template = _template(vl_assets)
    data = DataSection.model_validate({"train": [str(path)], "layout": "padded"})
    lazy, _ = build_datasets(template, data, packing_length=512, output_dir=tmp_path / "a")
    eager, _ = build_eager_datasets(template, data, packing_length=512, output_dir=tmp_path / "b")
    assert all(same_value(lazy[i], eager[i]) for i in range(3))  # pixel values included
    assert "pixel_values" in lazy[0] and "pixel_values" not in vars(lazy.row_index)
    (path.parent / rows[1]["images"][0]).unlink()
    assert lazy[0]["sample_id"] == rows[0]["sample_id"]
    with pytest.raises(
        DataError, match=rf"^{path.resolve()}:2: images: media file not found: .*data changed"
    ):
        lazy[1]
