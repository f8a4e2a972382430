"""Build (or reuse) the complete offline demo: tokenizer + tiny model + JSONL dataset.

Layout under ``root``::

    manifest.json          what was built, from which seed; written LAST
    model/                 tokenizer files + config.json + model.safetensors (one local checkpoint)
    data/{train,val}_{lvis,coco}.jsonl

The manifest is written only after everything else, so an interrupted build has no manifest and
is redone on the next call; a manifest whose spec (seed, builder version, sizes) differs from the
requested one also triggers a rebuild. Building from scratch takes well under a second once
torch/transformers are imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordexp.demo.dataset import DATASET_LABELS, build_demo_dataset, demo_dataset_path
from coordexp.demo.model import build_demo_model
from coordexp.demo.tokenizer import build_demo_tokenizer

__all__ = ["BUILDER_VERSION", "DemoAssets", "build_demo_assets", "load_demo_assets"]

# Bump whenever the tokenizer, model or dataset generation changes, so stale assets get rebuilt.
BUILDER_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_SUBDIR = "model"
DATA_SUBDIR = "data"
# Rows per (split, label) file; small enough for a CPU demo run, large enough for a few epochs.
N_TRAIN = 96
N_VAL = 16
# Files whose presence means the checkpoint folder is complete (the tokenizer writes more).
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class DemoAssets:
    """Paths of a built demo and how to load it with ms-swift."""

    root: Path
    seed: int
    model_dir: Path
    train_files: tuple[Path, ...]
    val_files: tuple[Path, ...]
    dataset_labels: tuple[str, ...] = DATASET_LABELS
    # ms-swift loading parameters for this checkpoint (see docs/ms-swift-probe.md).
    model_type: str = "qwen3"
    template_type: str = "qwen3_nothinking"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME


def _spec(seed: int) -> dict[str, Any]:
    """Everything that determines the built bytes; equal spec -> reuse."""
    return {
        "builder_version": BUILDER_VERSION,
        "seed": seed,
        "n_train": N_TRAIN,
        "n_val": N_VAL,
        "dataset_labels": list(DATASET_LABELS),
    }


def _assets(root: Path, seed: int) -> DemoAssets:
    data = root / DATA_SUBDIR
    return DemoAssets(
        root=root,
        seed=seed,
        model_dir=root / MODEL_SUBDIR,
        train_files=tuple(demo_dataset_path(data, "train", label) for label in DATASET_LABELS),
        val_files=tuple(demo_dataset_path(data, "val", label) for label in DATASET_LABELS),
    )


def _is_complete(assets: DemoAssets) -> bool:
    files = [assets.model_dir / name for name in _CHECKPOINT_FILES]
    return all(p.is_file() for p in (*files, *assets.train_files, *assets.val_files))


def load_demo_assets(root: str | Path, *, seed: int = 0) -> DemoAssets | None:
    """The assets under ``root`` if they were fully built with this ``seed`` and builder, else None."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("spec") != _spec(seed):
        return None
    assets = _assets(root, seed)
    return assets if _is_complete(assets) else None


def build_demo_assets(root: str | Path, *, seed: int = 0) -> DemoAssets:
    """Build the demo under ``root`` unless a complete build with the same seed is already there."""
    root = Path(root)
    existing = load_demo_assets(root, seed=seed)
    if existing is not None:
        return existing
    manifest_path = root / MANIFEST_NAME
    # Drop a stale manifest first: a crash in the middle of this rebuild must not look complete.
    manifest_path.unlink(missing_ok=True)
    assets = _assets(root, seed)
    tokenizer = build_demo_tokenizer(assets.model_dir, seed=seed)
    build_demo_model(assets.model_dir, tokenizer, seed=seed)
    build_demo_dataset(root / DATA_SUBDIR, seed=seed, n_train=N_TRAIN, n_val=N_VAL, labels=DATASET_LABELS)
    manifest = {
        "spec": _spec(seed),
        "model_dir": MODEL_SUBDIR,
        "train_files": [str(p.relative_to(root)) for p in assets.train_files],
        "val_files": [str(p.relative_to(root)) for p in assets.val_files],
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(manifest_path)
    return assets
