"""Memory of the Stage-1 stack stays bounded by the chunk; chunking never changes results; the benchmark's
correctness check runs (and fails on a wrong loss). Counts and bytes only: no wall-time assertions.

Chunk invariance is also covered against the slow reference in ``tests/functional``:
``test_fn_stage1_stats.py::test_chunked_equals_unchunked`` (statistics) and
``test_fn_losses.py::test_loss_and_grad_match_reference`` (loss and gradient at chunk 1, 7, N).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import bench_stage1, stage1_reference
from benchmarks.measure import TensorBytesTracker
from benchmarks.stage1_steps import build_packed_batch
from coordexp.functional import IGNORE_INDEX, CoordLossConfig, coord_loss, stage1_pass

VOCAB = 4096
CHUNK_ROWS = 256


def _peaks(length: int) -> tuple[int, int, int]:
    """``(stack peak, base CE peak, gradient bytes)`` traced over one forward + backward."""
    batch = build_packed_batch(length, VOCAB, torch.device("cpu"), torch.float32, seed=3)
    leaf = batch.logits.detach().requires_grad_(True)
    with TensorBytesTracker() as stack:
        loss, _ = coord_loss(
            leaf,
            batch.targets,
            batch.coord,
            CoordLossConfig(),
            base_ce=True,
            types=batch.types,
            top5=True,
            mass=True,
            chunk_size=CHUNK_ROWS,
        )
        loss.backward()
    leaf = batch.logits.detach().requires_grad_(True)
    with TensorBytesTracker() as base:
        F.cross_entropy(leaf, batch.targets, ignore_index=IGNORE_INDEX).backward()
    return stack.peak, base.peak, batch.logits.numel() * batch.logits.element_size()


def test_extra_peak_is_bounded_by_the_chunk_not_the_sequence() -> None:
    torch.manual_seed(0)
    small_stack, small_base, small_grad = _peaks(2048)
    large_stack, large_base, large_grad = _peaks(8192)
    # the one gradient-sized tensor is what any backward allocates; everything beyond it is scratch
    small_scratch, large_scratch = small_stack - small_grad, large_stack - large_grad
    assert 0 < small_scratch and large_scratch < 1.5 * small_scratch, (small_scratch, large_scratch)
    # a [N, V] fp32 temporary would be 4x larger at 8192 rows than at 2048
    assert large_scratch < large_grad / 2
    # over plain cross-entropy (log-softmax + a full-size gradient of it) the stack needs no extra memory
    assert large_stack - large_base <= 0 and small_stack - small_base <= 0


def test_cpu_chunk_cap_and_chunk_size_leave_results_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = build_packed_batch(300, 1500, torch.device("cpu"), torch.float32, seed=5)
    cfg = CoordLossConfig(ce_weight=0.3, temperature=0.7)

    def run(chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        leaf = batch.logits.detach().clone().requires_grad_(True)
        loss, stats = coord_loss(
            leaf,
            batch.targets,
            batch.coord,
            cfg,
            base_ce=True,
            types=batch.types,
            mass=True,
            chunk_size=chunk_size,
        )
        loss.backward()
        assert leaf.grad is not None
        return loss.detach(), leaf.grad, stats

    whole = run(300)
    parts = [run(7), run(64)]
    monkeypatch.setattr(stage1_pass, "CPU_CHUNK_ELEMENTS", 13 * 1500)  # the CPU cap: 13 rows
    parts.append(run(300))
    for loss, grad, stats in parts:
        torch.testing.assert_close(loss, whole[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, whole[1], rtol=1e-5, atol=1e-7)
        for key, value in stats.items():
            torch.testing.assert_close(value, whole[2][key], rtol=1e-5, atol=1e-5, msg=key)


TINY = ["--lengths", "200,333", "--vocab", "1536", "--repeats", "1", "--check-rows", "48"]


def test_benchmark_runs_and_checks_pass_on_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert bench_stage1.main([*TINY, "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["meta"]["checks_ok"] is True and payload["meta"]["lengths"] == [200, 333]
    for result in payload["results"]:
        assert all(check["ok"] for check in result["checks"])
        # one host transfer per step, nothing else
        assert {name: result["syncs"][name]["count"] for name in ("stack_on", "stack_off", "metrics")} == {
            "stack_on": 1,
            "stack_off": 1,
            "metrics": 1,
        }
        assert result["median_ms"]["base"] > 0 and set(result["ratio"]) == set(bench_stage1.VARIANTS)


def test_benchmark_check_fails_on_a_wrong_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    def off_by_a_bit(*args: object, **kwargs: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, stats = coord_loss(*args, **kwargs)  # type: ignore[arg-type]
        return loss * 1.001, stats

    monkeypatch.setattr(stage1_reference, "coord_loss", off_by_a_bit)  # the stack the check runs
    assert bench_stage1.main(["--lengths", "200", *TINY[2:]]) == 1
