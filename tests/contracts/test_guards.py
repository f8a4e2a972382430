"""Runtime guards accept what is declared and refuse everything else, in each mode."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from coordexp.contracts import (
    ContractViolation,
    ContractWarning,
    check_batch_extras,
    check_enricher_output,
    check_metric_key,
    contracts_mode,
)
from coordexp.generated import metric_keys as K
from coordexp.generated.batch_extras import (
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
)


# ------------------------------------------------------------------ metric keys
@pytest.mark.parametrize(
    "key", [K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC, K.LEARNING_RATE, K.COORD_SOFTCE_W1_GATE]
)
def test_declared_package_keys_pass(key: str) -> None:
    assert check_metric_key(key, 0.5, dataset_labels=["lvis", "coco"]) is True


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("lvis/token_acc", 0.5, "per_dataset_bucket"),
        ("token_acc_lvis", 0.5, "per_dataset_bucket"),
        ("token_acc/lvis", 0.5, "per_dataset_bucket"),
        ("coco_text_token_acc", 0.5, "per_dataset_bucket"),
        ("my_new_metric", 0.5, "undeclared"),
        ("eval_coord_diag/loss", 0.5, "eval_prefix"),
        ("grad_norm", 0.5, "framework_owned"),
        ("token_acc", 0.5, "framework_owned"),
        (K.COORD_DIAG_LOSS, math.nan, "non_finite"),
        (K.COORD_DIAG_LOSS, math.inf, "non_finite"),
        (K.COORD_DIAG_LOSS, -math.inf, "non_finite"),
        (K.TEXT_TOKEN_ACC, 1.5, "out_of_range"),
        (K.COORD_DIAG_COORD_TOKENS, -1.0, "out_of_range"),
        (K.COORD_DIAG_LOSS, "high", "not_a_number"),
    ],
)
def test_strict_refuses(key: str, value: object, rule: str) -> None:
    with pytest.raises(ContractViolation) as info:
        check_metric_key(key, value, dataset_labels=["lvis", "coco"], mode="strict")
    assert info.value.rule == rule
    assert info.value.key == key
    assert rule in str(info.value)


def test_bucket_message_names_the_rule() -> None:
    with pytest.raises(ContractViolation, match="per-dataset buckets are forbidden"):
        check_metric_key("lvis/token_acc", dataset_labels=["lvis"])


def test_undeclared_key_is_refused_even_without_labels() -> None:
    with pytest.raises(ContractViolation) as info:
        check_metric_key("lvis/token_acc")
    assert info.value.rule == "undeclared"


def test_tensor_values_are_checked() -> None:
    assert check_metric_key(K.COORD_DIAG_LOSS, torch.tensor(0.25))
    with pytest.raises(ContractViolation):
        check_metric_key(K.COORD_DIAG_LOSS, torch.tensor(float("nan")))


def test_warn_mode_warns_once_per_key_and_rule_and_drops() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [
            check_metric_key("lvis/token_acc", 1.0, dataset_labels=["lvis"], mode="warn") for _ in range(3)
        ]
        results.append(check_metric_key(K.COORD_DIAG_LOSS, math.nan, mode="warn"))
        results.append(check_metric_key(K.COORD_DIAG_LOSS, math.nan, mode="warn"))
    assert results == [False] * 5
    ours = [w for w in caught if issubclass(w.category, ContractWarning)]
    assert len(ours) == 2
    assert "per_dataset_bucket" in str(ours[0].message) and "non_finite" in str(ours[1].message)


def test_off_mode_checks_nothing() -> None:
    assert check_metric_key("lvis/token_acc", math.nan, mode="off") is True


def test_mode_context_overrides_default() -> None:
    with contracts_mode("off"):
        assert check_metric_key("anything", math.nan)
    with pytest.raises(ContractViolation):
        check_metric_key("anything")


def test_invalid_mode_names_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"custom\.contracts\.mode"):
        check_metric_key(K.COORD_DIAG_LOSS, mode="loud")


# ------------------------------------------------------------------ batch extras
def _meta(rows: int) -> str:
    entry = {
        "num_samples": 1,
        "total_length": 6,
        "samples": [{"dataset": "lvis", "base_idx": 0, "sample_id": "a", "length": 6}],
    }
    return json.dumps([entry] * rows, sort_keys=True)


def _batch(rows: int = 2, seq: int = 6) -> dict[str, object]:
    return {
        "input_ids": torch.zeros(rows, seq, dtype=torch.long),
        "labels": torch.full((rows, seq), -100, dtype=torch.long),
        TOKEN_TYPES_KEY: torch.full((rows, seq), -1, dtype=torch.long),
        PACK_NUM_SAMPLES_KEY: torch.ones(rows, dtype=torch.long),
        DATASET_LABELS_KEY: ["lvis"] * rows,
        DATASET_SEGMENTS_KEY: [seq] * rows,
        INSTABILITY_META_JSON_KEY: _meta(rows),
    }


def test_declared_extras_pass() -> None:
    assert check_batch_extras(_batch()) == []


def test_absent_optional_extras_pass() -> None:
    batch = _batch()
    del batch[TOKEN_TYPES_KEY], batch[INSTABILITY_META_JSON_KEY]
    assert check_batch_extras(batch) == []


BAD_EXTRAS = [
    (TOKEN_TYPES_KEY, torch.full((2, 6), -1, dtype=torch.int32), "dtype"),
    (TOKEN_TYPES_KEY, torch.full((2, 5), -1, dtype=torch.long), "shape"),
    (TOKEN_TYPES_KEY, torch.full((2, 6), 7, dtype=torch.long), "values"),
    (TOKEN_TYPES_KEY, [[-1] * 6] * 2, "type"),
    (PACK_NUM_SAMPLES_KEY, torch.ones(3, dtype=torch.long), "shape"),
    (PACK_NUM_SAMPLES_KEY, torch.ones(2, dtype=torch.float32), "dtype"),
    (PACK_NUM_SAMPLES_KEY, torch.ones(2, 1, dtype=torch.long), "shape"),
    (DATASET_LABELS_KEY, ["lvis"], "length"),
    (DATASET_LABELS_KEY, ["lvis", 3], "item_type"),
    (DATASET_LABELS_KEY, "lvis", "type"),
    (DATASET_SEGMENTS_KEY, [6, 6, 6], "length"),
    (DATASET_SEGMENTS_KEY, [6, True], "item_type"),
    (DATASET_SEGMENTS_KEY, [6, -1], "values"),
    (INSTABILITY_META_JSON_KEY, "[{", "json"),
    (INSTABILITY_META_JSON_KEY, json.dumps([{"num_samples": 1}] * 2), "json_schema"),
    (INSTABILITY_META_JSON_KEY, _meta(3), "length"),
    (INSTABILITY_META_JSON_KEY, {"rows": []}, "type"),
]


@pytest.mark.parametrize(("key", "value", "rule"), BAD_EXTRAS, ids=[f"{k}-{r}" for k, _, r in BAD_EXTRAS])
def test_strict_refuses_bad_extras(key: str, value: object, rule: str) -> None:
    batch = _batch()
    batch[key] = value
    with pytest.raises(ContractViolation) as info:
        check_batch_extras(batch)
    assert (info.value.key, info.value.rule) == (key, rule)


@pytest.mark.parametrize(("key", "value", "rule"), BAD_EXTRAS[:4], ids=[r for _, _, r in BAD_EXTRAS[:4]])
def test_warn_drops_the_bad_extra_and_keeps_the_rest(key: str, value: object, rule: str) -> None:
    batch = _batch()
    batch[key] = value
    with pytest.warns(ContractWarning, match=rule):
        found = check_batch_extras(batch, mode="warn")
    assert [v.rule for v in found] == [rule]
    assert key not in batch
    assert DATASET_LABELS_KEY in batch and "labels" in batch


def test_off_mode_keeps_bad_extras() -> None:
    batch = _batch()
    batch[TOKEN_TYPES_KEY] = "garbage"
    assert check_batch_extras(batch, mode="off") == []
    assert batch[TOKEN_TYPES_KEY] == "garbage"


def test_enricher_may_not_add_undeclared_keys() -> None:
    batch = _batch()
    batch["my_debug_extra"] = 1
    with pytest.raises(ContractViolation) as info:
        check_enricher_output("debug", ["my_debug_extra"], ["my_debug_extra"], batch)
    assert info.value.rule == "undeclared_extra"
    with pytest.raises(ContractViolation) as info:
        check_enricher_output("meta", [TOKEN_TYPES_KEY], [DATASET_LABELS_KEY], batch)
    assert info.value.rule == "undeclared_by_enricher"
    with pytest.warns(ContractWarning):
        check_enricher_output("debug", ["my_debug_extra"], [], batch, mode="warn")
    assert "my_debug_extra" not in batch
