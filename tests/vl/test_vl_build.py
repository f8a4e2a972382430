"""The tiny Qwen3-VL demo checkpoint: Qwen's token id layout, deterministic, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.coord_tokens.codec import COORD_BINS, coord_token, get_coord_token_ids
from coordexp.coord_tokens.payload import serialize_payload
from coordexp.demo import DemoAssets, build_demo_assets
from coordexp.demo.build import load_demo_assets
from coordexp.demo.vl_dataset import IMAGE_SIZES
from coordexp.demo.vl_model import IMAGE_TOKEN_ID, QWEN_SPECIAL_TOKENS, REGULAR_VOCAB

# Building the processor needs torchvision (transformers' Qwen3-VL video processor).
pytestmark = pytest.mark.vl


def test_token_ids_follow_qwen_layout(vl_assets: DemoAssets) -> None:
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(vl_assets.model_dir))
    # ms-swift's Qwen3-VL template looks these ids up by number.
    assert tok.convert_tokens_to_ids("<|image_pad|>") == IMAGE_TOKEN_ID == 151655
    assert tok.convert_tokens_to_ids("<|video_pad|>") == 151656
    for offset, token in enumerate(QWEN_SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(token) == REGULAR_VOCAB + offset
    coord_ids = get_coord_token_ids(tok)
    assert coord_ids == list(range(coord_ids[0], coord_ids[0] + COORD_BINS))
    assert coord_ids[0] == REGULAR_VOCAB + len(QWEN_SPECIAL_TOKENS)
    # Coord tokens stay single tokens inside an answer; placeholders are never produced.
    text = serialize_payload({"objects": [{"desc": "dog", "bbox_2d": [coord_token(3), coord_token(999)]}]})
    ids = tok(text)["input_ids"]
    assert coord_ids[3] in ids and coord_ids[999] in ids
    assert max(i for i in ids if i not in coord_ids) < 2048
    config = AutoConfig.from_pretrained(str(vl_assets.model_dir))
    assert config.image_token_id == 151655 and config.vision_start_token_id == 151652
    assert config.text_config.vocab_size == len(tok)


def test_rows_have_images_relative_to_their_file(vl_assets: DemoAssets) -> None:
    for path in (*vl_assets.train_files, *vl_assets.val_files):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        labels = {r["dataset"] for r in rows}
        assert labels == {path.stem.split("_", 1)[1]}
        for row in rows[:5]:
            assert row["messages"][0]["content"].startswith("<image>")
            (image,) = row["images"]
            assert not Path(image).is_absolute()
            with Image.open(path.parent / image) as img:
                assert img.size in IMAGE_SIZES
            assert row["messages"][1]["content"] == serialize_payload(row["assistant_payload"])


def test_build_is_deterministic_and_reused(tmp_path: Path, vl_assets: DemoAssets) -> None:
    again = build_demo_assets(tmp_path / "again", seed=0, kind="vl")
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        assert (again.model_dir / name).read_bytes() == (vl_assets.model_dir / name).read_bytes(), name
    first_image = sorted((again.root / "data" / "images").iterdir())[0]
    assert first_image.read_bytes() == (vl_assets.root / "data" / "images" / first_image.name).read_bytes()
    # A text demo manifest is not a VL build, and vice versa.
    assert load_demo_assets(again.root, seed=0, kind="text") is None
    assert load_demo_assets(again.root, seed=0, kind="vl") == again
