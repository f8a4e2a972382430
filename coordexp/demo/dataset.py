"""Synthetic coord-token detection rows for the offline demo.

Layout: one JSONL file per (split, dataset label), ``{split}_{label}.jsonl`` with ``split`` in
``train``/``val`` and ``label`` in :data:`DATASET_LABELS`. One file per label lets a run mix the
labels in whatever proportion it wants.

Each row carries what the Stage-1 diagnostics need besides the chat messages:
``assistant_payload`` (the object dict the answer text was serialised from, for token types),
``dataset`` (the label), ``base_idx`` (the row's index in its file) and ``sample_id``
(informational ids, copied into instability dumps; dumps find a row by its file and line).

The rows are text only: the user prompt names the objects of a fake scene, and each category has
its own typical box location, so a tiny model can learn something within a few hundred steps.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coordexp.answers import FieldOrder, write_coordjson
from coordexp.coord_tokens.codec import COORD_BINS, coord_token, parse_coord_token
from coordexp.coord_tokens.payload import serialize_payload

__all__ = [
    "DATASET_LABELS",
    "SPLITS",
    "DemoAnswer",
    "DemoDatasetFiles",
    "build_demo_dataset",
    "demo_dataset_path",
    "make_rows",
]

DATASET_LABELS: tuple[str, ...] = ("lvis", "coco")
DemoAnswer = Literal["json", "coordjson"]
SPLITS: tuple[str, ...] = ("train", "val")

# Category names per label. LVIS gets the long tail, multi-word names and one non-ASCII name so the
# demo exercises byte-level tokens inside a description.
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "lvis": (
        "teapot",
        "awning",
        "bow tie",
        "life jacket",
        "flamingo",
        "pretzel",
        "windmill",
        "paper towel",
        "fire hydrant",
        "crème brûlée",
        "baseball cap",
        "traffic cone",
    ),
    "coco": ("person", "bicycle", "car", "dog", "cat", "chair", "bottle", "umbrella"),
}
# Probability that an object also carries a polygon, per label (COCO has segmentation more often).
_POLY_PROB: dict[str, float] = {"lvis": 0.3, "coco": 0.5}
_MAX_OBJECTS: dict[str, int] = {"lvis": 5, "coco": 4}
_PROMPTS: tuple[str, ...] = (
    "Scene: {scene}. Detect every object and answer in JSON with desc and bbox_2d.",
    "Locate all objects in this scene ({scene}). Reply with the JSON object list.",
    "Objects present: {scene}. Give each one's box as coordinate tokens in JSON.",
)


@dataclass(frozen=True)
class DemoDatasetFiles:
    """Paths of the written files, in the order of the `labels` they were built for."""

    train_files: tuple[Path, ...]
    val_files: tuple[Path, ...]


def demo_dataset_path(out_dir: str | Path, split: str, label: str) -> Path:
    return Path(out_dir) / f"{split}_{label}.jsonl"


def _clamp(v: float) -> int:
    return min(COORD_BINS - 1, max(0, round(v)))


def _category_center(cat_index: int) -> tuple[float, float]:
    # A fixed, well spread typical center per category (two low-discrepancy sequences), independent
    # of the seed, so the location signal is the same for every build.
    x = (0.5 + cat_index * 0.6180339887) % 1.0
    y = (0.25 + cat_index * 0.4142135624) % 1.0
    return 100 + 800 * x, 100 + 800 * y


def _make_object(rng: random.Random, label: str, cat_index: int) -> dict[str, Any]:
    cx, cy = _category_center(cat_index)
    cx, cy = rng.gauss(cx, 60.0), rng.gauss(cy, 60.0)
    w, h = rng.uniform(40, 300), rng.uniform(40, 300)
    # x1 < x2 and y1 < y2 even when the box is clamped at the border.
    x1, y1 = min(_clamp(cx - w / 2), COORD_BINS - 2), min(_clamp(cy - h / 2), COORD_BINS - 2)
    x2, y2 = max(x1 + 1, _clamp(cx + w / 2)), max(y1 + 1, _clamp(cy + h / 2))
    obj: dict[str, Any] = {
        "desc": _CATEGORIES[label][cat_index],
        "bbox_2d": [coord_token(v) for v in (x1, y1, x2, y2)],
    }
    if rng.random() < _POLY_PROB[label]:
        poly: list[str] = []
        for _ in range(rng.randint(3, 6)):
            poly += [coord_token(rng.randint(x1, x2)), coord_token(rng.randint(y1, y2))]
        obj["poly"] = poly  # flat [x0, y0, x1, y1, ...]; the serialiser writes it as pairs
    return obj


def _make_row(rng: random.Random, label: str, split: str, base_idx: int) -> dict[str, Any]:
    categories = _CATEGORIES[label]
    n_objects = rng.randint(1, _MAX_OBJECTS[label])
    cat_indices = [rng.randrange(len(categories)) for _ in range(n_objects)]
    payload = {"objects": [_make_object(rng, label, i) for i in cat_indices]}
    scene = ", ".join(categories[i] for i in cat_indices)
    prompt = rng.choice(_PROMPTS).format(scene=scene)
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": serialize_payload(payload)},
        ],
        "assistant_payload": payload,
        "dataset": label,
        "base_idx": base_idx,
        "sample_id": f"{label}-{split}-{base_idx:06d}",
    }


def as_coordjson(row: dict[str, Any]) -> dict[str, Any]:
    """The row with a CoordJSON answer: one geometry per record (``poly`` for every other object
    that has one, else ``bbox_2d``), ``desc_first`` on odd rows and ``geometry_first`` on even ones,
    and every third row without ``assistant_payload`` (the others get the payload of that answer).
    Deterministic from ``base_idx``: no random draw, so the objects are the JSON demo's."""
    index = int(row["base_idx"])
    order: FieldOrder = "desc_first" if index % 2 else "geometry_first"
    records = []
    for j, obj in enumerate(row["assistant_payload"]["objects"]):
        kind = "poly" if "poly" in obj and (index + j) % 2 else "bbox_2d"
        records.append((obj["desc"], kind, [parse_coord_token(t) or 0 for t in obj[kind]]))
    out = {k: v for k, v in row.items() if k not in ("messages", "assistant_payload")}
    answer = {"role": "assistant", "content": write_coordjson(records, field_order=order)}
    out["messages"] = [row["messages"][0], answer]
    if index % 3:
        pairs = [(desc, [coord_token(b) for b in bins], kind) for desc, kind, bins in records]
        objects = [
            {"desc": d, k: bins} if order == "desc_first" else {k: bins, "desc": d} for d, bins, k in pairs
        ]
        out["assistant_payload"] = {"objects": objects}
    return out


def make_rows(
    label: str, split: str, n: int, *, seed: int = 0, answer: DemoAnswer = "json"
) -> Iterator[dict[str, Any]]:
    """Rows of one (split, label) file. Deterministic: a string-seeded RNG per file, so files do not
    depend on each other or on the order they are built in. ``answer`` ``coordjson``: the same rows
    answered in CoordJSON (:func:`as_coordjson`)."""
    if label not in _CATEGORIES:  # checked here, not lazily at the first row
        raise ValueError(f"unknown dataset label {label!r}; expected one of {DATASET_LABELS}")
    rng = random.Random(f"coordexp-demo:{seed}:{split}:{label}")
    rows = (_make_row(rng, label, split, i) for i in range(n))
    return (as_coordjson(r) for r in rows) if answer == "coordjson" else rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)  # never leave a half-written file under the final name


RowsFor = Callable[[str, str, int], Iterable[dict[str, Any]]]
"""(split, label, n) -> the rows of that file"""


def write_demo_splits(
    out_dir: str | Path, rows_for: RowsFor, *, n_train: int, n_val: int, labels: Sequence[str]
) -> DemoDatasetFiles:
    """Write ``{train,val}_{label}.jsonl`` under ``out_dir`` from ``rows_for`` (both demos' layout)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for split, n in (("train", n_train), ("val", n_val)):
        for label in labels:
            path = demo_dataset_path(out, split, label)
            write_jsonl(path, rows_for(split, label, n))
            files[split].append(path)
    return DemoDatasetFiles(train_files=tuple(files["train"]), val_files=tuple(files["val"]))


def build_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 96,
    n_val: int = 16,
    labels: Sequence[str] = DATASET_LABELS,
    answer: DemoAnswer = "json",
) -> DemoDatasetFiles:
    """Write ``{train,val}_{label}.jsonl`` under ``out_dir``; ``n_train``/``n_val`` are rows per file."""
    return write_demo_splits(
        out_dir,
        lambda split, label, n: make_rows(label, split, n, seed=seed, answer=answer),
        n_train=n_train,
        n_val=n_val,
        labels=labels,
    )
