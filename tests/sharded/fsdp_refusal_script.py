"""One rank of ``coordexp train`` with ``training.fsdp`` on CPU, the load-time check switched off.

    python -m torch.distributed.run --standalone --nproc_per_node 2 fsdp_refusal_script.py CONFIG

With the check at config load bypassed, the run gets as far as the trainer, where accelerate has
silently dropped FSDP (``MULTI_CPU``): the check after the trainer is built must stop it. Not a
test module: test_fsdp.py runs it.
"""

from __future__ import annotations

import sys

import coordexp.launch.config as training_config
from coordexp.cli.main import main

if __name__ == "__main__":
    training_config.fsdp_setup_errors = lambda training: []  # type: ignore[assignment]
    raise SystemExit(main(["train", sys.argv[1]]))
