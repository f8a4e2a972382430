"""The modes of the package: a step's ``Mode`` (train or eval) and the guard modes (what a contract
violation does).

- ``strict``: raise :class:`ContractViolation` naming the key and the rule (tests, CI).
- ``warn``: warn once per (key, rule) and drop the offending metric write or extra; training goes on.
- ``off``: no checks.

Training takes the mode from ``custom.contracts.mode`` in the YAML (default ``warn``); the test
suite switches the process default to ``strict``. There is no CLI flag.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Literal, cast

from coordexp.contracts.errors import ContractViolation
from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.generated.models.config import ContractsConfig

Mode = Literal["train", "eval"]
"""The mode of a step, a logged record or an observation (ms-swift's ``train``/``eval`` split)."""

GuardMode = Literal["strict", "warn", "off"]
GUARD_MODES: tuple[GuardMode, ...] = ("strict", "warn", "off")
TRAINING_DEFAULT_MODE: GuardMode = ContractsConfig().mode  # custom.contracts.mode's schema default


class ContractWarning(UserWarning):
    """Category of the warnings the guards emit in ``warn`` mode."""


_state = threading.local()
_process_default: GuardMode = TRAINING_DEFAULT_MODE
_warned = WarnOnce()  # (key, rule) pairs, process-wide


def validate_mode(mode: str) -> GuardMode:
    if mode not in GUARD_MODES:
        raise ValueError(f"custom.contracts.mode: must be one of {', '.join(GUARD_MODES)}, got {mode!r}")
    return cast(GuardMode, mode)


def set_default_mode(mode: str) -> None:
    """Set the process-wide default mode (the training entry applies ``custom.contracts.mode``)."""
    global _process_default
    _process_default = validate_mode(mode)


def default_mode() -> GuardMode:
    override: GuardMode | None = getattr(_state, "mode", None)
    return override if override is not None else _process_default


@contextlib.contextmanager
def contracts_mode(mode: str) -> Iterator[None]:
    """Use ``mode`` in this thread for the duration of the block."""
    previous = getattr(_state, "mode", None)
    _state.mode = validate_mode(mode)
    try:
        yield
    finally:
        _state.mode = previous


def resolve_mode(mode: str | None) -> GuardMode:
    return default_mode() if mode is None else validate_mode(mode)


def violate(violation: ContractViolation, mode: GuardMode) -> None:
    """Apply ``mode`` to a violation: raise (strict) or warn once per key and rule (warn)."""
    if mode == "strict":
        raise violation
    if mode == "warn":
        _warned.warn(
            (violation.key, violation.rule),
            f"{violation} (dropped; further violations of this rule for this key are silent)",
            ContractWarning,
            stacklevel=3,
        )


def reset_warned() -> None:
    """Forget which (key, rule) pairs have warned (for tests and new runs)."""
    _warned.reset()
