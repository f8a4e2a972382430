"""Two gloo ranks on one node: the pre-pass runs once (the node's first rank; the other reads its
cache) and the run logs the values a one-rank run logs with the same global batch (every key the
catalog aggregates exactly across ranks)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist
import yaml

from coordexp.generated.metric_catalog import METRIC_SPECS
from coordexp.launch import parse_config, train
from tests.integration.test_lazy_loader_logs import logged_values
from tests.processes import child_env, torchrun

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available"),
]
RUN_TIMEOUT_S = 300


def _raw_config(tmp_path: Path, name: str, batch: int) -> dict[str, Any]:
    from coordexp.launch import demo_config

    raw = demo_config(tmp_path / "demo").model_dump(mode="json")
    raw["data"].update(val=[], max_samples=12, layout="padded", cache_dir=str(tmp_path / f"cache_{name}"))
    raw["training"].update(
        output_dir=str(tmp_path / name),
        max_steps=3,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        average_tokens_across_devices=True,
        ddp_timeout=60,
    )
    raw["custom"]["contracts"] = {"mode": "strict"}
    return raw


def test_two_ranks_index_once_and_log_what_one_rank_logs(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(_raw_config(tmp_path, "two", batch=2)), encoding="utf-8")
    cmd = torchrun("-m", "coordexp", "train", str(config), nproc=2)
    try:
        proc = subprocess.run(
            cmd, env=child_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"2-rank run did not finish in {RUN_TIMEOUT_S} s:\n{str(exc.stderr)[-4000:]}")
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = proc.stdout
    assert out.count("[coordexp] indexing train rows:") == 1, out  # the pre-pass: once on the node
    assert out.count("[coordexp] train rows: 192 kept, 0 refused, indexed in") == 1, out
    assert out.count("[coordexp] train rows: 192 kept, 0 refused, from the cache") == 1, out
    assert len(list((tmp_path / "cache_two").glob("train-*.npz"))) == 1

    one = train(parse_config(_raw_config(tmp_path, "one", batch=4))).output_dir  # the same global batch
    two, single = logged_values(tmp_path / "two"), logged_values(one)
    assert len(two) == len(single) == 4  # 3 steps and the summary
    for a, b in zip(two, single, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            spec = METRIC_SPECS.get(key)
            if spec is not None and spec.aggregation == "mean":
                continue  # the catalog's mean of each rank's value (a p90), not the union's value
            if key == "total_flos":
                continue  # the HF trainer's estimate counts the main process's tokens only
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
            else:
                assert value == b[key], key
