"""CoordJSON answers on the tiny Qwen3-VL: the VL demo rows answered in CoordJSON (both field orders,
every third row without ``assistant_payload``) train with every enabled key seen in train and eval."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.demo import DemoAssets
from coordexp.demo.dataset import as_coordjson
from coordexp.launch import TrainConfig, train
from coordexp.run_folder.names import UNTYPED_ROWS_FILE
from tests.vl.test_vl_training import _assert_every_enabled_key_seen

pytestmark = [pytest.mark.vl, pytest.mark.slow]


def _rewrite(source: Path, target: Path) -> str:
    rows = []
    for line in source.read_text(encoding="utf-8").splitlines():
        row: dict[str, Any] = as_coordjson(json.loads(line))
        row["images"] = [str((source.parent / p).resolve()) for p in row["images"]]  # the file moves
        rows.append(json.dumps(row, ensure_ascii=False))
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(target)


@pytest.mark.parametrize("layout", ["padded", "packing"])
def test_vl_coordjson_run_passes_check_logs(
    layout: str,
    vl_assets: DemoAssets,
    make_vl_config: Callable[..., TrainConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = make_vl_config(layout=layout)
    cfg.data.train = [_rewrite(Path(p), tmp_path / f"train_{i}.jsonl") for i, p in enumerate(cfg.data.train)]
    cfg.data.val = [_rewrite(Path(p), tmp_path / f"val_{i}.jsonl") for i, p in enumerate(cfg.data.val)]
    cfg.data.answer_format = "coordjson"
    assert "<|coord_" in Path(cfg.data.train[0]).read_text().split('"content": "{')[1][:80]
    result = train(cfg)
    assert not (result.output_dir / UNTYPED_ROWS_FILE).exists()
    keys = {
        k
        for r in (json.loads(x) for x in (result.output_dir / "logging.jsonl").read_text().splitlines())
        for k in r
    }
    assert {"desc_token_acc", "coord_token_frac", "eval_coord_monitor/flip_desc_to_coord"} <= keys
    _assert_every_enabled_key_seen(result.output_dir, capsys)
