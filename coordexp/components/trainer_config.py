"""What a trainer's ``custom.*`` sections ask of the Stage-1 pipeline, readable before it exists.

The trainer is being built when these are asked (is the one-pass seam needed, may the logits be
skipped), so they read the config sections alone, never a pipeline.
"""

from __future__ import annotations

from typing import Any

from coordexp.components.coord_loss import CoordLossComponent
from coordexp.components.instability import InstabilityMonitorComponent
from coordexp.components.runtime import RuntimeComponent
from coordexp.components.token_metrics import TokenMetricsComponent
from coordexp.config import InstabilityMonitorConfig, Stage1PassConfig, TokenTypeMetricsConfig

__all__ = [
    "COMPONENT_ORDER",
    "COORD",
    "MONITOR",
    "RUNTIME",
    "TOKEN_METRICS",
    "config_section",
    "find_tokenizer",
    "materializes_logits",
    "reads_logits",
]

RUNTIME = RuntimeComponent.name
COORD = CoordLossComponent.name
TOKEN_METRICS = TokenMetricsComponent.name
MONITOR = InstabilityMonitorComponent.name
COMPONENT_ORDER = (RUNTIME, COORD, TOKEN_METRICS, MONITOR)


def config_section(trainer: Any, attr: str, cls: Any) -> Any:
    """The trainer's ``attr`` section as ``cls`` (None when the trainer has none)."""
    raw = getattr(trainer, attr, None)
    return None if raw is None else cls.from_mapping(raw)


def reads_logits(trainer: Any, component_names: frozenset[str]) -> bool:
    """Whether a trainer with these components computes anything from the logits (then the whole
    objective goes through the one-pass seam); from the config sections alone, before any step."""
    if COORD in component_names and getattr(trainer, "coord_soft_ce_w1_cfg", None) is not None:
        return True
    for name, attr, cls in (
        (TOKEN_METRICS, "token_type_metrics_cfg", TokenTypeMetricsConfig),
        (MONITOR, "instability_monitor_cfg", InstabilityMonitorConfig),
    ):
        if name in component_names:
            cfg = config_section(trainer, attr, cls)
            if cfg is not None and cfg.enabled:
                return True
    return False


def materializes_logits(trainer: Any) -> bool:
    """``custom.stage1_pass.materialize_logits`` of a trainer (default true), from its config section
    alone (readable while the trainer is being built, before its pipeline exists)."""
    cfg = config_section(trainer, "stage1_pass_cfg", Stage1PassConfig)
    return bool((cfg or Stage1PassConfig()).materialize_logits)  # absent: the schema's default


def find_tokenizer(trainer: Any) -> Any:
    template = getattr(trainer, "template", None)
    for owner, name in ((template, "tokenizer"), (trainer, "processing_class"), (trainer, "tokenizer")):
        tok = getattr(owner, name, None) if owner is not None else None
        if tok is not None:
            return getattr(tok, "tokenizer", tok)  # processors wrap the tokenizer
    return None
