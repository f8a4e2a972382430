"""``CoordLossConfig``: the generated ``custom.coord_soft_ce_w1`` model, built by hand.

The loss functions take the section model itself (``coordexp.generated.models.config.
CoordSoftCEW1Config``), as the config loader parsed it; ``enabled`` is the caller's business. This
subclass adds no field (tests/contracts ties it to the model): it is the name callers of the pure
functions (tests, benchmarks, the seed's ``coord_soft_ce_w1``) build a section with, stricter than the
YAML loader on construction, as code that passes numbers should be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from coordexp.config.loading import ConfigError, format_validation_error
from coordexp.generated.models.config import CoordSoftCEW1Config

__all__ = ["CoordLossConfig"]


class CoordLossConfig(CoordSoftCEW1Config):
    """Weights and shape of the coord loss: the ``coord_soft_ce_w1`` section with its defaults and bounds.

    ``loss = ce_weight * CE + soft_ce_weight * softCE + w1_weight * W1 + gate_weight * gate``, each term
    averaged over the GT coord positions; ``temperature`` divides the logits, ``target_sigma`` and
    ``target_truncate`` (in bins) shape the Gaussian soft target.
    """

    def __init__(self, **values: Any) -> None:
        # Stricter than the YAML loader (whose lax types read YAML): a bool or a string is no number
        # (TypeError), and numbers are finite; the bounds are the model's (ValueError).
        numbers = {n for n, f in type(self).model_fields.items() if f.annotation in (float, int)}
        for name, value in values.items():
            if name not in numbers or name == "target_truncate":
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        trunc = values.get("target_truncate")
        if trunc is not None and (not isinstance(trunc, int) or isinstance(trunc, bool)):
            raise ValueError(f"target_truncate must be None or an int >= 0, got {trunc!r}")
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "coord_soft_ce_w1")) from None

    @property
    def gate_enabled(self) -> bool:
        """Whether the gate term (and its full-vocab work) is needed."""
        return self.gate_weight != 0

    @property
    def any_weight(self) -> bool:
        """Whether at least one loss term has a non-zero weight."""
        return any(
            (
                self.ce_weight,
                self.soft_ce_weight,
                self.w1_weight,
                self.gate_weight,
                self.text_gate_weight,
                self.adjacent_repulsion_weight,
            )
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | CoordSoftCEW1Config) -> CoordLossConfig:
        """Build from a config section (a mapping or the section model); unknown keys raise ``ValueError``."""
        return cls(**dict(values))
