"""One rank of a real 2-process run in which rank 1 alone fails (test_distributed.py runs it).

    python -m torch.distributed.run --standalone --nproc_per_node 2 rank_failure_script.py CONFIG.yaml OUT

Trains through ``coordexp.launch.train`` (the ``coordexp train`` entry) in strict contract mode.
On rank 1 only, an extra batch enricher writes an extra it never declared, so rank 1's collator
raises ``ContractViolation`` on its first batch, inside the dataloader, before any collective of
that step; rank 0's batches are fine. Each rank writes the exception it ended with to
``OUT/rank<r>.txt`` and re-raises it. Not a test module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)


class UndeclaredExtraEnricher:
    """Declares nothing, then writes an extra anyway: the strict guard refuses the batch."""

    name = "undeclared"
    emits: frozenset[str] = frozenset()
    optional = True

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        batch["rank1_debug_extra"] = 1


def main(config: str, out: str) -> None:
    from coordexp.launch import load_config, train
    from coordexp.swift_seam.mixins import DatasetMetricsCollatorMixin

    rank = int(os.environ["RANK"])
    if rank == 1:
        DatasetMetricsCollatorMixin.stage1_extra_enrichers = (UndeclaredExtraEnricher(),)
    try:
        train(load_config(config))
    except BaseException as exc:
        Path(out, f"rank{rank}.txt").write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        raise
    Path(out, f"rank{rank}.txt").write_text("finished", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
