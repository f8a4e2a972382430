"""Stage-1 components behind one ``compute_loss`` hook.

``runtime`` (learning rate, accumulation steps), ``coord_soft_ce_w1`` (coord loss or its
diagnostics), ``token_metrics`` (token-type accuracies and coord monitors) and
``instability_monitor``; :class:`Stage1Pipeline` runs them in a fixed order.
"""

from coordexp.components.base import BaseComponent, Component, PassRequest
from coordexp.components.context import StepContext
from coordexp.components.coord_loss import CoordLossComponent, CoordObjectiveError
from coordexp.components.instability import InstabilityMonitorComponent
from coordexp.components.pipeline import COMPONENT_ORDER, Stage1Pipeline
from coordexp.components.runtime import RuntimeComponent
from coordexp.components.token_metrics import TokenMetricsComponent

__all__ = [
    "COMPONENT_ORDER",
    "BaseComponent",
    "Component",
    "CoordLossComponent",
    "CoordObjectiveError",
    "InstabilityMonitorComponent",
    "PassRequest",
    "RuntimeComponent",
    "Stage1Pipeline",
    "StepContext",
    "TokenMetricsComponent",
]
