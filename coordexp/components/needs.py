"""What a ``custom:`` block asks of the Stage-1 pipeline, readable before a pipeline exists.

The trainer is being built when these are asked (which components, is the one-pass seam needed, may
the logits be skipped), so they read the parsed config alone (:class:`Stage1CustomConfig`), never a
pipeline or a trainer.

Which components a config needs is the metric catalog's answer, never a second list of conditions: a
component is needed iff some key of its catalog ``feature`` can be written under the config's
conditions (:func:`coordexp.contracts.catalog.conditions_from_config`), or one of its
``objective_conditions`` holds (it acts on training without writing a key).
"""

from __future__ import annotations

from collections.abc import Iterable

from coordexp.components.base import BaseComponent
from coordexp.components.coord_loss import CoordLossComponent
from coordexp.components.instability import InstabilityMonitorComponent
from coordexp.components.runtime import RuntimeComponent
from coordexp.components.token_metrics import TokenMetricsComponent
from coordexp.config import Stage1CustomConfig, Stage1PassConfig
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.generated.metric_catalog import COORDEXP_KEYS, METRIC_SPECS

__all__ = [
    "COMPONENT_CLASSES",
    "COMPONENT_ORDER",
    "COORD",
    "MONITOR",
    "RUNTIME",
    "TOKEN_METRICS",
    "active_components",
    "components_for",
    "components_under",
    "materializes_logits",
    "owned_keys",
    "reads_logits",
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


def active_components(custom: Stage1CustomConfig, component_names: Iterable[str]) -> tuple[str, ...]:
    """The declared components (the trainer's mixins) that the config needs, in order."""
    declared = frozenset(component_names)
    return tuple(name for name in components_for(custom) if name in declared)


def reads_logits(custom: Stage1CustomConfig, component_names: frozenset[str]) -> bool:
    """Whether these components compute anything from the logits under ``custom`` (then the whole
    objective goes through the one-pass seam)."""
    return any(_CLASS_BY_NAME[name].reads_logits for name in active_components(custom, component_names))


def materializes_logits(custom: Stage1CustomConfig) -> bool:
    """``custom.stage1_pass.materialize_logits`` (absent section: the schema's default)."""
    return bool((custom.stage1_pass or Stage1PassConfig()).materialize_logits)
