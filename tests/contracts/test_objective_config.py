"""Issue 21's config fields: the reference's names, defaults and bounds, and its load-time rules."""

from __future__ import annotations

from typing import Any

import pytest

from coordexp.config import ConfigError, load_custom_config

GEO = {"enabled": True, "smoothl1_weight": 0.0, "ciou_weight": 1.0}
SIZE = {
    "enabled": True,
    "log_wh_weight": 0.05,
    "oversize_penalty_weight": 0.0,
    "oversize_area_frac_threshold": None,
    "oversize_log_w_threshold": None,
    "oversize_log_h_threshold": None,
    "eps": 1e-6,
}
COORD = {"enabled": True}


def test_defaults_are_the_reference_s() -> None:
    coord = load_custom_config({"coord_soft_ce_w1": {}}).coord_soft_ce_w1
    assert coord is not None
    assert coord.text_gate_weight == 0.0
    assert coord.adjacent_repulsion_weight == 0.0
    assert coord.adjacent_repulsion_filter_mode == "same_desc"
    assert coord.adjacent_repulsion_margin_ratio == 0.05
    assert coord.adjacent_repulsion_copy_margin == 0.8
    custom = load_custom_config({"coord_soft_ce_w1": COORD, "bbox_geo": GEO, "bbox_size_aux": SIZE})
    assert custom.bbox_geo is not None and custom.bbox_size_aux is not None
    assert (custom.bbox_geo.parameterization, custom.bbox_geo.center_weight, custom.bbox_geo.size_weight) == (
        "xyxy",
        1.0,
        1.0,
    )
    assert load_custom_config({}).bbox_geo is None  # absent section: off
    on = load_custom_config({"coord_soft_ce_w1": {**COORD, "text_gate_weight": 0.1}}).coord_soft_ce_w1
    assert on is not None and on.text_gate_weight == 0.1


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"coord_soft_ce_w1": COORD, "bbox_geo": {"enabled": True}}, "written explicitly"),
        ({"coord_soft_ce_w1": COORD, "bbox_size_aux": {**SIZE, "eps": 0.0}}, "bbox_size_aux.eps"),
        ({"coord_soft_ce_w1": COORD, "bbox_geo": {**GEO, "ciou_weight": 0.0}}, "both 0"),
        (
            {
                "coord_soft_ce_w1": COORD,
                "bbox_geo": {
                    **GEO,
                    "parameterization": "center_size",
                    "center_weight": 0.0,
                    "size_weight": 0.0,
                },
            },
            "center_size",
        ),
        ({"coord_soft_ce_w1": COORD, "bbox_geo": {**GEO, "parameterization": "cxcywh"}}, "parameterization"),
        ({"coord_soft_ce_w1": COORD, "bbox_size_aux": {**SIZE, "log_wh_weight": 0.0}}, "both 0"),
        ({"coord_soft_ce_w1": COORD, "bbox_geo": {**GEO, "extra": 1}}, "extra"),
        ({"bbox_geo": GEO}, "set custom.coord_soft_ce_w1.enabled: true"),
        ({"coord_soft_ce_w1": {**COORD, "adjacent_repulsion_copy_margin": 1.5}}, "copy_margin"),
        ({"coord_soft_ce_w1": {**COORD, "adjacent_repulsion_filter_mode": "nearest"}}, "filter_mode"),
        ({"coord_soft_ce_w1": {**COORD, "text_gate_weight": -1.0}}, "text_gate_weight"),
        # every one of the six weights 0 with the loss on
        (
            {"coord_soft_ce_w1": {**COORD, "soft_ce_weight": 0.0, "w1_weight": 0.0, "gate_weight": 0.0}},
            "text_gate_weight, adjacent_repulsion_weight",
        ),
        # the repulsion is part of the coord loss: on without it is refused, never a silent no-op
        (
            {"coord_soft_ce_w1": {**COORD, "enabled": False, "adjacent_repulsion_weight": 0.01}},
            "adjacent_repulsion_weight: the box terms are computed in the coord loss's pass",
        ),
    ],
)
def test_config_errors_at_load(custom: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_custom_config(custom)


def test_grad_monitor_section() -> None:
    assert load_custom_config({}).grad_monitor is None  # absent: off
    monitor = load_custom_config({"coord_soft_ce_w1": COORD, "grad_monitor": {"enabled": True}}).grad_monitor
    assert monitor is not None and monitor.enabled and monitor.interval == 20
    off = load_custom_config({"grad_monitor": {"enabled": False}}).grad_monitor  # off needs no coord loss
    assert off is not None and not off.enabled


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"grad_monitor": {"enabled": True}}, "custom.grad_monitor.enabled: the monitor reads"),
        (
            {"coord_soft_ce_w1": {"enabled": False}, "grad_monitor": {"enabled": True}},
            "set custom.coord_soft_ce_w1.enabled: true",
        ),
        ({"coord_soft_ce_w1": COORD, "grad_monitor": {"enabled": True, "interval": 0}}, "interval"),
        ({"coord_soft_ce_w1": COORD, "grad_monitor": {"enabled": True, "every": 5}}, "every"),
        ({"coord_soft_ce_w1": COORD, "grad_monitor": {"enabled": "sometimes"}}, "enabled"),
    ],
)
def test_grad_monitor_is_refused_at_load_in_one_line(custom: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_custom_config(custom)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
