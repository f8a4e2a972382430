"""A real training run that SIGKILLs itself right after logging step K (test_resume.py runs it).

    python tests/integration/killed_run_script.py CONFIG.yaml K

Trains through ``coordexp.launch.train`` (the ``coordexp train`` entry) with one extra callback:
after ms-swift has appended step K's train record to ``logging.jsonl``, the process kills itself
with SIGKILL - no cleanup, no flush, like an OOM kill or a pre-empted node. Not a test module.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import torch
from transformers import TrainerCallback

torch.set_num_threads(1)


class KillAfterLog(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        # Added last, so it runs after ms-swift's callback has written the record.
        if state.global_step == self.step and logs and "loss" in logs:
            os.kill(os.getpid(), signal.SIGKILL)


def main(config: str, kill_step: int) -> None:
    import coordexp.launch.run as run
    from coordexp.launch.config import load_config

    build = run.build_trainer

    def build_with_kill(cfg: Any) -> Any:
        trainer = build(cfg)
        trainer.add_callback(KillAfterLog(kill_step))
        return trainer

    run.build_trainer = build_with_kill  # type: ignore[assignment]
    run.train(load_config(config))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
