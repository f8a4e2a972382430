"""The ``custom.*`` configuration: the generated pydantic models, parsed with key-path errors.

Fields, defaults, bounds and types are said once, in ``schemas/config.schema.json``; the models
``tools/regen.py`` generates from it are frozen (arrays are tuples) and are the configuration every
component reads. This module keeps what is not a model: :class:`ConfigError` and its wording, the
parse entry points, the rules codegen cannot generate (across fields, finite numbers), and the public
names, each a thin subclass of its generated model that adds ``from_mapping`` and mapping-style reads.
Errors name the full key path, e.g. ``custom.coord_soft_ce_w1.temperature: must be > 0``.

Every ``custom.*`` section is parsed here, by one of three entries, and nowhere else:

- :func:`load_custom_config` (and ``<Public>.from_mapping``): a YAML block, read as YAML reads it
  (lax types; unknown keys refused);
- :func:`parsed_section`: a section built by that parse and handed on (a trainer's class attribute) is
  taken as it is, with its rules checked; anything else goes through ``from_mapping``;
- :func:`held_section`: what a public entry point's caller holds (a model, a mapping, an attribute
  object, None); strict types, unknown keys ignored, None for "the default".
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ValidationError, model_validator

from coordexp.detection.metrics import f1ish_threshold_error, iou_thresholds_error
from coordexp.generated.models import config as generated
from coordexp.rows.fields import dataset_included


class ConfigError(ValueError):
    """Invalid ``custom.*`` configuration; the message names every offending key path."""


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error (``ValidationError.errors()`` item) in words: ``must be > 0``."""
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
        "tuple_type": "must be a list",  # the models hold arrays as tuples; YAML says list
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
        lines.append(f"{path}: {describe_error(error)}")
    return "\n".join(lines)


def coord_loss_weight_error(cfg: generated.CoordSoftCEW1Config) -> str | None:
    """An enabled coord loss needs a non-zero weight (a rule across fields: no generated code for it)."""
    weights = (
        cfg.ce_weight,
        cfg.soft_ce_weight,
        cfg.w1_weight,
        cfg.gate_weight,
        cfg.text_gate_weight,
        cfg.adjacent_repulsion_weight,
    )
    if cfg.enabled and not any(w > 0 for w in weights):
        return (
            "enabled with every weight 0: set at least one of ce_weight, soft_ce_weight, "
            "w1_weight, gate_weight, text_gate_weight, adjacent_repulsion_weight > 0"
        )
    return None


def coord_loss_infinite(cfg: generated.CoordSoftCEW1Config) -> list[str]:
    """The coord loss's numbers that are not finite (the schema's bounds let ``.inf`` through)."""
    return [name for name, value in cfg if isinstance(value, float) and not math.isfinite(value)]


EXPLICIT_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    generated.BBoxGeoConfig: ("enabled", "smoothl1_weight", "ciou_weight"),
    generated.BBoxSizeAuxConfig: (
        "enabled",
        "log_wh_weight",
        "oversize_penalty_weight",
        "oversize_area_frac_threshold",
        "oversize_log_w_threshold",
        "oversize_log_h_threshold",
        "eps",
    ),
}
"""Fields a present section must write out (the reference's rule; the defaults apply to an absent one)."""


def box_term_error(cfg: generated.BBoxGeoConfig | generated.BBoxSizeAuxConfig) -> str | None:
    """A present box section writes its key fields explicitly; an enabled term needs a non-zero weight;
    ``center_size`` needs a non-zero part weight."""
    explicit = next(names for model, names in EXPLICIT_FIELDS.items() if isinstance(cfg, model))
    missing = [name for name in explicit if name not in cfg.model_fields_set]
    if missing:
        return f"must be written explicitly when the section is present: {', '.join(missing)}"
    if isinstance(cfg, generated.BBoxGeoConfig):
        if cfg.enabled and not (cfg.smoothl1_weight > 0 or cfg.ciou_weight > 0):
            return "enabled with smoothl1_weight and ciou_weight both 0"
        center_size = cfg.parameterization == "center_size"
        if cfg.enabled and center_size and not (cfg.center_weight or cfg.size_weight):
            return "parameterization center_size with center_weight and size_weight both 0"
        return None
    if cfg.enabled and not (cfg.log_wh_weight > 0 or cfg.oversize_penalty_weight > 0):
        return "enabled with log_wh_weight and oversize_penalty_weight both 0"
    return None


NOT_YET_COMPUTED: dict[str, str] = {}
"""Fields declared (schema, catalog keys, pure functions in ``coordexp.functional``) whose term the one
pass does not compute yet: a config that turns one on is refused at load (never a silent no-op)."""


def not_yet_computed_errors(model: generated.CustomConfig) -> list[str]:
    """``path: message`` for each term the config turns on that the pass does not compute yet."""
    on = {
        "custom.coord_soft_ce_w1.text_gate_weight": model.coord_soft_ce_w1 is not None
        and model.coord_soft_ce_w1.text_gate_weight != 0,
        "custom.coord_soft_ce_w1.adjacent_repulsion_weight": model.coord_soft_ce_w1 is not None
        and model.coord_soft_ce_w1.adjacent_repulsion_weight != 0,
        "custom.bbox_geo.enabled": model.bbox_geo is not None and model.bbox_geo.enabled,
        "custom.bbox_size_aux.enabled": model.bbox_size_aux is not None and model.bbox_size_aux.enabled,
    }
    errors = [
        f"{path}: this term is not computed by the training pass yet; set it to {NOT_YET_COMPUTED[path]}"
        for path, is_on in on.items()
        if is_on and path in NOT_YET_COMPUTED
    ]
    coord_on = model.coord_soft_ce_w1 is not None and model.coord_soft_ce_w1.enabled
    if model.grad_monitor is not None and model.grad_monitor.enabled and not coord_on:
        errors.append(
            "custom.grad_monitor.enabled: the monitor reads the per-term gradients of the coord loss's "
            "pass; set custom.coord_soft_ce_w1.enabled: true"
        )
    for path in (
        "custom.bbox_geo.enabled",
        "custom.bbox_size_aux.enabled",
        "custom.coord_soft_ce_w1.adjacent_repulsion_weight",
    ):
        if on[path] and not coord_on:
            errors.append(
                f"{path}: the box terms are computed in the coord loss's pass; "
                "set custom.coord_soft_ce_w1.enabled: true"
            )
    return errors


def rule_errors(model: BaseModel, where: str) -> list[str]:
    """``path: message`` for each rule ``model`` or a section inside it breaks."""
    errors = []
    if isinstance(model, generated.CustomConfig):
        errors += not_yet_computed_errors(model)
    if isinstance(model, generated.CoordSoftCEW1Config):
        errors += [f"{where}.{name}: must be finite" for name in coord_loss_infinite(model)]
        if msg := coord_loss_weight_error(model):
            errors.append(f"{where}: {msg}")
    is_box = isinstance(model, generated.BBoxGeoConfig | generated.BBoxSizeAuxConfig)
    if is_box and (msg := box_term_error(model)):
        errors.append(f"{where}: {msg}")
    if isinstance(model, generated.EvalDetectionConfig):
        if msg := f1ish_threshold_error(model.f1ish_iou_thrs):
            errors.append(f"{where}.f1ish_iou_thrs: {msg}")
        if msg := iou_thresholds_error(model.iou_thrs):
            errors.append(f"{where}.iou_thrs: {msg}")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            errors += rule_errors(value, f"{where}.{name}")
    return errors


def generated_model(model: type[BaseModel]) -> type[BaseModel]:
    """The generated model a section class is (itself, or the base of a public name)."""
    return next(b for b in model.__mro__ if b.__module__ == generated.__name__)


def _section_path(model: type[BaseModel]) -> str:
    """``custom.<key>`` of a section model, read from the generated ``custom`` block."""
    for name, field in generated.CustomConfig.model_fields.items():
        if model in typing.get_args(field.annotation):
            return f"custom.{name}"
    return "custom"


class _Section(BaseModel):
    """Mixin of the public names: parsing from a plain mapping, and mapping-style reads."""

    SECTION: ClassVar[str] = "custom"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.SECTION = _section_path(generated_model(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, prefix: str | None = None) -> Self:
        """Validate ``data`` (a mapping, or a section model built elsewhere) into this section."""
        where = prefix or cls.SECTION
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        if isinstance(data, BaseModel):  # e.g. the generated model the loader built: re-typed
            data = dict(data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a mapping, got {type(data).__name__}")
        try:
            model = cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where)) from None
        errors = rule_errors(model, where)
        if errors:
            raise ConfigError("\n".join(errors))
        return model

    def get(self, name: str, default: Any = None) -> Any:
        """Mapping-style read, so code written for the old dict configs keeps working."""
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)


class TokenTypeMetricsConfig(_Section, generated.TokenTypeMetricsConfig):
    """``custom.token_type_metrics``."""

    def includes(self, dataset_label: str) -> bool:
        """Whether samples of ``dataset_label`` get token types (include, minus exclude)."""
        return dataset_included(dataset_label, self.include, self.exclude)


class CoordSoftCEW1Config(_Section, generated.CoordSoftCEW1Config):
    """``custom.coord_soft_ce_w1``; constructing one checks its weight rule too."""

    @model_validator(mode="after")
    def _some_weight_when_enabled(self) -> Self:
        msg = coord_loss_weight_error(self)
        if msg is not None:
            raise ValueError(msg)
        return self


class BBoxGeoConfig(_Section, generated.BBoxGeoConfig):
    """``custom.bbox_geo``."""


class BBoxSizeAuxConfig(_Section, generated.BBoxSizeAuxConfig):
    """``custom.bbox_size_aux``."""


class GradMonitorConfig(_Section, generated.GradMonitorConfig):
    """``custom.grad_monitor``."""


class InstabilityMonitorConfig(_Section, generated.InstabilityMonitorConfig):
    """``custom.instability_monitor``."""


class ContractsConfig(_Section, generated.ContractsConfig):
    """``custom.contracts``."""


class MetricsConfig(_Section, generated.MetricsConfig):
    """``custom.metrics``."""


class Stage1PassConfig(_Section, generated.Stage1PassConfig):
    """``custom.stage1_pass``."""


class EvalDetectionConfig(_Section, generated.EvalDetectionConfig):
    """``custom.eval_detection``."""


class Stage1CustomConfig(_Section, generated.CustomConfig):
    """The whole ``custom:`` block: the generated section models, None where a section is absent."""


def resolve_custom_paths(custom: dict[str, Any], resolve: Callable[[str], str]) -> None:
    """Rewrite, in the raw ``custom:`` block before it is parsed, the settings that are paths
    (``eval_detection.semantic_model``) with ``resolve`` (relative to the YAML file's folder)."""
    detection = custom.get("eval_detection")
    if isinstance(detection, dict) and isinstance(detection.get("semantic_model"), str):
        detection["semantic_model"] = resolve(detection["semantic_model"])


def load_custom_config(custom: Mapping[str, Any] | None) -> Stage1CustomConfig:
    """Validate the ``custom:`` block of a training YAML (unknown keys and bad values raise)."""
    return Stage1CustomConfig.from_mapping(custom or {})


_M = TypeVar("_M", bound=BaseModel)


def parsed_section(model: type[_Section], data: object) -> BaseModel:
    """``data`` as the section ``model``: a model the one parse built is taken as it is (its rules
    checked, nothing parsed again); a mapping (the seed's way) is parsed by ``model.from_mapping``."""
    if isinstance(data, generated_model(model)):
        errors = rule_errors(data, model.SECTION)
        if errors:
            raise ConfigError("\n".join(errors))
        return data
    return model.from_mapping(data)  # type: ignore[arg-type]  # from_mapping says what else is wrong


def _held_value(held: object, name: str) -> Any:
    """``name`` of a mapping or an attribute object (None when absent)."""
    if isinstance(held, Mapping):
        return held.get(name)
    return getattr(held, name, None)


def held_section(model: type[_M], held: object, where: str | None = None) -> _M:
    """The section ``model`` from what a public entry point's caller holds: the model itself
    (returned as is), a mapping (YAML), an attribute object, or None (every default).

    Unknown keys are ignored on purpose (rejecting them is the YAML loader's job) and None for a
    field (an empty YAML value) means "use the default". Types are checked strictly (a bool is no
    number, ``"yes"`` no bool); a bad value raises :class:`ConfigError` naming the key, e.g.
    ``custom.instability_monitor.ema_decay must be < 1.0, got 2.0``.
    """
    where = where or _section_path(generated_model(model))
    if isinstance(held, model):
        return held
    values = dict(model())  # the defaults, already typed: strict validation takes them as they are
    for name, field in model.model_fields.items():
        raw = None if held is None else _held_value(held, name)
        if raw is None:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            raw = held_section(field.annotation, raw, f"{where}.{name}")
        elif isinstance(raw, os.PathLike):
            raw = os.fspath(raw)
        elif isinstance(raw, list):
            raw = tuple(raw)  # the models' arrays are tuples
        values[name] = raw
    try:
        return model.model_validate(values, strict=True)
    except ValidationError as exc:
        lines = [
            f"{'.'.join([where, *map(str, e['loc'])])} {describe_error(e)}, got {e['input']!r}"
            for e in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None
