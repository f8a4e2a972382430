"""What one ``compute_loss`` call carries from component to component."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from coordexp.contracts.modes import Mode
from coordexp.contracts.stash import BatchExtras
from coordexp.reporting.aggregation import StepValue


@dataclass
class StepContext:
    """State of one step, filled in phase by phase by the pipeline.

    ``labels`` are the ORIGINAL labels aligned with the logits (after ms-swift's ``logits_to_keep``
    cut); the model may be fed masked labels (coord loss), but every metric reads these.
    ``device_values`` holds 0-d device tensors to move to the host in the step's single transfer;
    ``host`` holds them as floats afterwards; ``metrics`` the key -> value writes of the step (a
    ratio key as its numerator and denominator, see ``coordexp.reporting.aggregation``).
    """

    trainer: Any
    model: Any
    mode: Mode
    inputs: dict[str, Any]
    labels: Tensor | None
    extras: BatchExtras
    num_items_in_batch: Any
    forward_num_items: Any = None
    outputs: Any = None
    loss: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    device_values: dict[str, Tensor] = field(default_factory=dict)
    host: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, StepValue] = field(default_factory=dict)
    fused: bool = False
    """the objective and the statistics came from the one-pass ``compute_loss_func`` seam"""
    loss_divisor: float = 1.0
    """what the seam divided the loss by (accumulation steps); the monitor sees the undivided loss"""

    @property
    def dataset_labels(self) -> list[str]:
        """The batch's row labels as strings; [] when the extra is absent or not a list."""
        labels: object = self.extras.dataset_labels
        if isinstance(labels, str):
            return [labels]
        if isinstance(labels, list | tuple):
            return [str(label) for label in labels]
        return []
