"""Two gloo ranks, ``torch.multiprocessing`` spawn: rank 1 fails while rank 0 waits in a collective
(the bad-input matrix's ``ranks-*`` cases). ``failure``: ``contract`` (the strict extras guard
refuses an undeclared extra) or ``coord`` (the Stage-1 ``compute_loss`` with the coord loss on gets
a batch without labels: ``CoordObjectiveError``).

Each rank runs inside ``stop_all_ranks_on_error`` as the training entry does, with a process-group
timeout of ``PG_TIMEOUT_S``; each rank writes the exception it ended with to ``OUT/rank<r>.txt``,
rank 0 also pickled to ``OUT/rank0.pkl``.
Not a test module.
"""

from __future__ import annotations

import os
import pickle
from datetime import timedelta
from pathlib import Path

PG_TIMEOUT_S = 600
WORLD = 2


def _fail_on_rank_1(failure: str, out: str) -> None:
    import torch

    from coordexp.contracts import check_enricher_output

    if failure == "contract":  # the collator's guard: an enricher wrote an extra it did not declare
        batch = {"input_ids": torch.zeros(1, 2), "rank1_debug_extra": 1}
        check_enricher_output("undeclared", ["rank1_debug_extra"], [], batch, mode="strict")
    elif failure == "coord":  # compute_loss with the coord loss on and a batch without labels
        from tests.components.stage1_fixtures import BatchSpec
        from tests.hardening.support import custom, make_batch, stage1_trainer

        trainer, model = stage1_trainer(custom(True), Path(out, "rank1"))
        batch = make_batch(BatchSpec(packed=False, with_types=True))
        batch.pop("labels")
        trainer.compute_loss(model, batch)
    raise AssertionError(f"{failure}: rank 1 was meant to fail")


def worker(rank: int, init_file: str, out: str, failure: str = "contract") -> None:
    import torch
    import torch.distributed as dist

    from coordexp.launch.rank_failure import stop_all_ranks_on_error

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    ended: BaseException | None = None
    try:
        with stop_all_ranks_on_error():
            dist.init_process_group(
                "gloo",
                init_method=f"file://{init_file}",
                rank=rank,
                world_size=WORLD,
                timeout=timedelta(seconds=PG_TIMEOUT_S),
            )
            if rank == 1:
                _fail_on_rank_1(failure, out)
            dist.all_reduce(torch.ones(1))  # rank 0: its next collective
            dist.all_reduce(torch.ones(1))
    except BaseException as exc:
        ended = exc
    Path(out, f"rank{rank}.txt").write_text(f"{type(ended).__name__}: {ended}", encoding="utf-8")
    if rank == 0:  # the very exception rank 0 ended with, for the test process to re-raise
        Path(out, "rank0.pkl").write_bytes(pickle.dumps(ended))
