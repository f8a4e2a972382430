"""Instability monitor, host side: detect unstable steps, record them, decide guard and stop.

The device side reduces a step's statistics (loss, max |logit| over supervised positions,
finiteness, top-1 accuracy, supervised-token count) and moves them to the host in one transfer;
the caller wraps them in a ``StepObservation`` and calls ``InstabilityMonitor.observe``, which
returns a ``MonitorDecision`` (reasons, guard, stop) for the caller to apply. Nothing here imports
torch.
"""

from coordexp.monitor.events import META_JSON_MAX_CHARS, json_float, read_events
from coordexp.monitor.monitor import DEFAULT_DUMP_SUBDIR, InstabilityMonitor
from coordexp.monitor.observation import (
    ALL_REASONS,
    LOGIT_OVERFLOW_LIKE,
    LOSS_SPIKE,
    LOW_TOKEN_ACC,
    NONFINITE_GROUP,
    NONFINITE_LOGITS,
    NONFINITE_LOSS,
    ZERO_TOKEN_ACC,
    MonitorDecision,
    StepObservation,
)
from coordexp.monitor.settings import (
    EarlyStopSettings,
    GuardSettings,
    InstabilityMonitorSettings,
    normalize_monitor_config,
)

__all__ = [
    "ALL_REASONS",
    "DEFAULT_DUMP_SUBDIR",
    "LOGIT_OVERFLOW_LIKE",
    "LOSS_SPIKE",
    "LOW_TOKEN_ACC",
    "META_JSON_MAX_CHARS",
    "NONFINITE_GROUP",
    "NONFINITE_LOGITS",
    "NONFINITE_LOSS",
    "ZERO_TOKEN_ACC",
    "EarlyStopSettings",
    "GuardSettings",
    "InstabilityMonitor",
    "InstabilityMonitorSettings",
    "MonitorDecision",
    "StepObservation",
    "json_float",
    "normalize_monitor_config",
    "read_events",
]
