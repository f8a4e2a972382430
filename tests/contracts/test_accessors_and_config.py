"""Generated accessors (old import path) and the typed config sections."""

from __future__ import annotations

import pytest
import torch

from coordexp.config import ConfigError, CoordSoftCEW1Config, TokenTypeMetricsConfig, load_custom_config
from coordexp.contracts.stash import (
    BatchExtras,
    get_stashed_batch_extras,
    maybe_pop_and_stash_batch_extras,
    pop_and_stash_batch_extras,
    pop_batch_extras,
)
from coordexp.generated.batch_extras import (
    BATCH_EXTRAS_KEYS,
    BOX_PAIRS_KEY,
    BOX_SLOTS_KEY,
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
)


def test_key_constants_match_the_contract() -> None:
    assert BATCH_EXTRAS_KEYS == (
        DATASET_LABELS_KEY,
        DATASET_SEGMENTS_KEY,
        PACK_NUM_SAMPLES_KEY,
        TOKEN_TYPES_KEY,
        BOX_SLOTS_KEY,
        BOX_PAIRS_KEY,
        INSTABILITY_META_JSON_KEY,
    )
    assert TOKEN_TYPES_KEY == "token_types" and PACK_NUM_SAMPLES_KEY == "pack_num_samples"


def test_pop_removes_every_extra_and_types_them() -> None:
    batch = {"input_ids": torch.zeros(1, 3), DATASET_LABELS_KEY: ["lvis"], TOKEN_TYPES_KEY: torch.ones(1, 3)}
    extras = pop_batch_extras(batch)
    assert isinstance(extras, BatchExtras)
    assert set(batch) == {"input_ids"}
    assert extras.dataset_labels == ["lvis"] and extras.token_types is not None
    assert extras.instability_meta_json is None
    assert extras.present() == {DATASET_LABELS_KEY, TOKEN_TYPES_KEY}


def test_stash_lives_until_the_next_step() -> None:
    class Trainer:
        pass

    trainer = Trainer()
    assert get_stashed_batch_extras(trainer) is None
    first = pop_and_stash_batch_extras(trainer, {DATASET_LABELS_KEY: ["a"]})
    assert get_stashed_batch_extras(trainer) is first
    second = maybe_pop_and_stash_batch_extras(trainer, {DATASET_LABELS_KEY: ["b"]})
    assert get_stashed_batch_extras(trainer) is second and second is not None
    assert second.dataset_labels == ["b"]
    assert maybe_pop_and_stash_batch_extras(trainer, ("not", "a", "dict")) is None
    assert get_stashed_batch_extras(trainer) is second


def test_config_defaults_follow_the_reference() -> None:
    cfg = CoordSoftCEW1Config.from_mapping({})
    assert (cfg.enabled, cfg.ce_weight, cfg.soft_ce_weight, cfg.w1_weight, cfg.gate_weight) == (
        False,
        0.0,
        1.0,
        1.0,
        1.0,
    )
    assert (cfg.temperature, cfg.target_sigma, cfg.target_truncate) == (1.0, 2.0, None)
    tok = TokenTypeMetricsConfig.from_mapping({"enabled": True})
    assert tok.include == ("lvis",) and tok.exclude == () and tok.log_top5 and tok.coord_monitor_mass
    given = TokenTypeMetricsConfig.from_mapping({"include": ["lvis", "coco"], "exclude": ["Coco"]})
    assert given.include == ("lvis", "coco") and given.exclude == ("Coco",)  # tuples, as the old config
    assert tok.coord_monitor_mass_max_tokens == 0
    assert tok["enabled"] is True and tok.get("missing", 3) == 3
    mon = load_custom_config({"instability_monitor": {"enabled": True}}).instability_monitor
    assert mon is not None
    assert (mon.max_meta_samples, mon.ema_decay, mon.spike_factor, mon.abs_loss_threshold) == (
        16,
        0.98,
        8.0,
        0.2,
    )
    assert (
        mon.min_supervised_tokens == 64
        and mon.guard.min_token_acc == 0.01
        and mon.guard.max_abs_logit == 200.0
    )


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"coord_soft_ce_w1": {"temperature": 0}}, "custom.coord_soft_ce_w1.temperature: must be > 0"),
        ({"coord_soft_ce_w1": {"target_sigma": -1}}, "custom.coord_soft_ce_w1.target_sigma: must be > 0"),
        ({"coord_soft_ce_w1": {"w1_weight": -0.5}}, "custom.coord_soft_ce_w1.w1_weight: must be >= 0"),
        (
            {"coord_soft_ce_w1": {"target_truncate": -2}},
            "custom.coord_soft_ce_w1.target_truncate: must be >= 0",
        ),
        (
            {"coord_soft_ce_w1": {"enabled": True, "soft_ce_weight": 0, "w1_weight": 0, "gate_weight": 0}},
            "custom.coord_soft_ce_w1: enabled with every weight 0",
        ),
        ({"coord_soft_ce_w1": {"tempreature": 1.0}}, "custom.coord_soft_ce_w1.tempreature: unknown key"),
        (
            {"token_type_metrics": {"enabled": "yes please"}},
            "custom.token_type_metrics.enabled: must be a boolean",
        ),
        (
            {"token_type_metrics": {"coord_monitor_mass_max_tokens": -1}},
            "custom.token_type_metrics.coord_monitor_mass_max_tokens: must be >= 0",
        ),
        ({"instability_monitor": {"ema_decay": 1.0}}, "custom.instability_monitor.ema_decay: must be < 1"),
        (
            {"instability_monitor": {"guard": {"max_abs_logit": 0}}},
            "custom.instability_monitor.guard.max_abs_logit: must be > 0",
        ),
        (
            {"instability_monitor": {"early_stop": {"on_reasons": ["bored"]}}},
            "custom.instability_monitor.early_stop.on_reasons.0: must be one of",
        ),
        ({"contracts": {"mode": "loud"}}, "custom.contracts.mode: must be one of"),
        ({"coord_loss": {}}, "custom.coord_loss: unknown key"),
        (
            {"coord_soft_ce_w1": {"w1_weight": float("inf")}},
            "custom.coord_soft_ce_w1.w1_weight: must be finite",
        ),
    ],
)
def test_invalid_config_names_the_key_path(custom: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_custom_config(custom)
    assert message in str(info.value)


def test_section_wrappers_raise_with_their_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^custom\.coord_soft_ce_w1\.temperature: must be > 0"):
        CoordSoftCEW1Config.from_mapping({"temperature": -1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        CoordSoftCEW1Config.from_mapping([1, 2])  # type: ignore[arg-type]
