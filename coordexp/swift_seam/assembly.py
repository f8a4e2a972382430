"""Assembling the Stage-1 trainer class from a ``custom:`` block (what the training entry does).

Which mixins go in front of the base class is the catalog's answer (``components_for``, re-exported
here from :mod:`coordexp.components.needs`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordexp.components.needs import components_for
from coordexp.config import Stage1CustomConfig, load_custom_config
from coordexp.contracts.catalog import conditions_from_config
from coordexp.swift_seam.detection_eval import DetectionEvalMixin
from coordexp.swift_seam.mixins import MIXIN_BY_COMPONENT, DatasetMetricsCollatorMixin
from coordexp.swift_seam.trainer_sections import trainer_section_attrs

__all__ = ["build_trainer_cls", "components_for"]


def build_trainer_cls(
    base_trainer_cls: type,
    custom_cfg: Mapping[str, Any] | Stage1CustomConfig | None,
    *,
    instability_source_files: Mapping[str, str] | None = None,
) -> type:
    """Compose the Stage-1 trainer class from ``custom:`` the way the training entry does.

    The class carries the config sections as class attributes (``coord_soft_ce_w1_cfg`` ...), so
    instances read them without extra constructor arguments.
    """
    custom = custom_cfg if isinstance(custom_cfg, Stage1CustomConfig) else load_custom_config(custom_cfg)
    names = components_for(custom)
    mixins = tuple(MIXIN_BY_COMPONENT[name] for name in names)
    attrs: dict[str, Any] = {
        **trainer_section_attrs(custom),
        # Sample dumps read each row at the source file and line kept from loading; this label ->
        # file mapping only serves samples whose meta has no source position (meta built elsewhere).
        "instability_source_files": dict(instability_source_files or {}),
        "__module__": __name__,
        "__doc__": f"{base_trainer_cls.__name__} with Stage-1 components: {', '.join(names)}.",
    }
    # The detection evaluation acts at evaluate(), not in the step's pass: not a component.
    front: tuple[type, ...] = mixins
    if "det_eval" in conditions_from_config(custom):
        front = (DetectionEvalMixin, *mixins)
    bases = (*front, DatasetMetricsCollatorMixin, base_trainer_cls)
    return type(f"Stage1{base_trainer_cls.__name__}", bases, attrs)
