"""The metrics collator on real ms-swift batches: padded, padding-free and packed."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from coordexp.contracts import ContractViolation, ContractWarning
from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.generated.batch_extras import (
    BATCH_EXTRAS_KEYS,
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
)
from coordexp.generated.schemas import INSTABILITY_META_SCHEMA
from coordexp.rows.collator import EnricherWarning, build_dataset_metrics_collator
from coordexp.rows.fields import sample_dataset_label
from coordexp.rows.token_types import TokenType, compute_token_types, resolve_suffix_ids

IGN, C = int(TokenType.IGNORE), int(TokenType.COORD)
ON = {"enabled": True, "include": ["lvis"]}
MODEL_KEYS_PADDED = {"input_ids", "labels", "attention_mask"}
MODEL_KEYS_PACKED = {"input_ids", "labels", "position_ids"}

RowFactory = Callable[..., dict[str, Any]]


def _meta(out: dict[str, Any]) -> list[dict[str, Any]]:
    from jsonschema import Draft202012Validator

    text = out[INSTABILITY_META_JSON_KEY]
    entries: list[dict[str, Any]] = json.loads(text)
    Draft202012Validator(INSTABILITY_META_SCHEMA).validate(entries)
    assert text == json.dumps(entries, sort_keys=True, ensure_ascii=True)  # sort_keys, ASCII
    return entries


def _expected_types(template: Any, sample: dict[str, Any]) -> torch.Tensor:
    types = compute_token_types(
        tokenizer=template.tokenizer,
        payload=sample["_extra_kwargs"]["assistant_payload"],
        labels=torch.tensor(sample["labels"]),
        suffix_tokens=resolve_suffix_ids(template),
    )
    assert types is not None
    return types


def _coord_positions_are_coord(template: Any, labels: torch.Tensor, types: torch.Tensor) -> None:
    coord = torch.isin(labels, torch.tensor(get_coord_token_ids(template.tokenizer)))
    assert coord.any() and (types[coord] == C).all()


def test_padded_batch(template: Any, make_template: Callable[..., Any], make_row: RowFactory) -> None:
    rows = [
        make_row(0, "lvis"),
        make_row(1, "coco"),
        make_row(2, "coco", metadata={"_fusion_source": "LVIS", "dataset": "coco"}),
        {k: v for k, v in make_row(3).items() if k not in ("dataset", "base_idx", "sample_id")},
    ]
    samples = [template.encode(r, return_length=True) for r in rows]
    collate = build_dataset_metrics_collator(
        template,
        token_type_cfg=ON,
        instability_monitor_cfg={"enabled": True, "max_meta_samples": 4},
        box_slots=True,
    )
    out = collate(samples)

    # Model inputs are exactly what swift collates without the source fields.
    plain = make_template(remove_unused_columns=True)
    reference = plain.data_collator([plain.encode(r, return_length=True) for r in rows])
    assert set(out) == MODEL_KEYS_PADDED | set(BATCH_EXTRAS_KEYS) and set(reference) == MODEL_KEYS_PADDED
    for key in MODEL_KEYS_PADDED:
        assert torch.equal(out[key], reference[key]), key

    assert out[DATASET_LABELS_KEY] == ["lvis", "coco", "LVIS", "default"]
    lengths = [len(s["input_ids"]) for s in samples]
    assert out[DATASET_SEGMENTS_KEY] == lengths == out["attention_mask"].sum(-1).tolist()
    pns = out[PACK_NUM_SAMPLES_KEY]
    assert pns.dtype == torch.int64 and pns.tolist() == [1, 1, 1, 1] and pns.device == out["labels"].device

    types = out[TOKEN_TYPES_KEY]
    assert types.shape == out["labels"].shape and types.dtype == torch.int64
    for i in (0, 2):  # lvis by dataset, LVIS by metadata._fusion_source
        n = lengths[i]
        assert torch.equal(types[i, :n], _expected_types(template, samples[i]))
        assert (types[i, n:] == IGN).all()
        _coord_positions_are_coord(template, out["labels"][i], types[i])
    assert (types[1] == IGN).all() and (types[3] == IGN).all()  # coco / default: not included

    meta = _meta(out)
    assert [m["num_samples"] for m in meta] == [1, 1, 1, 1]
    assert [m["total_length"] for m in meta] == lengths
    # Encoded here, not by coordexp's loader: no source position.
    nowhere = {"source_file": None, "source_line": None}
    assert meta[0]["samples"] == [
        {"dataset": "lvis", "base_idx": 0, "sample_id": "lvis-0000", "length": lengths[0], **nowhere}
    ]
    assert meta[3]["samples"] == [
        {"dataset": "default", "base_idx": None, "sample_id": None, "length": lengths[3], **nowhere}
    ]
    # The raw samples still carry their source fields (the base collator got copies).
    assert "assistant_payload" in samples[0]["_extra_kwargs"]


def test_left_padding(make_template: Callable[..., Any], make_row: RowFactory) -> None:
    template = make_template()
    template.padding_side = "left"
    samples = [template.encode(make_row(s), return_length=True) for s in (0, 4)]
    out = build_dataset_metrics_collator(template, token_type_cfg=ON)(samples)
    types, labels = out[TOKEN_TYPES_KEY], out["labels"]
    for i, sample in enumerate(samples):
        n = len(sample["labels"])
        assert torch.equal(types[i, -n:], _expected_types(template, sample))
        _coord_positions_are_coord(template, labels[i], types[i])


def _packed(
    make_template: Callable[..., Any], make_row: RowFactory, datasets: list[list[str]]
) -> tuple[Any, list[list[dict[str, Any]]]]:
    template = make_template(packing=True)
    seed = 0
    packs = []
    for pack in datasets:
        packs.append([template.encode(make_row(seed := seed + 1, ds), return_length=True) for ds in pack])
    return template, packs


def test_packed_single_pack(make_template: Callable[..., Any], make_row: RowFactory) -> None:
    template, packs = _packed(make_template, make_row, [["lvis", "lvis", "lvis"]])
    collate = build_dataset_metrics_collator(
        template,
        token_type_cfg=ON,
        instability_monitor_cfg={"enabled": True, "max_meta_samples": 2},
        box_slots=True,
    )
    out = collate(packs)
    pack = packs[0]
    assert set(out) == MODEL_KEYS_PACKED | set(BATCH_EXTRAS_KEYS)
    total = sum(len(s["input_ids"]) for s in pack)
    assert out["labels"].shape == (1, total)
    assert out["labels"][0].tolist() == [t for s in pack for t in s["labels"]]
    assert int((out["position_ids"][0] == 0).sum()) == 3
    assert out[DATASET_LABELS_KEY] == ["lvis"]
    assert out[DATASET_SEGMENTS_KEY] == [total]
    assert out[PACK_NUM_SAMPLES_KEY].tolist() == [3]
    expected = torch.cat([_expected_types(template, s) for s in pack])
    assert torch.equal(out[TOKEN_TYPES_KEY][0], expected)
    _coord_positions_are_coord(template, out["labels"][0], out[TOKEN_TYPES_KEY][0])

    (meta,) = _meta(out)
    assert meta["num_samples"] == 3 and meta["total_length"] == total
    assert [m["base_idx"] for m in meta["samples"]] == [1, 2]  # capped at max_meta_samples


def test_two_packs_join_into_one_mixed_row(make_template: Callable[..., Any], make_row: RowFactory) -> None:
    template, packs = _packed(make_template, make_row, [["lvis", "lvis"], ["coco", "lvis"]])
    collate = build_dataset_metrics_collator(
        template, token_type_cfg=ON, instability_monitor_cfg={"enabled": True}
    )
    out = collate(packs)
    samples = [s for p in packs for s in p]
    lengths = [len(s["labels"]) for s in samples]
    assert out["labels"].shape == (1, sum(lengths))  # swift joins all packs of a batch into one row
    assert out[DATASET_LABELS_KEY] == ["mixed"]
    assert out[PACK_NUM_SAMPLES_KEY].tolist() == [4]
    types = out[TOKEN_TYPES_KEY][0]
    start = sum(lengths[:2])
    assert (types[start : start + lengths[2]] == IGN).all()  # the coco sample
    assert torch.equal(types[:start], torch.cat([_expected_types(template, s) for s in samples[:2]]))
    assert torch.equal(types[start + lengths[2] :], _expected_types(template, samples[3]))
    (meta,) = _meta(out)
    assert [m["dataset"] for m in meta["samples"]] == ["lvis", "lvis", "coco", "lvis"]


def test_padding_free_list_is_not_mutated(make_template: Callable[..., Any], make_row: RowFactory) -> None:
    template = make_template(packing=True)  # padding_free: a flat list of samples becomes one row
    samples = [template.encode(make_row(s, "coco"), return_length=True) for s in range(3)]
    batch = list(samples)
    out = build_dataset_metrics_collator(template)(batch)
    assert batch == samples  # swift rewrites the list it gets; ours is untouched
    assert out[DATASET_LABELS_KEY] == ["coco"] and out[PACK_NUM_SAMPLES_KEY].tolist() == [3]
    assert TOKEN_TYPES_KEY not in out and INSTABILITY_META_JSON_KEY not in out


def test_packed_row_length_mismatch_is_ignore(
    make_template: Callable[..., Any], make_row: RowFactory
) -> None:
    template, packs = _packed(make_template, make_row, [["lvis", "lvis"]])

    def padded_base(batch: list[Any]) -> dict[str, Any]:
        return template.data_collator(batch, padding_to=1024)  # the row no longer has the samples' length

    out = build_dataset_metrics_collator(template, base_collator=padded_base, token_type_cfg=ON)(packs)
    assert out["labels"].shape == (1, 1024)
    assert (out[TOKEN_TYPES_KEY] == IGN).all()


def test_real_packing_dataset_through_arrow(make_template: Callable[..., Any], make_row: RowFactory) -> None:
    """swift's PackingDataset over an HF dataset: _extra_kwargs survive, Arrow None-fills keys."""
    import datasets
    from swift.dataset import PackingDataset

    template = make_template()
    encoded = [template.encode(make_row(s, "lvis"), return_length=True) for s in range(6)]
    ds = datasets.Dataset.from_list(encoded)
    # Rows without a poly now carry "poly": None in their payload struct.
    objects = [o for r in ds for o in r["_extra_kwargs"]["assistant_payload"]["objects"]]
    assert any(o.get("poly", 1) is None for o in objects)
    packing = PackingDataset(template, ds, packing_length=2 * max(len(e["input_ids"]) for e in encoded))
    out = build_dataset_metrics_collator(template, token_type_cfg=ON)([packing[0]])
    n = len(packing[0])
    assert n >= 2 and out[PACK_NUM_SAMPLES_KEY].tolist() == [n] and out[DATASET_LABELS_KEY] == ["lvis"]
    types = out[TOKEN_TYPES_KEY][0]
    assert (types[out["labels"][0] != -100] != IGN).all()  # every sample typed despite the None keys
    _coord_positions_are_coord(template, out["labels"][0], types)


def test_attribute_config_and_exclude(template: Any, make_row: RowFactory) -> None:
    samples = [template.encode(make_row(0, "lvis"), return_length=True)]
    cfg = SimpleNamespace(enabled=True, include=["lvis"], exclude=["LVIS"])
    out = build_dataset_metrics_collator(template, token_type_cfg=cfg)(samples)
    assert (out[TOKEN_TYPES_KEY] == IGN).all()
    off = build_dataset_metrics_collator(template, token_type_cfg=SimpleNamespace(enabled=False))(samples)
    assert TOKEN_TYPES_KEY not in off and set(off) >= {DATASET_LABELS_KEY, DATASET_SEGMENTS_KEY}


class _Failing:
    name = "failing"
    emits = frozenset({TOKEN_TYPES_KEY})

    def __init__(self, optional: bool = True) -> None:
        self.optional = optional
        self.calls = 0

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        self.calls += 1
        batch[TOKEN_TYPES_KEY] = torch.zeros(1)  # a partial write that must not survive
        raise RuntimeError("boom")


def test_failing_optional_enricher_warns_once(template: Any, make_row: RowFactory) -> None:
    samples = [template.encode(make_row(s), return_length=True) for s in range(2)]
    failing = _Failing()
    collate = build_dataset_metrics_collator(template, extra_enrichers=[failing])
    with pytest.warns(EnricherWarning, match="failing"):
        first = collate(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EnricherWarning)
        second = collate(samples)
    assert failing.calls == 2
    for out in (first, second):
        assert TOKEN_TYPES_KEY not in out
        assert out[PACK_NUM_SAMPLES_KEY].tolist() == [1, 1]


def test_failing_required_enricher_raises(template: Any, make_row: RowFactory) -> None:
    samples = [template.encode(make_row(0), return_length=True)]
    with pytest.raises(RuntimeError, match="boom"):
        build_dataset_metrics_collator(template, extra_enrichers=[_Failing(optional=False)])(samples)


class _Sloppy:
    name = "sloppy"
    emits = frozenset({TOKEN_TYPES_KEY})
    optional = True

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        batch[TOKEN_TYPES_KEY] = torch.full_like(batch["labels"], IGN)
        batch[DATASET_LABELS_KEY] = ["x"] * batch["labels"].shape[0]  # declared by the contract, not by it


def test_undeclared_write(template: Any, make_row: RowFactory) -> None:
    samples = [template.encode(make_row(0), return_length=True)]
    with pytest.raises(ContractViolation, match="dataset_labels"):
        build_dataset_metrics_collator(template, extra_enrichers=[_Sloppy()])(samples)
    with pytest.warns(ContractWarning, match="dataset_labels"):
        collate = build_dataset_metrics_collator(template, extra_enrichers=[_Sloppy()], contracts_mode="warn")
        out = collate(samples)
    assert TOKEN_TYPES_KEY in out  # its declared write is kept ...
    assert out[DATASET_LABELS_KEY] == ["lvis"]  # ... its undeclared overwrite is dropped


def test_enricher_wiring_errors(template: Any) -> None:
    bad = SimpleNamespace(name="bad", emits=frozenset({"foo"}), optional=True)
    with pytest.raises(ContractViolation, match="contract does not") as info:
        build_dataset_metrics_collator(template, extra_enrichers=[bad])  # type: ignore[list-item]
    assert (info.value.key, info.value.rule) == ("foo", "undeclared_extra")
    dup = SimpleNamespace(name="dup", emits=frozenset({DATASET_LABELS_KEY}), optional=True)
    with pytest.raises(ValueError, match="already emits"):
        build_dataset_metrics_collator(template, extra_enrichers=[dup])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("fields", "label"),
    [
        ({"metadata": {"_fusion_source": "a", "dataset": "b"}, "dataset": "c", "dataset_name": "d"}, "a"),
        ({"metadata": {"dataset": "b"}, "dataset": "c", "dataset_name": "d"}, "b"),
        ({"metadata": {}, "dataset": "c", "dataset_name": "d"}, "c"),
        ({"dataset_name": "d"}, "d"),
        ({"metadata": "not a mapping", "dataset": ""}, "default"),
        ({}, "default"),
    ],
)
def test_label_lookup_order(fields: dict[str, Any], label: str) -> None:
    assert sample_dataset_label({"input_ids": [1], "_extra_kwargs": fields}) == label
    assert sample_dataset_label({"input_ids": [1], **fields}) == label  # top-level fields work too


def test_dropped_source_fields_are_reported_once(
    make_template: Callable[..., Any], make_row: RowFactory, caplog: pytest.LogCaptureFixture
) -> None:
    template = make_template(remove_unused_columns=True)  # swift's default: extra fields are dropped
    samples = [template.encode(make_row(0, "lvis"), return_length=True)]
    collate = build_dataset_metrics_collator(template, token_type_cfg=ON)
    with caplog.at_level("WARNING", logger="coordexp.data_collators.enrichers"):
        out = collate(samples)
        collate(samples)
    ours = [r.getMessage() for r in caplog.records if r.name == "coordexp.data_collators.enrichers"]
    assert len(ours) == 1 and "remove_unused_columns=False" in ours[0]
    assert out[DATASET_LABELS_KEY] == ["default"] and (out[TOKEN_TYPES_KEY] == IGN).all()


@pytest.mark.parametrize("mode", ["padded", "packing"])
def test_fields_merged_into_encoded_dict(
    make_template: Callable[..., Any], make_row: RowFactory, mode: str
) -> None:
    """The route docs/ms-swift-probe.md recommends: extras as top-level keys of the encoded dict."""
    template = make_template(remove_unused_columns=True, packing=mode == "packing")
    rows = [make_row(s, "lvis") for s in range(3)]
    encoded = []
    for row in rows:
        enc = template.encode(row, return_length=True)
        # A JSON-text payload, as a JSONL -> Arrow pipeline would store it to keep key order.
        enc.update({k: row[k] for k in ("dataset", "base_idx", "sample_id")})
        enc["assistant_payload"] = json.dumps(row["assistant_payload"])
        encoded.append(enc)
    batch: list[Any] = [encoded] if mode == "packing" else encoded
    collate = build_dataset_metrics_collator(
        template, token_type_cfg=ON, instability_monitor_cfg={"enabled": True}, box_slots=True
    )
    out = collate(batch)
    model_keys = MODEL_KEYS_PACKED if mode == "packing" else MODEL_KEYS_PADDED
    assert set(out) == model_keys | set(BATCH_EXTRAS_KEYS)
    labels, types = out["labels"], out[TOKEN_TYPES_KEY]
    assert (types[labels != -100] != IGN).all()
    for i in range(labels.shape[0]):
        _coord_positions_are_coord(template, labels[i], types[i])
    meta = _meta(out)
    assert [s["sample_id"] for m in meta for s in m["samples"]] == ["lvis-0000", "lvis-0001", "lvis-0002"]
    assert out[PACK_NUM_SAMPLES_KEY].tolist() == ([3] if mode == "packing" else [1, 1, 1])
