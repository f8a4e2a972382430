"""The trainer-step benchmark runs on a tiny size, its check passes, and the stack adds ONE host sync
per step (the statistics transfer) to what plain ms-swift's step already does. Counts only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_trainer_step

pytestmark = pytest.mark.slow


def test_benchmark_runs_on_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--lengths", "300", "--vocab", "4096", "--repeats", "1", "--threads", "1", "--json", str(out)]
    assert bench_trainer_step.main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["meta"]["checks_ok"] is True and payload["meta"]["lengths"] == [300]
    (result,) = payload["results"]
    assert set(result["median_ms"]) == set(bench_trainer_step.VARIANTS)
    assert result["added_syncs"] == {"plain": 0, "metrics": 1, "coord_on": 1}
    assert all(result["peak_bytes"][name] > 0 for name in bench_trainer_step.VARIANTS)
    assert result["checks"][0]["loss_rel_err"] <= 1e-5


def test_benchmark_times_the_stacks_without_materialised_logits(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--lengths", "300", "--vocab", "4096", "--repeats", "1", "--threads", "1", "--no-logits"]
    assert bench_trainer_step.main([*argv, "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    (result,) = payload["results"]
    variants = (*bench_trainer_step.VARIANTS, *bench_trainer_step.UNMATERIALISED)
    assert payload["meta"]["variants"] == list(variants) and set(result["median_ms"]) == set(variants)
    assert [c["ok"] for c in result["checks"]] == [True, True]  # both metrics-only stacks == plain
    assert {result["added_syncs"][name] for name in bench_trainer_step.UNMATERIALISED} == {1}


def test_benchmark_times_every_term_on(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        "--lengths",
        "300",
        "--vocab",
        "4096",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--all-terms",
        "--no-logits",
    ]
    assert bench_trainer_step.main([*argv, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert {"all_terms", "all_terms_no_logits"} <= set(result["median_ms"])
    # every term on (boxes and repulsion pairs from the row's box extras): still ONE added host sync
    assert result["added_syncs"]["all_terms"] == result["added_syncs"]["all_terms_no_logits"] == 1


def test_benchmark_times_the_gradient_monitor(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--lengths", "300", "--vocab", "4096", "--repeats", "1", "--threads", "1", "--grad-monitor"]
    assert bench_trainer_step.main([*argv, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["median_ms"]) == {*bench_trainer_step.VARIANTS, "coord_on_gradmon"}
    assert result["checks"][-1]["ok"] is True  # the monitored step's loss and gradient == coord on
    assert result["added_syncs"]["coord_on_gradmon"] == result["added_syncs"]["coord_on"] == 1
