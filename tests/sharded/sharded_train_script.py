"""One rank of a real 2-process ``coordexp train`` (torchrun, gloo, CPU), observed for tests/sharded.

    python -m torch.distributed.run --standalone --nproc_per_node 2 sharded_train_script.py CONFIG OUT

Runs exactly what ``python -m coordexp train CONFIG`` runs (``coordexp.launch.run.train``); the only
addition is a callback that records, once the engine has wrapped the model, what each rank holds of
the output head and which engine the trainer enabled, into ``OUT/rank<r>.json``. Under ZeRO-3 the
head is partitioned (a rank holds 0 of its elements outside a gather), which is the case the Stage-1
pass must survive. Not a test module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)


def main(config: str, out: str) -> None:
    from transformers import TrainerCallback

    import coordexp.launch.run as run
    from coordexp.launch.config import load_config

    rank = int(os.environ["RANK"])
    record: dict[str, Any] = {"rank": rank}
    real_build = run.build_trainer

    class HeadProbe(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            head = model.get_output_embeddings().weight
            record.update(
                deepspeed=bool(trainer.is_deepspeed_enabled),
                fsdp=bool(trainer.is_fsdp_enabled),
                head_local_numel=int(head.numel()),
                head_full_numel=int(getattr(head, "ds_numel", head.numel())),
            )

    def build(cfg: Any) -> Any:
        nonlocal trainer
        trainer = real_build(cfg)
        trainer.add_callback(HeadProbe())
        return trainer

    trainer: Any = None
    run.build_trainer = build  # type: ignore[assignment]
    result = run.train(load_config(config))
    record["global_step"] = int(trainer.state.global_step)
    record["train_loss"] = float(result.train_metrics["train_loss"])
    Path(out, f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
