"""Configuration of the coord-token loss: the ``custom.coord_soft_ce_w1`` section, as the loss reads it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from coordexp.config.loading import format_validation_error
from coordexp.generated.models.config import CoordSoftCEW1Config

# The schema's defaults and bounds live in the generated model; this dataclass reads them from it.
_SECTION: Final = CoordSoftCEW1Config()


@dataclass(frozen=True)
class CoordLossConfig:
    """Weights and shape of the coord loss: the fields of the generated ``coord_soft_ce_w1`` model but
    ``enabled`` (the caller's business), with its defaults and bounds (tests/contracts ties the fields).

    ``loss = ce_weight * CE + soft_ce_weight * softCE + w1_weight * W1 + gate_weight * gate``, each term
    averaged over the GT coord positions (the text gate and the adjacent repulsion have their own
    denominators, see :mod:`coordexp.functional.text_gate` and
    :mod:`coordexp.functional.adjacent_repulsion`); ``temperature`` divides the logits, ``target_sigma`` and
    ``target_truncate`` (in bins) shape the Gaussian soft target. A plain frozen dataclass: the loss
    code reads it on every step and callers use ``dataclasses.replace``.
    """

    ce_weight: float = _SECTION.ce_weight
    soft_ce_weight: float = _SECTION.soft_ce_weight
    w1_weight: float = _SECTION.w1_weight
    gate_weight: float = _SECTION.gate_weight
    temperature: float = _SECTION.temperature
    target_sigma: float = _SECTION.target_sigma
    target_truncate: int | None = _SECTION.target_truncate
    text_gate_weight: float = _SECTION.text_gate_weight
    adjacent_repulsion_weight: float = _SECTION.adjacent_repulsion_weight
    adjacent_repulsion_filter_mode: str = _SECTION.adjacent_repulsion_filter_mode
    adjacent_repulsion_margin_ratio: float = _SECTION.adjacent_repulsion_margin_ratio
    adjacent_repulsion_copy_margin: float = _SECTION.adjacent_repulsion_copy_margin

    def __post_init__(self) -> None:
        # Stricter than the YAML loader: a bool or a string is no number, and numbers are finite.
        values = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            value = values[f.name]
            if f.type != "float":
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
        trunc = self.target_truncate
        if trunc is not None and (not isinstance(trunc, int) or isinstance(trunc, bool)):
            raise ValueError(f"target_truncate must be None or an int >= 0, got {trunc!r}")
        try:  # the bounds: the schema's, through the generated model
            CoordSoftCEW1Config.model_validate(values)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, "coord_soft_ce_w1")) from None

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
        """Build from a config section (a mapping or the section model): every field but ``enabled``,
        which is ignored; other unknown keys raise ``ValueError``."""
        data = dict(values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"enabled"})
        if unknown:
            raise ValueError(f"unknown coord loss config keys: {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})
