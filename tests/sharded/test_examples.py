"""The configs under examples/ are valid training YAMLs (their model and data paths swapped for the
demo's, which exist): every key and value passes the checks ``coordexp train`` runs at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from coordexp.config import ConfigError
from coordexp.launch import demo_config
from coordexp.launch.config import parse_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def demo_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    demo = demo_config(tmp_path_factory.mktemp("examples") / "demo")
    return {"model": demo.model.path, "train": demo.data.train, "val": demo.data.val}


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"stage1_zero2.yaml", "stage1_zero3.yaml", "stage1_fsdp2_gpu.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, demo_paths: dict[str, object], tmp_path: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["model"]["path"] = demo_paths["model"]
    raw["data"].update(train=demo_paths["train"], val=demo_paths["val"])
    raw["training"]["output_dir"] = str(tmp_path / "run")
    if raw["training"].get("fsdp") and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"training\.fsdp: FSDP needs GPUs"):
            parse_config(raw)
        return
    cfg = parse_config(raw)
    assert cfg.training["output_dir"] == str(tmp_path / "run")
