"""Questions about the metric catalog, answered from the generated tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from coordexp.detection.metrics import f1ish_condition
from coordexp.generated.metric_catalog import (
    ALL_KEYS,
    CONDITIONS,
    COORDEXP_KEYS,
    FRAMEWORK_KEYS,
    METRIC_SPECS,
    MetricSpec,
    Owner,
)

if TYPE_CHECKING:
    from coordexp.config import Stage1CustomConfig

EVAL_PREFIX = "eval_"
KeyClass = Literal["coordexp", "framework", "unknown"]


def spec_of(key: str) -> MetricSpec | None:
    """The catalog entry of a train-mode key, or None."""
    return METRIC_SPECS.get(key)


def strip_eval_prefix(key: str) -> tuple[str, bool]:
    """``eval_coord_diag/loss`` -> (``coord_diag/loss``, True); framework eval keys stay whole."""
    if key in ALL_KEYS:
        return key, False
    if key.startswith(EVAL_PREFIX) and key[len(EVAL_PREFIX) :] in ALL_KEYS:
        return key[len(EVAL_PREFIX) :], True
    return key, False


def classify_log_key(key: str) -> tuple[KeyClass, str]:
    """Classify a key found in a log: whose it is, and its train-mode name."""
    base, _ = strip_eval_prefix(key)
    if base in COORDEXP_KEYS:
        return "coordexp", base
    if base in FRAMEWORK_KEYS:
        return "framework", base
    return "unknown", base


def owner_under(key: str, conditions: Iterable[str]) -> Owner | None:
    """Who writes ``key`` (train-mode name) in a run that meets ``conditions``: the catalog's
    ``owner_when`` entry of a condition that holds, else its ``owner``; None for a non-catalog key."""
    spec = METRIC_SPECS.get(key)
    if spec is None:
        return None
    held = frozenset(conditions)
    for condition, owner in spec.owner_when:
        if condition in held:
            return owner
    return spec.owner


def keys_written_under(conditions: Iterable[str]) -> frozenset[str]:
    """The package keys whose ``requires`` all hold under ``conditions``.

    This is the catalog's answer to "which keys appear in this cell of the feature matrix".
    """
    held = frozenset(conditions)
    unknown = held - CONDITIONS.keys()
    if unknown:
        raise ValueError(f"unknown conditions {sorted(unknown)}; known: {sorted(CONDITIONS)}")
    return frozenset(k for k in COORDEXP_KEYS if METRIC_SPECS[k].requires <= held)


# Conditions that depend on the batch, not the config: assumed to hold at some step of any real run.
BATCH_CONDITIONS: frozenset[str] = frozenset(
    {"supervised", "coord_targets", "noncoord_targets", "coord_vocab", "repulsion_applied"}
)
# Batch conditions that need token types, which exist only when the config turns token metrics on.
TOKEN_TYPE_CONDITIONS: frozenset[str] = frozenset({"token_types", "desc_targets", "format_targets"})
ALWAYS_CONDITIONS: frozenset[str] = frozenset({"runtime"}) | BATCH_CONDITIONS


def conditions_from_config(custom: Stage1CustomConfig | None) -> frozenset[str]:
    """The catalog conditions a run with this ``custom:`` block meets at some step.

    Config-driven conditions come from the sections; batch conditions are assumed to hold, except
    the token-type ones, which only a token-metrics run can meet. No config: runtime only.
    """
    held = set(ALWAYS_CONDITIONS)
    if custom is None:
        return frozenset(held)
    if custom.stage1_pass is not None and custom.stage1_pass.materialize_logits is False:
        held.add("logits_unmaterialised")
    coord = custom.coord_soft_ce_w1
    if coord is not None:
        held.add("coord_diag")
        if coord.enabled:
            held.add("coord_loss")
        if coord.gate_weight != 0:
            held.add("coord_gate")
        if coord.enabled and coord.text_gate_weight != 0:
            held.add("text_gate")
        if coord.enabled and coord.adjacent_repulsion_weight != 0:
            held.add("adjacent_repulsion")
        for name in ("soft_ce", "w1", "ce"):
            if coord.enabled and getattr(coord, f"{name}_weight") != 0:
                held.add(f"coord_{name}_term")
        monitor = custom.grad_monitor
        if coord.enabled and monitor is not None and monitor.enabled:
            held.add("grad_monitor")
    if custom.bbox_geo is not None and custom.bbox_geo.enabled:
        held.add("bbox_geo")
    if custom.bbox_size_aux is not None and custom.bbox_size_aux.enabled:
        held.add("bbox_size_aux")
    tokens = custom.token_type_metrics
    if tokens is not None and tokens.enabled:
        held.add("token_metrics")
        held |= TOKEN_TYPE_CONDITIONS
        if tokens.log_top5:
            held.add("token_top5")
        if tokens.coord_monitor_mass:
            held.add("coord_monitor_mass")
    monitor = custom.instability_monitor
    if monitor is not None and monitor.enabled:
        held.add("instability_monitor")
    detection = custom.eval_detection
    if detection is not None and detection.enabled:
        held.add("det_eval")
        if detection.metrics in ("coco", "both"):
            held.add("det_coco")
        if detection.metrics in ("f1ish", "both"):
            held |= {f1ish_condition(t) for t in detection.f1ish_iou_thrs}
    return frozenset(held)
