"""What the monitor sees per step, what it answers, and the names of its reasons.

The statistics of a step (loss, max |logit| over supervised positions, finiteness, top-1 accuracy,
supervised-token count) are reduced on the device and reach the host as Python values in ONE
transfer; ``StepObservation`` is that host-side record, so the decision code never touches a
tensor and never forces another device sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # the monitor stays importable without torch (coordexp.contracts imports it)
    from coordexp.contracts.modes import Mode

__all__ = [
    "ALL_REASONS",
    "LOGIT_OVERFLOW_LIKE",
    "LOSS_SPIKE",
    "LOW_TOKEN_ACC",
    "NONFINITE_GROUP",
    "NONFINITE_LOGITS",
    "NONFINITE_LOSS",
    "ZERO_TOKEN_ACC",
    "MonitorDecision",
    "StepObservation",
]

NONFINITE_LOSS: Final = "nonfinite_loss"
"""The step's loss is NaN or +-inf."""
NONFINITE_LOGITS: Final = "nonfinite_logits"
"""Some logit is NaN or +-inf (or max |logit| over supervised positions is not finite)."""
LOGIT_OVERFLOW_LIKE: Final = "logit_overflow_like"
"""max |logit| over supervised positions exceeds ``guard.max_abs_logit``."""
LOSS_SPIKE: Final = "loss_spike"
"""Train only: loss >= abs_loss_threshold and (loss > spike_factor * EMA or EMA < threshold / 4)."""
ZERO_TOKEN_ACC: Final = "zero_token_acc"
"""At least ``min_supervised_tokens`` supervised tokens and top-1 accuracy exactly 0."""
LOW_TOKEN_ACC: Final = "low_token_acc"
"""On a loss spike, top-1 accuracy below ``guard.min_token_acc``."""

ALL_REASONS: Final[tuple[str, ...]] = (
    NONFINITE_LOSS,
    NONFINITE_LOGITS,
    LOGIT_OVERFLOW_LIKE,
    LOSS_SPIKE,
    ZERO_TOKEN_ACC,
    LOW_TOKEN_ACC,
)
"""Every reason, in the order a decision lists them."""

NONFINITE_GROUP: Final[frozenset[str]] = frozenset({NONFINITE_LOSS, NONFINITE_LOGITS, LOGIT_OVERFLOW_LIKE})
"""Reasons guarded by ``guard.guard_on_nonfinite``. ``logit_overflow_like`` belongs here: logits that
large are the step before bf16 overflow to inf, and their gradients poison the weights the same way."""


@dataclass(frozen=True, kw_only=True)
class StepObservation:
    """Host-side statistics of one forward pass (one micro-batch), as plain Python values.

    ``token_acc`` is top-1 accuracy over supervised next-token positions, ``None`` when not
    computed; it is ignored when ``supervised_tokens`` is 0. ``max_abs_logit`` is the max |logit|
    over supervised positions (0.0 when there are none). ``meta_json`` is the batch's
    ``instability_meta_json`` extra, when the enricher is on.
    """

    mode: Mode
    global_step: int
    loss: float
    epoch: float | None = None
    learning_rate: float | None = None
    supervised_tokens: int = 0
    token_acc: float | None = None
    max_abs_logit: float = 0.0
    logits_finite: bool = True
    meta_json: str | None = None


@dataclass(frozen=True)
class MonitorDecision:
    """The monitor's answer for one step; the caller applies it (the monitor changes nothing).

    ``guard``: replace this step's loss by a differentiable zero. ``stop``: set the trainer's
    stop flags. ``reasons`` lists the fired reasons in ``ALL_REASONS`` order.
    """

    reasons: tuple[str, ...] = ()
    guard: bool = False
    stop: bool = False
