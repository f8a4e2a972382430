"""What a trainer's ``custom.*`` sections ask of the Stage-1 pipeline, readable before it exists.

The trainer is being built when these are asked (is the one-pass seam needed, may the logits be
skipped), so they read the config sections alone, never a pipeline.

Which components a config needs is the metric catalog's answer, never a second list of conditions: a
component is needed iff some key of its catalog ``feature`` can be written under the config's
conditions (:func:`coordexp.contracts.catalog.conditions_from_config`), or one of its
``objective_conditions`` holds (it acts on training without writing a key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from coordexp.components.base import BaseComponent
from coordexp.components.coord_loss import CoordLossComponent
from coordexp.components.instability import InstabilityMonitorComponent
from coordexp.components.runtime import RuntimeComponent
from coordexp.components.token_metrics import TokenMetricsComponent
from coordexp.config import (
    CoordSoftCEW1Config,
    InstabilityMonitorConfig,
    MetricsConfig,
    Stage1CustomConfig,
    Stage1PassConfig,
    TokenTypeMetricsConfig,
)
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.generated.metric_catalog import COORDEXP_KEYS, METRIC_SPECS

__all__ = [
    "COMPONENT_CLASSES",
    "COMPONENT_ORDER",
    "COORD",
    "MONITOR",
    "RUNTIME",
    "TOKEN_METRICS",
    "TRAINER_SECTIONS",
    "TrainerSections",
    "active_components",
    "components_for",
    "components_under",
    "config_section",
    "find_tokenizer",
    "materializes_logits",
    "owned_keys",
    "reads_logits",
    "section_attr",
    "trainer_section_attrs",
]

COMPONENT_CLASSES: tuple[type[BaseComponent], ...] = (
    RuntimeComponent,
    CoordLossComponent,
    TokenMetricsComponent,
    InstabilityMonitorComponent,
)
COMPONENT_ORDER = tuple(cls.name for cls in COMPONENT_CLASSES)
RUNTIME, COORD, TOKEN_METRICS, MONITOR = COMPONENT_ORDER
_CLASS_BY_NAME = {cls.name: cls for cls in COMPONENT_CLASSES}


def owned_keys(component: type[BaseComponent]) -> frozenset[str]:
    """The catalog keys of the component's ``feature`` (empty for the monitor)."""
    return frozenset(k for k in COORDEXP_KEYS if METRIC_SPECS[k].feature == component.feature)


def components_under(conditions: Iterable[str]) -> tuple[str, ...]:
    """The components needed under ``conditions``, in :data:`COMPONENT_ORDER` (see the module doc)."""
    held = frozenset(conditions)
    written = keys_written_under(held)
    return tuple(
        cls.name for cls in COMPONENT_CLASSES if owned_keys(cls) & written or cls.objective_conditions & held
    )


def components_for(custom: Stage1CustomConfig | None) -> list[str]:
    """Components the training entry turns on for a ``custom:`` block (derived from the catalog)."""
    return list(components_under(conditions_from_config(custom)))


# The custom.* sections a Stage-1 trainer class carries, each as the class attribute ``<section>_cfg``
# (see ``coordexp.trainer.assembly``), with the public model each is read as.
TRAINER_SECTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "coord_soft_ce_w1": CoordSoftCEW1Config,
        "token_type_metrics": TokenTypeMetricsConfig,
        "instability_monitor": InstabilityMonitorConfig,
        "metrics": MetricsConfig,
        "stage1_pass": Stage1PassConfig,
    }
)


def section_attr(section: str) -> str:
    """The trainer class attribute that carries ``custom.<section>``."""
    return f"{section}_cfg"


def trainer_section_attrs(custom: Stage1CustomConfig) -> dict[str, Any]:
    """The class attributes of a Stage-1 trainer built for ``custom``."""
    return {section_attr(section): getattr(custom, section) for section in TRAINER_SECTIONS}


def config_section(trainer: Any, section: str) -> Any:
    """The trainer's ``custom.<section>`` as its public model (None when the trainer has none)."""
    raw = getattr(trainer, section_attr(section), None)
    return None if raw is None else TRAINER_SECTIONS[section].from_mapping(raw)


@dataclass(frozen=True)
class TrainerSections:
    """The ``custom.*`` sections a trainer carries as class attributes (None where absent)."""

    coord: CoordSoftCEW1Config | None
    tokens: TokenTypeMetricsConfig | None
    monitor: InstabilityMonitorConfig | None
    stage1_pass: Stage1PassConfig | None

    @classmethod
    def of(cls, trainer: Any) -> TrainerSections:
        return cls(
            coord=config_section(trainer, "coord_soft_ce_w1"),
            tokens=config_section(trainer, "token_type_metrics"),
            monitor=config_section(trainer, "instability_monitor"),
            stage1_pass=config_section(trainer, "stage1_pass"),
        )

    def custom(self) -> Stage1CustomConfig:
        return Stage1CustomConfig(
            coord_soft_ce_w1=self.coord,
            token_type_metrics=self.tokens,
            instability_monitor=self.monitor,
            stage1_pass=self.stage1_pass,
        )


def active_components(sections: TrainerSections, component_names: Iterable[str]) -> tuple[str, ...]:
    """The declared components (the trainer's mixins) that its config needs, in order."""
    declared = frozenset(component_names)
    return tuple(name for name in components_for(sections.custom()) if name in declared)


def reads_logits(trainer: Any, component_names: frozenset[str]) -> bool:
    """Whether a trainer with these components computes anything from the logits (then the whole
    objective goes through the one-pass seam); from the config sections alone, before any step."""
    active = active_components(TrainerSections.of(trainer), component_names)
    return any(_CLASS_BY_NAME[name].reads_logits for name in active)


def materializes_logits(trainer: Any) -> bool:
    """``custom.stage1_pass.materialize_logits`` of a trainer (default true), from its config section
    alone (readable while the trainer is being built, before its pipeline exists)."""
    cfg = config_section(trainer, "stage1_pass")
    return bool((cfg or Stage1PassConfig()).materialize_logits)  # absent: the schema's default


def find_tokenizer(trainer: Any) -> Any:
    template = getattr(trainer, "template", None)
    for owner, name in ((template, "tokenizer"), (trainer, "processing_class"), (trainer, "tokenizer")):
        tok = getattr(owner, name, None) if owner is not None else None
        if tok is not None:
            return getattr(tok, "tokenizer", tok)  # processors wrap the tokenizer
    return None
