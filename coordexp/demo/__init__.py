"""Offline demo assets: a tiny random Qwen3 checkpoint with coord tokens and a synthetic dataset.

``build_demo_assets(root, seed=...)`` is the entry point (used by ``python -m coordexp train``
without a config); the builders of each part are exported for tests and custom layouts.
"""

from coordexp.demo.build import DemoAssets, build_demo_assets, load_demo_assets
from coordexp.demo.dataset import DATASET_LABELS, DemoDatasetFiles, build_demo_dataset, make_rows
from coordexp.demo.model import build_demo_config, build_demo_model
from coordexp.demo.tokenizer import build_demo_tokenizer

__all__ = [
    "DATASET_LABELS",
    "DemoAssets",
    "DemoDatasetFiles",
    "build_demo_assets",
    "build_demo_config",
    "build_demo_dataset",
    "build_demo_model",
    "build_demo_tokenizer",
    "load_demo_assets",
    "make_rows",
]
