"""Sharded engines: refuse an FSDP run that would silently be something else.

Why this exists: with ``training.fsdp`` set, accelerate switches to FSDP only for GPU-like devices.
On CPU it keeps ``MULTI_CPU`` and drops the FSDP plugin without a word, so two ranks train as
plain DDP and exit 0 (a single process fails inside the Trainer with a traceback instead). A user
who asked for FSDP must either get it or be told, in one line, before anything is loaded.

DeepSpeed needs nothing here: its CPU accelerator runs ZeRO-2/3 over gloo on this machine class
(tested in ``tests/sharded/``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from coordexp.config import ConfigError

__all__ = ["check_fsdp_enabled", "fsdp_requested", "fsdp_setup_errors"]

_HOW = (
    "launch FSDP on GPUs with torchrun (README, 'Several GPUs'); on CPU use training.deepspeed or plain DDP"
)


def fsdp_requested(training: Mapping[str, Any]) -> bool:
    """``training.fsdp`` asks for FSDP: ``true``, a non-empty option string or list."""
    value = training.get("fsdp")
    return bool(value) and value != "no"


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def fsdp_setup_errors(training: Mapping[str, Any]) -> list[str]:
    """Why FSDP cannot run in this process, one line each (empty when it can or is not asked for).

    Checked at config load, before the model: the launch (several processes) and the device (CUDA).
    """
    if not fsdp_requested(training):
        return []
    import torch

    if not torch.cuda.is_available():
        return [
            f"training.fsdp: FSDP needs GPUs and none is visible (on CPU it would run as plain DDP); {_HOW}"
        ]
    if _world_size() < 2:
        return [f"training.fsdp: FSDP needs a distributed launch (WORLD_SIZE is {_world_size()}); {_HOW}"]
    return []


def check_fsdp_enabled(trainer: Any) -> None:
    """After the trainer is built: FSDP asked for but not enabled (any other cause) stops the run."""
    args = getattr(trainer, "args", None)
    asked = fsdp_requested({"fsdp": getattr(args, "fsdp", None)})
    if asked and not getattr(trainer, "is_fsdp_enabled", False):
        raise ConfigError(f"training.fsdp: the trainer did not enable FSDP (accelerate left it off); {_HOW}")
