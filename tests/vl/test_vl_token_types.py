"""Token types on real VL-encoded rows: image tokens are never supervised and never typed; every
supervised answer token is typed as its payload says (coord tokens COORD, descriptions DESC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.demo import DemoAssets
from coordexp.demo.vl_model import IMAGE_TOKEN_ID
from coordexp.functional.targets import IGNORE_INDEX, TYPE_COORD, TYPE_DESC, TYPE_IGNORE
from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from coordexp.launch.config import DataSection
from coordexp.rows.collator import build_dataset_metrics_collator
from coordexp.rows.datasets import build_datasets

pytestmark = pytest.mark.vl

ON = {"enabled": True, "include": ["lvis", "coco"]}


def _model_and_template(assets: DemoAssets, layout: str) -> tuple[Any, Any]:
    import swift

    model, processor = swift.get_model_processor(
        str(assets.model_dir), model_type=assets.model_type, device_map="cpu"
    )
    template = swift.get_template(
        processor, template_type=assets.template_type, max_length=512, padding_free=layout == "padding_free"
    )
    template.set_mode("train")
    template.model = model  # the 3-D rope position ids need it (as coordexp's trainer assembly does)
    return model, template


@pytest.mark.parametrize("layout", ["padded", "padding_free", "packing"])
def test_image_tokens_untyped_answer_tokens_typed(vl_assets: DemoAssets, tmp_path: Path, layout: str) -> None:
    _, template = _model_and_template(vl_assets, layout)
    data = DataSection.model_validate(
        {"train": [str(p) for p in vl_assets.train_files], "layout": layout, "max_samples": 12}
    )
    train, _ = build_datasets(template, data, packing_length=512, output_dir=tmp_path)
    batch = [train[i] for i in range(min(2, len(train)))] if layout == "packing" else list(train)[:6]
    out = build_dataset_metrics_collator(template, token_type_cfg=ON)(batch)
    ids, labels, types = out["input_ids"], out["labels"], out[TOKEN_TYPES_KEY]
    assert types.shape == labels.shape
    image = ids == IMAGE_TOKEN_ID
    assert image.any()
    assert (labels[image] == IGNORE_INDEX).all() and (types[image] == TYPE_IGNORE).all()
    supervised = labels != IGNORE_INDEX
    assert (types[supervised] != TYPE_IGNORE).all() and (types[~supervised] == TYPE_IGNORE).all()
    coord = torch.isin(labels, torch.tensor(get_coord_token_ids(template.tokenizer)))
    assert (
        coord.any()
        and (types[coord] == TYPE_COORD).all()
        and (types[supervised & ~coord] != TYPE_COORD).all()
    )
    desc_text = template.tokenizer.decode(labels[types == TYPE_DESC].tolist())
    for name in ("teapot", "flamingo", "traffic cone", "person", "car", "dog"):
        desc_text = desc_text.replace(name, "")
    # DESC positions hold the category names (BPE glues quotes and commas onto them), nothing else.
    assert set(desc_text) <= set(' ",'), desc_text
    if layout != "padded":  # one row; the 3-D rope position ids came from the model
        assert out["position_ids"].shape[0] == 3
