"""Run by the two-rank detection test under torchrun: train from a YAML, then print each rank's
pick of the best checkpoint (``load_best_model_at_end`` on an ``eval_det_*`` key) as one JSON line."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from coordexp.launch import load_config
from coordexp.launch.run import build_trainer


def main() -> None:
    trainer = build_trainer(load_config(sys.argv[1]))
    trainer.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = trainer.state
    print(
        "BEST " + json.dumps({"rank": rank, "best": state.best_model_checkpoint, "metric": state.best_metric})
    )


if __name__ == "__main__":
    main()
