"""Build (or reuse) the complete offline demo: tokenizer + tiny model + JSONL dataset.

Three kinds: ``text`` (a tiny Qwen3, the default), ``coordjson`` (the same model and rows, answered
in CoordJSON: both field orders, ``bbox_2d`` and ``poly``, some rows without ``assistant_payload``)
and ``vl`` (a tiny Qwen3-VL with generated images, see :mod:`coordexp.demo.vl_model` and
:mod:`coordexp.demo.vl_dataset`). Layout under ``root``::

    manifest.json          what was built, of which kind, from which seed; written LAST
    model/                 tokenizer (+ processor) files + config.json + model.safetensors
    data/{train,val}_{lvis,coco}.jsonl   (vl: and data/images/*.png)

The manifest is written only after everything else, so an interrupted build has no manifest and
is redone on the next call; a manifest whose spec (seed, builder version, sizes) differs from the
requested one also triggers a rebuild. Building from scratch takes well under a second once
torch/transformers are imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from coordexp.answers import AnswerFormat
from coordexp.demo.dataset import DATASET_LABELS, DemoAnswer, build_demo_dataset, demo_dataset_path
from coordexp.demo.model import build_demo_model
from coordexp.demo.tokenizer import build_demo_tokenizer

__all__ = [
    "BUILDER_VERSION",
    "DEMO_KINDS",
    "DemoAssets",
    "DemoKind",
    "DemoKindSpec",
    "build_demo_assets",
    "load_demo_assets",
]

DemoKind = Literal["text", "coordjson", "vl"]

# Bump whenever the tokenizer, model or dataset generation changes, so stale assets get rebuilt.
BUILDER_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_SUBDIR = "model"
DATA_SUBDIR = "data"
# Files whose presence means the checkpoint folder is complete (the tokenizer writes more).
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class DemoKindSpec:
    """Everything that differs between the embedded demos, said once: how to build it, how ms-swift
    loads it, its size, where ``train --demo`` puts it and how long it trains."""

    build: Callable[[Path, int, DemoKindSpec], None]
    description: str
    root: Path
    """the default folder of ``train --demo KIND`` (relative to the working directory)"""
    model_type: str
    template_type: str
    n_train: int
    """rows per (split, label) file"""
    n_val: int
    schedule: Mapping[str, Any]
    """the demo run's ``training:`` keys that differ between demos"""
    extra_files: tuple[str, ...] = ()
    """checkpoint files besides ``_CHECKPOINT_FILES`` whose presence means a complete build"""
    answer_format: AnswerFormat = "auto"
    """the demo run's ``data.answer_format``"""


def _build_text(root: Path, seed: int, spec: DemoKindSpec) -> None:
    tokenizer = build_demo_tokenizer(root / MODEL_SUBDIR, seed=seed)
    build_demo_model(root / MODEL_SUBDIR, tokenizer, seed=seed)
    answer: DemoAnswer = "coordjson" if spec.answer_format == "coordjson" else "json"
    build_demo_dataset(
        root / DATA_SUBDIR,
        seed=seed,
        n_train=spec.n_train,
        n_val=spec.n_val,
        labels=DATASET_LABELS,
        answer=answer,
    )


def _build_vl(root: Path, seed: int, spec: DemoKindSpec) -> None:
    # Imported here: the text demo needs no vision code.
    from coordexp.demo.vl_dataset import build_vl_dataset
    from coordexp.demo.vl_model import build_vl_model, build_vl_processor, build_vl_tokenizer

    tokenizer = build_vl_tokenizer(root / MODEL_SUBDIR, seed=seed)
    build_vl_processor(root / MODEL_SUBDIR, tokenizer)
    build_vl_model(root / MODEL_SUBDIR, tokenizer, seed=seed)
    build_vl_dataset(
        root / DATA_SUBDIR, seed=seed, n_train=spec.n_train, n_val=spec.n_val, labels=DATASET_LABELS
    )


# Rows: small enough for a CPU demo run, large enough for a few epochs.
_TEXT = DemoKindSpec(
    _build_text,
    description="tiny Qwen3, synthetic data",
    root=Path("coordexp_demo"),
    model_type="qwen3",
    template_type="qwen3_nothinking",
    n_train=96,
    n_val=16,
    schedule={
        "max_steps": 24,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "eval_steps": 8,
        "save_steps": 24,
    },
)

DEMO_KINDS: Mapping[DemoKind, DemoKindSpec] = MappingProxyType(
    {
        "text": _TEXT,
        # The text demo answered in CoordJSON: same model, same objects, same schedule.
        "coordjson": replace(
            _TEXT,
            description="tiny Qwen3, synthetic data answered in CoordJSON",
            root=Path("coordexp_demo_coordjson"),
            answer_format="coordjson",
        ),
        # Fewer rows and steps: a VL step is slower (vision tower, a 152k-wide output layer).
        "vl": DemoKindSpec(
            _build_vl,
            description="tiny Qwen3-VL, generated images with boxes",
            root=Path("coordexp_demo_vl"),
            model_type="qwen3_vl",
            template_type="qwen3_vl",
            n_train=32,
            n_val=8,
            schedule={
                "max_steps": 8,
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 2,
                "eval_steps": 4,
                "save_steps": 8,
            },
            extra_files=("processor_config.json",),
        ),
    }
)


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
    kind: DemoKind = "text"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME


def _spec(seed: int, kind: DemoKind) -> dict[str, Any]:
    """Everything that determines the built bytes; equal spec -> reuse."""
    spec = {
        "builder_version": BUILDER_VERSION,
        "seed": seed,
        "n_train": DEMO_KINDS[kind].n_train,
        "n_val": DEMO_KINDS[kind].n_val,
        "dataset_labels": list(DATASET_LABELS),
    }
    if kind != "text":  # the text demo's manifest predates kinds: it stays as it was
        spec["kind"] = kind
    return spec


def _assets(root: Path, seed: int, kind: DemoKind) -> DemoAssets:
    data = root / DATA_SUBDIR
    return DemoAssets(
        root=root,
        seed=seed,
        model_dir=root / MODEL_SUBDIR,
        train_files=tuple(demo_dataset_path(data, "train", label) for label in DATASET_LABELS),
        val_files=tuple(demo_dataset_path(data, "val", label) for label in DATASET_LABELS),
        model_type=DEMO_KINDS[kind].model_type,
        template_type=DEMO_KINDS[kind].template_type,
        kind=kind,
    )


def _is_complete(assets: DemoAssets) -> bool:
    names = (*_CHECKPOINT_FILES, *DEMO_KINDS[assets.kind].extra_files)
    files = [assets.model_dir / name for name in names]
    return all(p.is_file() for p in (*files, *assets.train_files, *assets.val_files))


def _check_kind(kind: str) -> DemoKind:
    if kind not in DEMO_KINDS:
        raise ValueError(f"unknown demo kind {kind!r}; expected one of {sorted(DEMO_KINDS)}")
    return kind  # type: ignore[return-value]


def load_demo_assets(root: str | Path, *, seed: int = 0, kind: DemoKind = "text") -> DemoAssets | None:
    """The assets under ``root`` if they were fully built with this ``seed``, kind and builder, else None."""
    root = Path(root)
    kind = _check_kind(kind)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("spec") != _spec(seed, kind):
        return None
    assets = _assets(root, seed, kind)
    return assets if _is_complete(assets) else None


def build_demo_assets(root: str | Path, *, seed: int = 0, kind: DemoKind = "text") -> DemoAssets:
    """Build the demo under ``root`` unless a complete build with the same seed and kind is there."""
    root = Path(root)
    kind = _check_kind(kind)
    existing = load_demo_assets(root, seed=seed, kind=kind)
    if existing is not None:
        return existing
    manifest_path = root / MANIFEST_NAME
    # Drop a stale manifest first: a crash in the middle of this rebuild must not look complete.
    manifest_path.unlink(missing_ok=True)
    assets = _assets(root, seed, kind)
    DEMO_KINDS[kind].build(root, seed, DEMO_KINDS[kind])
    manifest = {
        "spec": _spec(seed, kind),
        "model_dir": MODEL_SUBDIR,
        "train_files": [str(p.relative_to(root)) for p in assets.train_files],
        "val_files": [str(p.relative_to(root)) for p in assets.val_files],
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(manifest_path)
    return assets
