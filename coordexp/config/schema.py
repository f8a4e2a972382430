"""Typed config sections of ``custom.*``: thin wrappers over the generated pydantic models.

Each wrapper adds :meth:`from_mapping`, which turns pydantic's errors into one
:class:`ConfigError` whose lines name the full key path, e.g.
``custom.coord_soft_ce_w1.temperature: must be > 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from coordexp.generated.models import config as generated


class ConfigError(ValueError):
    """Invalid ``custom.*`` configuration; the message names every offending key path."""


def _describe(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    kind = error.get("type", "")
    templates = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "extra_forbidden": "unknown key",
        "bool_parsing": "must be a boolean",
        "bool_type": "must be a boolean",
        "int_parsing": "must be an integer",
        "int_type": "must be an integer",
        "int_from_float": "must be an integer",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "enum": "must be one of {expected}",
        "literal_error": "must be one of {expected}",
        "model_type": "must be a mapping",
        "dict_type": "must be a mapping",
    }
    if kind == "value_error":
        return str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    template = templates.get(kind)
    if template is None:
        return str(error.get("msg", "invalid value"))
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return str(error.get("msg", "invalid value"))


def format_validation_error(exc: ValidationError, prefix: str) -> str:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if p != "__root__")
        path = f"{prefix}.{loc}" if loc else prefix
        lines.append(f"{path}: {_describe(error)}")
    return "\n".join(lines)


class _Section(BaseModel):
    """Mixin for the wrappers: construction from a plain mapping with key-path errors."""

    SECTION: ClassVar[str] = "custom"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, prefix: str | None = None) -> Self:
        where = prefix or cls.SECTION
        if data is None:
            data = {}
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where)) from None

    def get(self, name: str, default: Any = None) -> Any:
        """Mapping-style read, so code written for the old dict configs keeps working."""
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)


class TokenTypeMetricsConfig(_Section, generated.TokenTypeMetricsConfig):
    SECTION: ClassVar[str] = "custom.token_type_metrics"
    # include/exclude are tuples, as in the dataclass config this replaced (callers compare them
    # with tuples); the schema has no tuple type, so the generated model says list.
    model_config = ConfigDict(validate_default=True)

    @field_validator("include", "exclude", mode="after")
    @classmethod
    def _as_tuple(cls, labels: list[str]) -> tuple[str, ...]:
        return tuple(labels)

    @field_serializer("include", "exclude")
    def _dump_labels(self, labels: Sequence[str], info: SerializationInfo) -> list[str] | tuple[str, ...]:
        # Serialised by hand: the generated list[str] serializer would warn about the tuple.
        return list(labels) if info.mode_is_json() else tuple(labels)

    def includes(self, dataset_label: str) -> bool:
        """Whether samples of ``dataset_label`` get token types (include, minus exclude)."""
        label = dataset_label.lower()
        return label in {x.lower() for x in self.include} and label not in {x.lower() for x in self.exclude}


class CoordSoftCEW1Config(_Section, generated.CoordSoftCEW1Config):
    SECTION: ClassVar[str] = "custom.coord_soft_ce_w1"

    @model_validator(mode="after")
    def _some_weight_when_enabled(self) -> Self:
        weights = (self.ce_weight, self.soft_ce_weight, self.w1_weight, self.gate_weight)
        if self.enabled and not any(w > 0 for w in weights):
            raise ValueError(
                "enabled with every weight 0: set at least one of ce_weight, soft_ce_weight, "
                "w1_weight, gate_weight > 0"
            )
        return self


class InstabilityMonitorConfig(_Section, generated.InstabilityMonitorConfig):
    SECTION: ClassVar[str] = "custom.instability_monitor"


class ContractsConfig(_Section, generated.ContractsConfig):
    SECTION: ClassVar[str] = "custom.contracts"


class MetricsConfig(_Section, generated.MetricsConfig):
    SECTION: ClassVar[str] = "custom.metrics"


class Stage1PassConfig(_Section, generated.Stage1PassConfig):
    SECTION: ClassVar[str] = "custom.stage1_pass"


class Stage1CustomConfig(_Section, generated.CustomConfig):
    """The whole ``custom:`` block (the Stage-1 sections; None where a section is absent)."""

    SECTION: ClassVar[str] = "custom"
    token_type_metrics: TokenTypeMetricsConfig | None = None
    coord_soft_ce_w1: CoordSoftCEW1Config | None = None
    instability_monitor: InstabilityMonitorConfig | None = None
    contracts: ContractsConfig | None = None
    metrics: MetricsConfig | None = None
    stage1_pass: Stage1PassConfig | None = None


def load_custom_config(custom: Mapping[str, Any] | None) -> Stage1CustomConfig:
    """Validate the ``custom:`` block of a training YAML (unknown keys and bad values raise)."""
    return Stage1CustomConfig.from_mapping(custom or {})
