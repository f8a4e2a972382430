"""How a Stage-1 trainer class carries its ``custom:`` block, and what the seam reads off a trainer.

:func:`~coordexp.swift_seam.assembly.build_trainer_cls` sets each section as the class attribute
``<section>_cfg`` (the seed's mixins took them so, as plain mappings, and still do);
:func:`trainer_custom` reads them back as ONE parsed :class:`~coordexp.config.Stage1CustomConfig`,
which is what the pipeline and its components receive.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from coordexp.config import (
    BBoxGeoConfig,
    BBoxSizeAuxConfig,
    CoordSoftCEW1Config,
    EvalDetectionConfig,
    GradMonitorConfig,
    InstabilityMonitorConfig,
    MetricsConfig,
    Stage1CustomConfig,
    Stage1PassConfig,
    TokenTypeMetricsConfig,
)
from coordexp.config.loading import parsed_section

__all__ = ["TRAINER_SECTIONS", "find_tokenizer", "section_attr", "trainer_custom", "trainer_section_attrs"]

# The custom.* sections a Stage-1 trainer class carries, with the public model each is parsed as.
TRAINER_SECTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "coord_soft_ce_w1": CoordSoftCEW1Config,
        "token_type_metrics": TokenTypeMetricsConfig,
        "instability_monitor": InstabilityMonitorConfig,
        "metrics": MetricsConfig,
        "stage1_pass": Stage1PassConfig,
        "eval_detection": EvalDetectionConfig,
        "bbox_geo": BBoxGeoConfig,
        "bbox_size_aux": BBoxSizeAuxConfig,
        "grad_monitor": GradMonitorConfig,
    }
)


def section_attr(section: str) -> str:
    """The trainer class attribute that carries ``custom.<section>``."""
    return f"{section}_cfg"


def trainer_section_attrs(custom: Stage1CustomConfig) -> dict[str, Any]:
    """The class attributes of a Stage-1 trainer built for ``custom``."""
    return {section_attr(section): getattr(custom, section) for section in TRAINER_SECTIONS}


def trainer_custom(trainer: Any) -> Stage1CustomConfig:
    """The trainer's ``custom:`` sections as their models (None where absent): the models
    :func:`~coordexp.swift_seam.assembly.build_trainer_cls` set are taken as they are (parsed once,
    by the config loader); a mapping set on a seed mixin is parsed here, once per call."""
    sections = {}
    for section, model in TRAINER_SECTIONS.items():
        raw = getattr(trainer, section_attr(section), None)
        sections[section] = None if raw is None else parsed_section(model, raw)
    return Stage1CustomConfig(**sections)


def find_tokenizer(trainer: Any) -> Any:
    """The tokenizer of an ms-swift trainer (its template's, else the processing class), unwrapped
    from a processor."""
    template = getattr(trainer, "template", None)
    for owner, name in ((template, "tokenizer"), (trainer, "processing_class"), (trainer, "tokenizer")):
        tok = getattr(owner, name, None) if owner is not None else None
        if tok is not None:
            return getattr(tok, "tokenizer", tok)  # processors wrap the tokenizer
    return None
