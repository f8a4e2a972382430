"""A real ms-swift training step: plain SFT against the Stage-1 stack (one pass through compute_loss_func).

Run ``python -m benchmarks.bench_trainer_step`` (``--help`` for the options). It builds a tiny-hidden,
large-vocab Qwen3 offline: the demo tokenizer (the 1,000 coord tokens included), and a
``Qwen3ForCausalLM`` with hidden size 64, 2 layers and ``--vocab`` rows (default 32,000; the rows
beyond the tokenizer are padding, as real checkpoints have). It loads the model through ms-swift
(``get_model_processor``, ``get_template(..., padding_free=True)``). Then, for each length, it builds one
packed row (several samples; ~79% of positions supervised, ~35% of those coord tokens; ``position_ids``
restart per sample, as ms-swift's packing gives). It times ms-swift 4.6's ``Seq2SeqTrainer.training_step``
(``_prepare_inputs`` with its ``logits_to_keep`` mask, forward, loss, backward) for three trainers that
share the model:

- ``plain``: ms-swift's ``Seq2SeqTrainer``. The model computes transformers' causal-LM loss.
- ``metrics``: the Stage-1 trainer with every feature but the coord loss. That is token metrics (top-5,
  per type, coord-mass monitors), the coord diagnostics and the instability monitor. The base CE and
  every statistic come from ONE pass over the logits through ``compute_loss_func``.
- ``coord_on``: the same with the coord loss on (base CE of the non-coord targets + softCE, W1, gate).
- with ``--all-terms``, also ``all_terms``: the coord loss with every issue-21 term on as well (text gate,
  bbox_geo, bbox_size_aux, adjacent repulsion). The row then carries the box extras the collator's
  answer parser would attach (each sample's coord targets in quartets, links to the previous box).
- with ``--no-logits``, also ``metrics_no_logits`` and ``coord_on_no_logits`` (and ``all_terms_no_logits``):
  the same stacks with ``custom.stage1_pass.materialize_logits: false`` (the pass computes the logits
  chunk by chunk from the hidden states and ``lm_head``; the full logits never exist).

The batch carries the Stage-1 extras (token types, pack sizes, labels) the collator would attach.
``instability_monitor.min_supervised_tokens`` is set above the row length, so the random model's zero
accuracy does not write an event file every step (events are rare in real runs).

Reported per length and variant:

- **Step time.** The median over ``--repeats`` interleaved repetitions (the order rotates every
  repetition), as a ratio to ``plain`` in the same run.
- **Peak memory.** On CPU, a traced peak of tensor bytes alive during one step (``TensorBytesTracker``
  of ``bench_stage1``: every storage an aten op creates counts until it is freed). Parameter gradients
  are freed before every step, so they count in every variant.
- **Host syncs.** ``SyncCounter(count_host_copies=True)`` around one step. It sees ``.item()``,
  ``nonzero``, boolean indexing and host copies, so it also counts ms-swift's own syncs
  (``prepare_logits_to_keep``, ``token_acc``) and the model's bool-mask ``logits_to_keep`` indexing.
  "added" is the variant's count minus ``plain``'s.

Checks (exit code 1 when one fails): the ``metrics`` step's loss and ``lm_head`` gradient equal the
``plain`` step's (relative 1e-5). There, the base CE is ms-swift's own CE, computed by the Stage-1 pass.

Targets (CPU, 2,048 and 8,192 tokens): the stack's step at most 1.15x the plain step, peak memory no
higher than plain, at most 2 host syncs per step (added by the stack); every term on at most 1.10x the
plain step, peak memory no higher, host syncs plain + 1. Without materialised logits (CPU, 8,192
tokens): peak memory at most 0.5x plain's, step time at most 1.2x; the check then also covers
``metrics_no_logits``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_stage1 import device_name
from benchmarks.measure import TensorBytesTracker
from coordexp.functional import IGNORE_INDEX, TYPE_COORD, TYPE_DESC, TYPE_FORMAT, SyncCounter

VARIANTS = ("plain", "metrics", "coord_on")
UNMATERIALISED = ("metrics_no_logits", "coord_on_no_logits")
"""``--no-logits``: the same two stacks with ``custom.stage1_pass.materialize_logits: false``."""
ALL_TERMS = ("all_terms",)
"""``--all-terms``: the coord loss with every issue-21 term on (with ``--no-logits`` also
``all_terms_no_logits``)."""
GRAD_MONITOR_SUFFIX = "_gradmon"
"""``--grad-monitor``: ``coord_on_gradmon`` (and ``all_terms_gradmon`` with ``--all-terms``), the stack with
``custom.grad_monitor`` monitoring every step (interval 1, the worst case; the default interval 20
monitors one optimizer step in 20)"""
LABELS = {
    "plain": "plain ms-swift",
    "metrics": "stack, metrics only",
    "coord_on": "stack, coord on",
    "all_terms": "stack, every term on",
    "metrics_no_logits": "metrics only, no logits",
    "coord_on_no_logits": "coord on, no logits",
    "all_terms_no_logits": "every term on, no logits",
    "coord_on_gradmon": "coord on, grad monitor every step",
    "all_terms_gradmon": "every term on, grad monitor every step",
}
TERMS: dict[str, Any] = {
    "coord_soft_ce_w1": {
        "text_gate_weight": 0.1,
        "adjacent_repulsion_weight": 0.01,
        "adjacent_repulsion_filter_mode": "same_desc",
    },
    "bbox_geo": {"enabled": True, "smoothl1_weight": 1.0, "ciou_weight": 1.0},
    "bbox_size_aux": {
        "enabled": True,
        "log_wh_weight": 0.05,
        "oversize_penalty_weight": 0.1,
        "oversize_area_frac_threshold": 0.5,
        "oversize_log_w_threshold": None,
        "oversize_log_h_threshold": None,
        "eps": 1e-6,
    },
}
"""the terms ``all_terms`` adds to ``coord_on`` (the reference's typical weights)"""
HIDDEN, LAYERS = 64, 2
DATASET = "lvis"


def _custom(variant: str, max_tokens: int) -> dict[str, Any]:
    monitored = variant.endswith(GRAD_MONITOR_SUFFIX)
    name = variant.removesuffix(GRAD_MONITOR_SUFFIX)
    stack = name.removesuffix("_no_logits")
    custom = _stack_custom(stack != "metrics", max_tokens, not name.endswith("_no_logits"))
    if stack == "all_terms":
        custom["coord_soft_ce_w1"].update(TERMS["coord_soft_ce_w1"])
        custom.update({k: dict(v) for k, v in TERMS.items() if k != "coord_soft_ce_w1"})
    if monitored:
        custom["grad_monitor"] = {"enabled": True, "interval": 1}
    return custom


def _stack_custom(coord_on: bool, max_tokens: int, materialize_logits: bool = True) -> dict[str, Any]:
    return {
        "stage1_pass": {"materialize_logits": materialize_logits},
        "coord_soft_ce_w1": {"enabled": coord_on},
        "token_type_metrics": {
            "enabled": True,
            "include": [DATASET],
            "log_top5": True,
            "coord_monitor_mass": True,
        },
        "instability_monitor": {"enabled": True, "min_supervised_tokens": max_tokens + 1},
    }


def build_checkpoint(root: Path, vocab: int, max_length: int) -> Path:
    from coordexp.demo.model import build_demo_model
    from coordexp.demo.tokenizer import build_demo_tokenizer

    tokenizer = build_demo_tokenizer(root)
    build_demo_model(
        root,
        tokenizer,
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        vocab_size=vocab,
        max_position_embeddings=max_length,
    )
    return root


def build_trainers(
    checkpoint: Path, out: Path, max_length: int, variants: Sequence[str] = VARIANTS
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from swift import Seq2SeqTrainer, Seq2SeqTrainingArguments, get_model_processor, get_template

    from coordexp.swift_seam.assembly import build_trainer_cls

    model, processor = get_model_processor(
        str(checkpoint), model_type="qwen3", device_map="cpu", attn_impl="sdpa"
    )
    template = get_template(
        processor, template_type="qwen3_nothinking", max_length=max_length, padding_free=True
    )
    template.set_mode("train")
    args = Seq2SeqTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
        check_model=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        save_strategy="no",
    )
    common = {"model": model, "args": args, "template": template, "train_dataset": [{}]}
    trainers = {"plain": Seq2SeqTrainer(**common)}
    for name in variants[1:]:
        trainers[name] = build_trainer_cls(Seq2SeqTrainer, _custom(name, max_length))(**common)
    return trainers


def packed_row(length: int, tokenizer: Any, seed: int) -> tuple[dict[str, Any], dict[str, float]]:
    """One packed row (prompt unsupervised, answer supervised, ~35% coord targets) with its extras."""
    from coordexp.coord_tokens.codec import get_coord_token_ids
    from coordexp.generated.batch_extras import (
        BOX_PAIRS_KEY,
        BOX_SLOTS_KEY,
        DATASET_LABELS_KEY,
        DATASET_SEGMENTS_KEY,
        PACK_NUM_SAMPLES_KEY,
        TOKEN_TYPES_KEY,
        BoxPair,
    )

    gen = torch.Generator().manual_seed(seed)
    coord_ids = torch.tensor(get_coord_token_ids(tokenizer))
    text_vocab = int(coord_ids.min())  # text ids below the coord block
    ids: list[int] = []
    labels: list[int] = []
    types: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    links: list[int] = []
    samples = 0
    while len(ids) < length:
        size = min(int(torch.randint(200, 600, (1,), generator=gen)), length - len(ids))
        prompt = max(1, int(0.21 * size))
        answer = size - prompt
        is_coord = torch.rand(answer, generator=gen) < 0.35
        text = torch.randint(10, text_vocab, (answer,), generator=gen)
        coords = coord_ids[torch.randint(0, len(coord_ids), (answer,), generator=gen)]
        ans = torch.where(is_coord, coords, text)
        ids += torch.randint(10, text_vocab, (prompt,), generator=gen).tolist() + ans.tolist()
        labels += [IGNORE_INDEX] * prompt + ans.tolist()
        kinds = torch.where(torch.rand(answer, generator=gen) < 0.3, TYPE_DESC, TYPE_FORMAT)
        types += [-1] * prompt + torch.where(is_coord, TYPE_COORD, kinds).tolist()
        positions += list(range(size))
        slots += [-1] * prompt
        links += [-1] * prompt
        # the sample's coord targets in quartets are its boxes (a remainder is a poly's); each box
        # after the first links to the previous one, with the same desc half of the time
        boxes = int(is_coord.sum()) // 4
        box_links = [int(BoxPair.FIRST)] + [
            int(BoxPair.SAME_DESC if bool(torch.rand(1, generator=gen) < 0.5) else BoxPair.OTHER_DESC)
            for _ in range(boxes - 1)
        ]
        seen = 0
        for coord in is_coord.tolist():
            box = seen // 4
            slots.append(seen % 4 if coord and box < boxes else -1)
            links.append(box_links[box] if coord and box < boxes else -1)
            seen += int(coord)
        samples += 1
    label_t = torch.tensor([labels])
    supervised = label_t != IGNORE_INDEX
    batch = {
        "input_ids": torch.tensor([ids]),
        "labels": label_t,
        "position_ids": torch.tensor([positions]),
        TOKEN_TYPES_KEY: torch.tensor([types]),
        BOX_SLOTS_KEY: torch.tensor([slots]),
        BOX_PAIRS_KEY: torch.tensor([links]),
        PACK_NUM_SAMPLES_KEY: torch.tensor([samples]),
        DATASET_LABELS_KEY: [DATASET],
        DATASET_SEGMENTS_KEY: [length],
    }
    coord_frac = float(torch.isin(label_t[supervised], coord_ids).float().mean())
    return batch, {
        "samples": samples,
        "supervised_frac": float(supervised.float().mean()),
        "coord_frac": coord_frac,
    }


def make_step(trainer: Any, batch: dict[str, Any]) -> Callable[[], torch.Tensor]:
    from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS

    drop = BATCH_EXTRAS_KEYS if not hasattr(trainer, "stage1_pipeline") else ()
    num_items = (batch["labels"][..., 1:] != IGNORE_INDEX).sum()

    def step() -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in drop}
        return trainer.training_step(trainer.model, inputs, num_items)

    return step


def _fresh(trainer: Any) -> None:
    trainer.model.zero_grad(set_to_none=True)


def time_steps(
    trainers: dict[str, Any], steps: dict[str, Callable[[], Any]], repeats: int
) -> dict[str, list[float]]:
    for name, step in steps.items():  # warm-up
        _fresh(trainers[name])
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for repeat in range(repeats):
        # rotate the order, so that no variant always follows the same one (allocator and cache state)
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            _fresh(trainers[name])
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def check_metrics_equals_plain(
    trainers: dict[str, Any], steps: dict[str, Callable[[], Any]], name: str = "metrics"
) -> dict[str, Any]:
    results = {}
    for variant in ("plain", name):
        _fresh(trainers[variant])
        loss = float(steps[variant]())
        grad = trainers[variant].model.lm_head.weight.grad.detach().clone()
        results[variant] = (loss, grad)
    (loss_p, grad_p), (loss_m, grad_m) = results["plain"], results[name]
    loss_err = abs(loss_m - loss_p) / abs(loss_p)
    grad_err = float((grad_m - grad_p).abs().max() / grad_p.abs().max())
    ok = loss_err <= 1e-5 and grad_err <= 1e-5
    return {
        "name": f"{LABELS[name]}: loss and lm_head gradient == plain ms-swift",
        "ok": ok,
        "loss_rel_err": loss_err,
        "grad_rel_err": grad_err,
    }


def check_monitor_changes_nothing(
    trainers: dict[str, Any], steps: dict[str, Callable[[], Any]], monitored: str
) -> dict[str, Any]:
    """The monitored step has the unmonitored stack's loss and gradient, bit for bit."""
    base = monitored.removesuffix(GRAD_MONITOR_SUFFIX)
    results = {}
    for variant in (base, monitored):
        _fresh(trainers[variant])
        loss = float(steps[variant]())
        results[variant] = (loss, trainers[variant].model.lm_head.weight.grad.detach().clone())
    (loss_c, grad_c), (loss_m, grad_m) = results[base], results[monitored]
    return {
        "name": f"{LABELS[monitored]}: loss and lm_head gradient == {LABELS[base]}",
        "ok": loss_c == loss_m and torch.equal(grad_c, grad_m),
        "loss_abs_err": abs(loss_m - loss_c),
        "grad_abs_err": float((grad_m - grad_c).abs().max()),
    }


def measure(trainers: dict[str, Any], batch: dict[str, Any], repeats: int) -> dict[str, Any]:
    steps = {name: make_step(trainers[name], batch) for name in trainers}
    checks = [
        check_metrics_equals_plain(trainers, steps, name)
        for name in ("metrics", "metrics_no_logits")
        if name in trainers
    ]
    for name in trainers:
        if name.endswith(GRAD_MONITOR_SUFFIX):
            checks.append(check_monitor_changes_nothing(trainers, steps, name))
    times = time_steps(trainers, steps, repeats)
    median = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    syncs, peaks = {}, {}
    for name, step in steps.items():
        _fresh(trainers[name])
        with SyncCounter(count_host_copies=True) as counter:
            step()
        syncs[name] = {"count": counter.count, "ops": dict(counter.ops)}
        _fresh(trainers[name])
        with TensorBytesTracker() as tracker:
            step()
        peaks[name] = tracker.peak
    return {
        "median_ms": median,
        "ratio": {name: median[name] / median["plain"] for name in median},
        "peak_bytes": peaks,
        "peak_ratio": {name: peaks[name] / peaks["plain"] for name in peaks},
        "syncs": syncs,
        "added_syncs": {name: syncs[name]["count"] - syncs["plain"]["count"] for name in syncs},
        "checks": checks,
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def format_table(results: Sequence[dict[str, Any]]) -> str:
    variants = list(results[0]["median_ms"]) if results else list(VARIANTS)
    short = " / ".join(LABELS[n].removeprefix("stack, ").removesuffix(" ms-swift") for n in variants)
    lines = [
        f"| tokens | plain ms-swift step | {' | '.join(LABELS[n] for n in variants[1:])} "
        f"| peak memory ({short}) | host syncs per step ({short}) |",
        "|---" * (len(variants) + 3) + "|",
    ]
    for r in results:
        m, ratio, p, s = r["median_ms"], r["ratio"], r["peak_bytes"], r["syncs"]
        cells = " | ".join(f"{m[n]:.0f} ms ({ratio[n]:.2f}x)" for n in variants[1:])
        lines.append(
            f"| {r['length']:,} | {m['plain']:.0f} ms | {cells} "
            f"| {' / '.join(_mib(p[n]) for n in variants)} "
            f"| {' / '.join(str(s[n]['count']) for n in variants)} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--lengths", default="2048,8192", help="comma-separated tokens per packed row")
    parser.add_argument("--vocab", type=int, default=32_000, help="model vocabulary (>= the tokenizer's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--all-terms", action="store_true", help="also time the coord loss with every issue-21 term on"
    )
    parser.add_argument(
        "--no-logits",
        action="store_true",
        help="also time the stacks with custom.stage1_pass.materialize_logits: false",
    )
    parser.add_argument(
        "--grad-monitor",
        action="store_true",
        help="also time the coord-on stack with custom.grad_monitor on every step",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(v) for v in args.lengths.split(",")]
    max_length = max(lengths)
    results = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_checkpoint(Path(tmp) / "model", args.vocab, max_length)
        terms = ALL_TERMS if args.all_terms else ()
        unmaterialised = UNMATERIALISED + tuple(f"{n}_no_logits" for n in terms) if args.no_logits else ()
        monitored = (
            tuple(f"{n}{GRAD_MONITOR_SUFFIX}" for n in ("coord_on", *terms)) if args.grad_monitor else ()
        )
        variants = VARIANTS + terms + unmaterialised + monitored
        trainers = build_trainers(checkpoint, Path(tmp) / "out", max_length, variants)
        tokenizer = trainers["plain"].template.tokenizer
        for length in lengths:
            batch, shape = packed_row(length, tokenizer, args.seed)
            print(
                f"[{length:,} tokens] {shape['samples']} samples, {shape['supervised_frac']:.0%} supervised, "
                f"{shape['coord_frac']:.0%} of those coord; {args.repeats} interleaved repeats",
                flush=True,
            )
            result = {"length": length, **shape, **measure(trainers, batch, args.repeats)}
            ok &= all(c["ok"] for c in result["checks"])
            for check in result["checks"]:
                print(f"[{length:,} tokens] check {'ok' if check['ok'] else 'FAIL'}: {check}", flush=True)
            print(
                f"[{length:,} tokens] "
                + ", ".join(
                    f"{LABELS[n]} {result['median_ms'][n]:.0f} ms ({result['ratio'][n]:.2f}x), "
                    f"peak {_mib(result['peak_bytes'][n])}, {result['syncs'][n]['count']} syncs"
                    for n in variants
                ),
                flush=True,
            )
            results.append(result)
    table = format_table(results)
    print()
    print(table)
    if args.json:
        meta = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": device_name(torch.device("cpu")),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "vocab": args.vocab,
            "hidden_size": HIDDEN,
            "layers": LAYERS,
            "dtype": "float32",
            "repeats": args.repeats,
            "lengths": lengths,
            "variants": list(variants),
            "checks_ok": ok,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not ok:
        print("CHECK FAILED: a step does not reproduce its reference (see the checks above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
