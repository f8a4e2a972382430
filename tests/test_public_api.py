"""Import paths users of the old layout rely on keep working."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = [
    ("coordexp.data_collators.dataset_metrics", "build_dataset_metrics_collator"),
    ("coordexp.data_collators.token_types", "TokenType"),
    ("coordexp.data_collators.token_types", "compute_token_types"),
    ("coordexp.config.schema", "TokenTypeMetricsConfig"),
    ("coordexp.config.schema", "CoordSoftCEW1Config"),
    ("coordexp.coord_tokens.codec", "get_coord_token_ids"),
    ("coordexp.coord_tokens.soft_ce_w1", "coord_soft_ce_w1"),
    ("coordexp.metrics.dataset_metrics", "GradAccumLossScaleMixin"),
    ("coordexp.metrics.dataset_metrics", "InstabilityMonitorMixin"),
    ("coordexp.metrics.dataset_metrics", "AggregateTokenTypeMetricsMixin"),
    ("coordexp.metrics.dataset_metrics", "CoordSoftCEW1LossMixin"),
    ("coordexp.metrics.dataset_metrics", "build_trainer_cls"),
    ("coordexp.contracts", "ContractViolation"),
    ("coordexp.contracts", "check_metric_key"),
    ("coordexp.contracts", "check_batch_extras"),
    *[
        ("coordexp.trainers.batch_extras", name)
        for name in (
            "DATASET_LABELS_KEY",
            "DATASET_SEGMENTS_KEY",
            "PACK_NUM_SAMPLES_KEY",
            "TOKEN_TYPES_KEY",
            "INSTABILITY_META_JSON_KEY",
            "BATCH_EXTRAS_KEYS",
            "BatchExtras",
            "pop_batch_extras",
            "pop_and_stash_batch_extras",
            "maybe_pop_and_stash_batch_extras",
            "get_stashed_batch_extras",
        )
    ],
]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_is_importable(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_token_type_values() -> None:
    from coordexp.data_collators.token_types import TokenType

    assert (TokenType.IGNORE, TokenType.DESC, TokenType.COORD, TokenType.FORMAT) == (-1, 1, 2, 3)


def test_config_wrappers_take_plain_mappings_and_name_bad_keys() -> None:
    from coordexp.config.schema import CoordSoftCEW1Config, TokenTypeMetricsConfig

    cfg = CoordSoftCEW1Config.from_mapping({"enabled": True, "temperature": 2.0})
    assert cfg.enabled and cfg.temperature == 2.0
    assert TokenTypeMetricsConfig.from_mapping({"enabled": True}).include == ("lvis",)
    with pytest.raises(ValueError, match=r"custom\.coord_soft_ce_w1\.temperature"):
        CoordSoftCEW1Config.from_mapping({"temperature": 0})
