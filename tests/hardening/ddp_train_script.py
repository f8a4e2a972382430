"""One rank of a real 2-process ms-swift run (torchrun, gloo, CPU), instrumented for test_distributed.

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_train_script.py CONFIG.yaml OUT

Builds the trainer exactly like ``python -m coordexp train`` (``coordexp.launch.build_trainer``),
then makes the ranks see batches that enable different feature-conditional keys:

- rank 0 drops ``token_types`` from every batch: no typed keys (``desc_token_frac`` ...);
- rank 1 masks every coord target to -100: no coord targets, so no ``coord_diag/*``; its
  ``POISONED_STEP``-th training forward returns NaN logits (a NaN loss on rank 1 only).

It records, per rank, into ``OUT/rank<r>.json``: the metric objects registered before the first step,
the keys and values (a ratio as numerator, denominator, observed) the pipeline wrote each step, every call
of the coord component's cross-rank count reduction (local ``[coord, base]`` counts in, global out),
the coord loss pieces of each step (local weighted term sums, the denominator used, the coord part
of the one-pass loss and the loss ms-swift's ``compute_loss`` returned) and the monitor's decisions.
Not a test module: test_distributed.py runs it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

POISONED_STEP = 3
"""Rank 1's third training forward returns NaN logits: its loss is NaN there, and only there."""


def main(config: str, out: str) -> None:
    import coordexp.components.coord_loss as coord_module
    from coordexp.coord_tokens.codec import get_coord_token_ids
    from coordexp.launch.config import load_config
    from coordexp.launch.run import build_trainer
    from coordexp.reporting import Ratio

    rank = int(os.environ["RANK"])
    trainer = build_trainer(load_config(config))
    pipeline = trainer.stage1_pipeline()
    record: dict[str, Any] = {
        "rank": rank,
        "keys": [],
        "values": [],
        "reductions": [],
        "coord": [],
        "decisions": [],
    }

    # -- the ranks' batches differ in what they enable ------------------------------------------
    base = trainer.data_collator
    coord_ids = torch.tensor(get_coord_token_ids(trainer.template.tokenizer))

    seen = {"batches": 0}

    def collate(batch: list[Any]) -> dict[str, Any]:
        out_batch = base(batch)
        seen["batches"] += 1
        labels = out_batch["labels"]
        if rank == 0:
            out_batch.pop("token_types", None)
        else:
            out_batch["labels"] = labels.masked_fill(torch.isin(labels, coord_ids.to(labels.device)), -100)
        return out_batch

    trainer.data_collator = collate
    forwards = {"train": 0}

    def poison(module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        if module.training:
            forwards["train"] += 1
            if rank == 1 and forwards["train"] == POISONED_STEP:
                output.logits = output.logits * float("nan")
        return output

    trainer.model.register_forward_hook(poison, with_kwargs=True)

    # -- instrumentation ---------------------------------------------------------------------------
    real_global = coord_module._global

    def counted_global(count: torch.Tensor, tr: Any) -> torch.Tensor:
        result = real_global(count, tr)
        record["reductions"].append([count.tolist(), result.tolist()])
        return result

    coord_module._global = counted_global  # type: ignore[assignment]

    real_coord_loss = coord_module.coord_loss
    weights = pipeline.coord.loss_cfg

    def traced_coord_loss(*args: Any, **kwargs: Any) -> Any:
        value, stats = real_coord_loss(*args, **kwargs)
        local = (
            weights.soft_ce_weight * float(stats["soft_ce_sum"])
            + weights.w1_weight * float(stats["w1_sum"])
            + weights.ce_weight * float(stats["ce_sum"])
            + weights.gate_weight * float(stats["gate_sum"])
        )
        base = float(stats["base_ce_sum"]) / float(kwargs["base_denominator"])
        record["coord"].append(
            {
                "n_coord": float(stats["n_coord"]),
                "local_sum": local,
                "denominator": float(kwargs["coord_denominator"]),
                "value": float(value.detach()) - base,  # the coord part of the one-pass loss
                "base": base,
            }
        )
        return value, stats

    coord_module.coord_loss = traced_coord_loss  # type: ignore[assignment]

    real_fused = pipeline.fused_loss

    def traced_fused(*args: Any) -> Any:
        value = real_fused(*args)
        record["coord"][-1]["fused"] = float(value.detach())
        return value

    pipeline.fused_loss = traced_fused  # type: ignore[method-assign]
    real_compute_loss = trainer.compute_loss

    def traced_compute_loss(*args: Any, **kwargs: Any) -> Any:
        result = real_compute_loss(*args, **kwargs)
        loss = result[0] if isinstance(result, tuple) else result
        record["coord"][-1]["returned"] = float(loss.detach())
        return result

    trainer.compute_loss = traced_compute_loss  # type: ignore[method-assign]

    # the metric objects every rank registered before its first step, in ms-swift's reduce order
    record["registered"] = [[k, type(m).__name__] for k, m in sorted(trainer.custom_metrics["train"].items())]
    real_write = pipeline.reporter.write

    def traced_write(tr: Any, mode: str, values: Any, labels: Any) -> int:
        record["keys"].append(sorted(values))
        record["values"].append(
            {k: [v.num, v.den, v.observed] if isinstance(v, Ratio) else float(v) for k, v in values.items()}
        )
        return real_write(tr, mode, values, labels)

    pipeline.reporter.write = traced_write  # type: ignore[method-assign]

    monitor = pipeline.monitor.monitor
    real_observe = monitor.observe

    def traced_observe(obs: Any) -> Any:
        decision = real_observe(obs)
        record["decisions"].append({"reasons": list(decision.reasons), "loss": obs.loss})
        return decision

    monitor.observe = traced_observe  # type: ignore[method-assign]
    record["is_main_process"] = monitor.is_main_process
    record["world_size"] = int(os.environ["WORLD_SIZE"])

    trainer.train()
    record["global_step"] = trainer.state.global_step
    Path(out, f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
