"""Benchmark of the Stage-1 stack against plain cross-entropy, with a correctness check.

Run ``python benchmarks/bench_stage1.py`` or ``python -m benchmarks.bench_stage1`` (``--help`` for the
options). For every length it builds ONE packed row like the reference measurement (several samples, each
a prompt that is not supervised and a JSON-like answer: ~79% of the positions supervised, ~35% of those
coord tokens; the coord ids are a consecutive block of 1,000 at the end of the vocab) with random logits
(fp32 on CPU, bf16 on a GPU), and measures forward + backward on those given logits (a leaf tensor):

- ``base``: ``F.cross_entropy`` over every supervised position, forward + backward;
- ``stack, coord on``: ``coord_loss(..., base_ce=True, types=..., top5=True, mass=True)`` - the base CE of
  the non-coord targets and the coord terms (softCE, W1, gate) through ONE autograd function with ONE
  gradient buffer, plus every token metric (top-1 / top-5, per type), the coord-mass monitors, the coord
  diagnostics and the instability statistics - forward + backward;
- ``stack, coord off``: the base CE as above + ``stage1_stats(...)`` with the coord diagnostics under
  ``no_grad``;
- ``metrics only``: ``stage1_stats(...)`` alone.

Every stack step ends the way a training step does: ONE ``stats_to_host`` transfer of the statistics and
the loss. Reported per variant: the median wall time over ``--repeats`` interleaved repetitions, the
ratio to the base CE of the same run, the host syncs of one step and the extra peak memory over base CE.

Host syncs: ``SyncCounter(count_host_copies=True)`` (a dispatch mode that sees ``.item()``, ``nonzero``,
boolean indexing, host copies, ...) around one step; on a GPU also ``torch.cuda.set_sync_debug_mode``
(its warnings are counted). On CPU the final ``stats_to_host`` copy dispatches no op (the tensor is
already on the host), so the benchmark adds it explicitly: the count is what the same step costs on a GPU.

Peak memory: on a GPU ``torch.cuda.max_memory_allocated`` minus the allocation before the step. On CPU
a traced peak: a ``TorchDispatchMode`` records the storage of every tensor an aten op creates during the
step and releases it when that storage dies, so the peak is the largest sum of tensor bytes alive at
once (what the kernels allocate internally for their own scratch is not seen). ``extra`` is the
variant's peak minus the base CE's peak (negative = less than plain CE, which keeps its fp32 log-softmax
and a full-size gradient of it); ``scratch`` is the peak beyond the one gradient-sized tensor that any
backward allocates - it is bounded by the chunk, not by the sequence length.

Correctness (exit code 1 when a check fails, so a fast wrong result cannot pass):
1. the stack's loss equals ``F.cross_entropy`` over the non-coord targets + the coord terms of an
   independent plain-torch reference (boolean indexing, ``logsumexp``, explicit Gaussian targets), and
   ``base_ce_sum / n_base`` equals that cross-entropy (relative 1e-4);
2. on the first ``--check-rows`` rows, the stack's gradient equals autograd through that reference.

Targets and what the CPU numbers say: CPU, 2,048 positions, vocab 32,000: stack overhead <= 1.0x the base
CE time and <= 2 host syncs. The eager path reaches it because each chunk (capped at
``CPU_CHUNK_ELEMENTS`` logits so it stays in cache) is read a handful of times with float-only passes,
ONE softmax per chunk serves the logsumexp of every statistic and the gradient, and the gradient is
written during the forward into the one buffer autograd receives (the backward only scales it).

GPU target (H100/H200, 16,384 positions, vocab 152,936: <= 13 ms overhead, <= 2 syncs, <= 1 GiB extra) -
not measured here (no GPU was lent). The syncs (1: the stats transfer) and the memory (one bf16 gradient
+ fp32 chunk scratch, less than plain CE keeps) hold by design; the time needs fused kernels, because
eager kernels each re-read the chunk (one bf16 read of the whole logits is ~1.7 ms; ``topk`` alone is
18-20 ms). What closes it: ``torch.compile`` (or Triton) of the per-chunk pass with static chunk shapes -
one kernel that reads a chunk once and produces the fp32 logsumexp, the count of logits above the GT
logit (top-5 membership without ``topk``), the argmax, the non-finite count / finite max and the
coord-slice logsumexp - and a second fused kernel that writes the chunk's gradient (softmax * row
coefficient, the coord-slice terms) into the single preallocated gradient, inside the same one
``autograd.Function``. The measured building blocks (performance.md): 5.9 ms for the fused row-statistics
pass, 9.95 ms for the gate forward + backward as one Function.

``--compile`` wraps the per-chunk function in ``torch.compile`` (inductor) as an experiment; the eager
path stays the reference and the default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.measure import _sync, count_syncs, peak_bytes, time_steps
from benchmarks.stage1_reference import check_stack
from benchmarks.stage1_steps import build_packed_batch, make_steps
from coordexp.functional import (
    CoordLossConfig,
    stage1_pass,
)

COORD_BINS = 1000
VARIANTS = ("base", "stack_on", "stack_off", "metrics")
LABELS = {
    "base": "base CE",
    "stack_on": "stack, coord on",
    "stack_off": "stack, coord off",
    "metrics": "metrics only",
}
QWEN3_1_7B: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}


HOST_TRANSFERS = {"base": 0, "stack_on": 1, "stack_off": 1, "metrics": 1}


# ------------------------------------------------------------------------------------------ measures


# ------------------------------------------------------------------------------------------- checks


# -------------------------------------------------------------------------------------------- model


def build_model(vocab: int, device: torch.device) -> Any:
    """A random-init Qwen3-1.7B-shaped causal LM (bf16, sdpa, gradient checkpointing)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=vocab, max_position_embeddings=65536, use_cache=False, **QWEN3_1_7B)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model: Any = Qwen3ForCausalLM(config)
        model = model.to(torch.bfloat16)
    model.gradient_checkpointing_enable()
    model.train()
    return model


def model_step_seconds(model: Any, length: int, vocab: int, device: torch.device, repeats: int) -> float:
    ids = torch.randint(0, vocab, (1, length), device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits
        F.cross_entropy(logits.view(-1, vocab)[:-1], ids.view(-1)[1:]).backward()

    step()
    times = []
    for _ in range(repeats):
        _sync(device)
        begin = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - begin)
    model.zero_grad(set_to_none=True)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------- report


@dataclass
class LengthResult:
    length: int
    samples: int
    supervised_frac: float
    coord_frac: float
    median_ms: dict[str, float]
    ratio: dict[str, float]
    paired_ratio: dict[str, float]
    syncs: dict[str, dict[str, Any]]
    peak_bytes: dict[str, int]
    extra_peak_bytes: dict[str, int]
    scratch_bytes: dict[str, int]
    model_step_ms: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


def _gib(n: float) -> str:
    if abs(n) >= 2**30:
        return f"{n / 2**30:+.2f} GiB"
    return f"{n / 2**20:+.0f} MiB"


def format_table(results: Sequence[LengthResult]) -> str:
    head = (
        "| length | model step | base CE | stack, coord on | stack, coord off | metrics only "
        "| host syncs (on / off / metrics) | extra peak over base CE (on / off / metrics) "
        "| stack scratch beyond the gradient |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results:
        base = r.median_ms["base"]
        cells = []
        for name in ("stack_on", "stack_off", "metrics"):
            ms = r.median_ms[name]
            text = f"{ms:.1f} ms ({r.ratio[name]:.2f}x"
            if name != "metrics":
                text += f", +{ms - base:.1f} ms"
                if r.model_step_ms:
                    text += f" = {100 * (ms - base) / r.model_step_ms:.1f}% of a step"
            cells.append(text + ")")
        syncs = " / ".join(str(r.syncs[n]["count"]) for n in ("stack_on", "stack_off", "metrics"))
        extra = " / ".join(_gib(r.extra_peak_bytes[n]) for n in ("stack_on", "stack_off", "metrics"))
        model = f"{r.model_step_ms:.0f} ms" if r.model_step_ms else "-"
        lines.append(
            f"| {r.length:,} | {model} | {base:.1f} ms | {' | '.join(cells)} | {syncs} | {extra} "
            f"| {_gib(r.scratch_bytes['stack_on'])} |"
        )
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def short_name(name: str) -> str:
    words = [w for w in name.lower().replace("(r)", "").replace("(tm)", "").split() if w.isalnum()]
    return "-".join(words[:3]) or "unknown"


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--lengths", default=None, help="comma-separated (CPU: 512,2048,4096; GPU: 4096,16384)"
    )
    parser.add_argument("--vocab", type=int, default=None, help="CPU: 32000; GPU: 152936")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--chunk-size", type=int, default=stage1_pass.DEFAULT_CHUNK_SIZE, help="rows per chunk"
    )
    parser.add_argument(
        "--cpu-chunk-elements",
        type=int,
        default=stage1_pass.CPU_CHUNK_ELEMENTS,
        help="CPU: logits per chunk at most (rows = this // vocab)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--check-rows", type=int, default=256, help="rows of the gradient check")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--model", choices=["qwen3-1.7b"], default=None, help="GPU only: model step")
    parser.add_argument("--compile", action="store_true", help="torch.compile the per-chunk function")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


@contextlib.contextmanager
def compiled_chunks(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    eager = stage1_pass.process_chunk
    stage1_pass.process_chunk = torch.compile(eager, dynamic=False)
    try:
        yield
    finally:
        stage1_pass.process_chunk = eager


def run(args: argparse.Namespace) -> tuple[list[LengthResult], bool]:
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    lengths = [int(v) for v in (args.lengths or ("4096,16384" if gpu else "512,2048,4096")).split(",")]
    vocab = args.vocab or (152_936 if gpu else 32_000)
    dtype = torch.bfloat16 if gpu else torch.float32
    cfg = CoordLossConfig()
    stage1_pass.CPU_CHUNK_ELEMENTS = args.cpu_chunk_elements
    model = None
    if args.model:
        if gpu:
            model = build_model(vocab, device)
        else:
            print(f"--model {args.model}: skipped on {device.type} (GPU only)", flush=True)
    results: list[LengthResult] = []
    all_ok = True
    for length in lengths:
        print(f"[length {length:,}] building the packed batch (vocab {vocab:,}, {dtype})", flush=True)
        batch = build_packed_batch(length, vocab, device, dtype, args.seed)
        print(
            f"[length {length:,}] {batch.samples} samples, {batch.supervised_frac:.0%} supervised, "
            f"{batch.coord_frac:.0%} of those coord",
            flush=True,
        )
        checks = check_stack(batch, cfg, args.chunk_size, args.check_rows)
        for check in checks:
            print(f"[length {length:,}] check {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
            all_ok &= check.ok
        steps = make_steps(batch, cfg, args.chunk_size)
        print(f"[length {length:,}] timing {args.repeats} interleaved repetitions", flush=True)
        times = time_steps(steps, args.repeats, device)
        median = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        paired = {
            name: statistics.median(t / b for t, b in zip(ts, times["base"], strict=True))
            for name, ts in times.items()
        }
        syncs = {name: count_syncs(step, device, HOST_TRANSFERS[name]) for name, step in steps.items()}
        peaks = {name: peak_bytes(step, device) for name, step in steps.items()}
        grad_bytes = batch.logits.numel() * batch.logits.element_size()
        model_ms = None
        if model is not None:
            print(f"[length {length:,}] model step", flush=True)
            model_ms = model_step_seconds(model, length, vocab, device, args.repeats) * 1e3
        result = LengthResult(
            length=length,
            samples=batch.samples,
            supervised_frac=batch.supervised_frac,
            coord_frac=batch.coord_frac,
            median_ms=median,
            ratio={name: median[name] / median["base"] for name in median},
            paired_ratio=paired,
            syncs=syncs,
            peak_bytes=peaks,
            extra_peak_bytes={name: peaks[name] - peaks["base"] for name in peaks},
            scratch_bytes={name: peaks[name] - (grad_bytes if name != "metrics" else 0) for name in peaks},
            model_step_ms=model_ms,
            checks=[vars(c) for c in checks],
        )
        results.append(result)
        line = ", ".join(f"{LABELS[n]} {median[n]:.1f} ms ({result.ratio[n]:.2f}x)" for n in VARIANTS)
        print(f"[length {length:,}] {line}", flush=True)
        del batch, steps
    return results, all_ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with compiled_chunks(args.compile):
        results, ok = run(args)
    print()
    print(format_table(results))
    print()
    print("host syncs include the one stats_to_host transfer per step")
    print("extra peak: variant peak - base CE peak; scratch: stack peak - the one gradient-sized tensor")
    if args.json:
        meta = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": device_name(device),
            "device_type": device.type,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "lengths": [r.length for r in results],
            "vocab": args.vocab or (152_936 if device.type == "cuda" else 32_000),
            "dtype": "bfloat16" if device.type == "cuda" else "float32",
            "repeats": args.repeats,
            "chunk_size": args.chunk_size,
            "cpu_chunk_elements": args.cpu_chunk_elements,
            "compile": args.compile,
            "checks_ok": ok,
            "model": args.model if device.type == "cuda" else None,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "results": [vars(r) for r in results], "table": format_table(results)}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not ok:
        print("CHECK FAILED: the stack's loss or gradient does not match the base path", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
