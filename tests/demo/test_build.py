"""build_demo_assets: same seed -> same bytes; second call reuses; spec changes rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coordexp.demo import DemoAssets, build_demo_assets, load_demo_assets
from coordexp.demo.build import MANIFEST_NAME


def _files(assets: DemoAssets) -> list[Path]:
    return sorted(p for p in assets.root.rglob("*") if p.is_file())


def _weights(assets: DemoAssets) -> dict[str, torch.Tensor]:
    return load_file(assets.model_dir / "model.safetensors")


def _rel(assets: DemoAssets) -> list[str]:
    return [str(p.relative_to(assets.root)) for p in _files(assets)]


def test_layout(demo_assets: DemoAssets) -> None:
    assert _rel(demo_assets) == [
        "data/train_coco.jsonl",
        "data/train_lvis.jsonl",
        "data/val_coco.jsonl",
        "data/val_lvis.jsonl",
        MANIFEST_NAME,
        "model/chat_template.jinja",
        "model/config.json",
        "model/generation_config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
    ]
    assert [p.name for p in demo_assets.train_files] == ["train_lvis.jsonl", "train_coco.jsonl"]
    assert [p.name for p in demo_assets.val_files] == ["val_lvis.jsonl", "val_coco.jsonl"]
    config = json.loads((demo_assets.model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["model_type"] == "qwen3"


def test_same_seed_same_bytes(demo_assets: DemoAssets, tmp_path: Path) -> None:
    other = build_demo_assets(tmp_path / "again", seed=0)
    assert _rel(other) == _rel(demo_assets)
    for a, b in zip(_files(demo_assets), _files(other), strict=True):
        if a.name == "model.safetensors":
            continue  # compared as tensors below
        assert a.read_bytes() == b.read_bytes(), a.name
    wa, wb = _weights(demo_assets), _weights(other)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_other_seed_differs(demo_assets: DemoAssets, tmp_path: Path) -> None:
    other = build_demo_assets(tmp_path / "seed1", seed=1)
    for a, b in zip(demo_assets.train_files, other.train_files, strict=True):
        assert a.read_bytes() != b.read_bytes()
    wa, wb = _weights(demo_assets), _weights(other)
    assert not torch.equal(wa["model.embed_tokens.weight"], wb["model.embed_tokens.weight"])


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build_demo_assets(tmp_path / "rng", seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_second_call_reuses(tmp_path: Path) -> None:
    root = tmp_path / "reuse"
    first = build_demo_assets(root, seed=0)
    mtimes = {p: p.stat().st_mtime_ns for p in _files(first)}
    second = build_demo_assets(root, seed=0)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in _files(second)} == mtimes
    assert load_demo_assets(root, seed=0) == first
    assert load_demo_assets(root, seed=1) is None


@pytest.mark.parametrize("damage", ["other_seed", "missing_manifest", "missing_weights", "bad_manifest"])
def test_rebuilds_when_stale_or_incomplete(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "stale"
    built = build_demo_assets(root, seed=0)
    reference = built.train_files[0].read_bytes()
    if damage == "other_seed":
        build_demo_assets(root, seed=1)
        assert built.train_files[0].read_bytes() != reference
    elif damage == "missing_manifest":
        built.manifest_path.unlink()
    elif damage == "missing_weights":
        (built.model_dir / "model.safetensors").unlink()
    else:
        built.manifest_path.write_text("{not json")
    assert load_demo_assets(root, seed=0) is None
    rebuilt = build_demo_assets(root, seed=0)
    assert rebuilt == built
    assert rebuilt.train_files[0].read_bytes() == reference
    assert load_demo_assets(root, seed=0) == built
