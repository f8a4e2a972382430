"""Configuration of the coord-token loss (``coord_soft_ce_w1``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CoordLossConfig:
    """Weights and shape of the coord loss.

    ``loss = ce_weight * CE + soft_ce_weight * softCE + w1_weight * W1 + gate_weight * gate``, each term
    averaged over the GT coord positions; ``temperature`` divides the logits, ``target_sigma`` and
    ``target_truncate`` (in bins) shape the Gaussian soft target.
    """

    ce_weight: float = 0.0
    soft_ce_weight: float = 1.0
    w1_weight: float = 1.0
    gate_weight: float = 1.0
    temperature: float = 1.0
    target_sigma: float = 2.0
    target_truncate: int | None = None

    def __post_init__(self) -> None:
        for name in ("ce_weight", "soft_ce_weight", "w1_weight", "gate_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name in ("temperature", "target_sigma"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        trunc = self.target_truncate
        if trunc is not None and (not isinstance(trunc, int) or isinstance(trunc, bool) or trunc < 0):
            raise ValueError(f"target_truncate must be None or an int >= 0, got {trunc!r}")

    @property
    def gate_enabled(self) -> bool:
        """Whether the gate term (and its full-vocab work) is needed."""
        return self.gate_weight != 0

    @property
    def any_weight(self) -> bool:
        """Whether at least one loss term has a non-zero weight."""
        return any((self.ce_weight, self.soft_ce_weight, self.w1_weight, self.gate_weight))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CoordLossConfig:
        """Build from a config section; ``enabled`` is ignored, other unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"enabled"})
        if unknown:
            raise ValueError(f"unknown coord loss config keys: {unknown}")
        return cls(**{k: v for k, v in values.items() if k in names})
