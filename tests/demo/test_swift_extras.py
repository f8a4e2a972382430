"""The recommended way to carry row extras (merged into the encoded dict) works in all batch modes.

Guards the ms-swift behaviour documented in docs/ms-swift-probe.md: ``template.encode`` drops the
extras, the base collator ignores unknown keys, and padding_free rewrites its input list in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordexp.demo import DemoAssets

swift = pytest.importorskip("swift")

EXTRAS = ("assistant_payload", "dataset", "base_idx", "sample_id")


@pytest.mark.parametrize("mode", ["padded", "padding_free", "packing"])
def test_extras_reach_wrapping_collator(
    demo_assets: DemoAssets, read_jsonl: Callable[[Path], list[dict[str, Any]]], mode: str
) -> None:
    _, tokenizer = swift.get_model_processor(
        str(demo_assets.model_dir), model_type=demo_assets.model_type, load_model=False
    )
    padding_free = mode == "padding_free"
    template = swift.get_template(
        tokenizer, template_type=demo_assets.template_type, max_length=2048, padding_free=padding_free
    )
    template.set_mode("train")
    rows = [row for path in demo_assets.train_files for row in read_jsonl(path)[:3]]

    encoded = []
    for row in rows:
        enc = template.encode(row, return_length=True)
        assert not set(EXTRAS) & set(enc)  # swift drops them
        enc.update({k: row[k] for k in EXTRAS})
        encoded.append(enc)

    if mode == "packing":
        from datasets import Dataset
        from swift.dataset import PackingDataset

        # JSON string: Arrow would otherwise add "poly": None to objects without a polygon.
        table = Dataset.from_list(
            [{**e, "assistant_payload": json.dumps(e["assistant_payload"])} for e in encoded]
        )
        packs = PackingDataset(template, table, packing_length=4096)  # room for all rows: one pack
        assert len(packs) == 1
        batch: list[Any] = [packs[0]]
        samples = batch[0]
    else:
        batch = list(encoded)
        samples = encoded

    seen = [(s["dataset"], s["base_idx"], s["sample_id"]) for s in samples]  # read before the base collator
    collated = template.data_collator(batch)
    expected_keys = {"input_ids", "labels", "attention_mask" if mode == "padded" else "position_ids"}
    assert set(collated) == expected_keys
    if mode == "padded":
        assert collated["input_ids"].shape[0] == len(rows)
    else:
        assert collated["input_ids"].shape[0] == 1
        starts = (collated["position_ids"][0] == 0).nonzero().flatten().tolist()
        assert len(starts) == len(samples)
    if mode == "padding_free":
        assert len(batch) == 1  # the input list was rewritten in place
    assert len(seen) == len(samples) and all(label in demo_assets.dataset_labels for label, _, _ in seen)
    if mode == "packing":
        by_id = {r["sample_id"]: r for r in rows}
        for s in samples:
            assert json.loads(s["assistant_payload"]) == by_id[s["sample_id"]]["assistant_payload"]
