"""The data-loader benchmark runs at tiny sizes (text rows only), so it cannot rot; no time asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_data

pytestmark = pytest.mark.slow  # six subprocesses, each importing torch and ms-swift


def test_the_data_benchmark_runs_on_tiny_sizes(tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = [
        "--text-rows",
        "30,60",
        "--vl-rows",
        "",
        "--num-proc",
        "1,2",
        "--json",
        str(out),
        "--markdown",
        str(md),
    ]
    assert bench_data.main(argv) == 0
    report = json.loads(out.read_text())
    cases = [(r["rows_written"], r["num_proc"], r["start"]) for r in report["results"]]
    assert cases == [
        (30, 1, "first"),
        (30, 2, "first"),
        (30, 2, "second"),
        (60, 1, "first"),
        (60, 2, "first"),
        (60, 2, "second"),
    ]
    assert all(r["rows"] <= r["rows_written"] and r["batch_rows"] == 4 for r in report["results"])
    assert all(r["peak_pss_mb"] > 0 and r["peak_rss_mb"] > 0 for r in report["results"])
    assert len(report["targets"]) == 3  # memory growth, the speed-up of 2 processes, the cache
    assert "| target | measured | met |" in md.read_text()
