"""CoordJSON answers train with every token-type key logged, in every layout (real ms-swift runs).

The issue's case: demo rows rewritten as CoordJSON (answer text only, ``assistant_payload`` kept),
strict contracts, padded, every feature on: all 13 keys that need token types are logged in train and
eval, and ``check-logs`` passes. The ``coordjson`` demo (both field orders, ``bbox_2d`` and ``poly``,
rows with and without a payload) in the padding-free and packing layouts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coordexp.demo.dataset import as_coordjson, make_rows
from coordexp.generated.metric_catalog import METRIC_SPECS
from coordexp.launch import demo_config, train
from coordexp.run_folder.names import UNTYPED_ROWS_FILE
from tests.run_configs import small_run_config

pytestmark = pytest.mark.slow

TOKEN_TYPE_KEYS = frozenset(k for k, spec in METRIC_SPECS.items() if "token_types" in spec.requires)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "logging.jsonl").read_text().splitlines() if x.strip()]


def _assert_every_token_type_key_logged(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coordexp.cli import check_logs

    records = _records(run_dir)
    train_keys = {k for r in records if "loss" in r for k in r}
    eval_keys = {k for r in records if "eval_loss" in r for k in r}
    assert len(TOKEN_TYPE_KEYS) == 13
    assert TOKEN_TYPE_KEYS <= train_keys, sorted(TOKEN_TYPE_KEYS - train_keys)
    assert {f"eval_{k}" for k in TOKEN_TYPE_KEYS} <= eval_keys
    assert not (run_dir / UNTYPED_ROWS_FILE).exists()
    capsys.readouterr()
    assert check_logs.main([str(run_dir)]) == 0, capsys.readouterr().out


def _rewritten(label: str, split: str, n: int) -> list[dict[str, Any]]:
    """Demo rows whose answer text is rewritten as CoordJSON; the JSON payload is kept as it was."""
    rows = []
    for row in make_rows(label, split, n):
        rows.append({**row, "messages": as_coordjson(row)["messages"]})
    return rows


def test_the_16_row_coordjson_case_logs_every_token_type_key(
    demo_assets_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {}
    for split, n in (("train", 8), ("val", 4)):
        path = tmp_path / f"{split}.jsonl"
        rows = _rewritten("lvis", split, n) + _rewritten("coco", split, n)
        assert all("assistant_payload" in r and "<|coord_" in r["messages"][1]["content"] for r in rows)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        files[split] = [str(path)]
    raw = demo_config(demo_assets_root).model_dump()
    raw["data"].update(train=files["train"], val=files["val"])
    cfg = small_run_config(raw, tmp_path / "run", layout="padded", max_samples=None)
    assert cfg.stage1().contracts is not None and cfg.stage1().contracts.mode == "strict"
    result = train(cfg)
    _assert_every_token_type_key_logged(result.output_dir, capsys)


@pytest.mark.parametrize("layout", ["padding_free", "packing"])
def test_the_coordjson_demo_trains_in_every_layout(
    layout: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path_factory.getbasetemp() / "demo_coordjson"
    raw = demo_config(root, kind="coordjson").model_dump()
    assert raw["data"]["answer_format"] == "coordjson"
    result = train(small_run_config(raw, tmp_path / f"run_{layout}", layout=layout))
    _assert_every_token_type_key_logged(result.output_dir, capsys)
