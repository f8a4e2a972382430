"""Synthetic images with boxes and their coord-token answers, for the vision-language demo.

Layout under ``out_dir``: ``{split}_{label}.jsonl`` (as the text demo) and ``images/`` with one PNG
per row. Rows are in ms-swift's standard form: a user turn starting with the ``<image>`` tag, the
assistant's JSON answer, and ``images`` holding the PNG's path *relative to the JSONL file* (the
loader resolves it against the file's folder, so the folder can move as a whole). Each row also
carries ``assistant_payload``, ``dataset``, ``base_idx`` and ``sample_id`` like the text demo.

Each object is a filled rectangle in its category's colour on a plain background; its box is the
rectangle in Qwen-VL's normalised frame (0..999 over the image's width and height). Image sizes
vary between 64x64 and 96x64 pixels (4 or 6 vision tokens after the 2x2 merge), so rows of one
batch have different vision grids. PNG bytes depend only on the seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordexp.coord_tokens.codec import COORD_BINS, coord_token
from coordexp.coord_tokens.payload import serialize_payload
from coordexp.demo.dataset import DATASET_LABELS, DemoDatasetFiles, write_demo_splits

__all__ = ["IMAGE_SIZES", "VL_CATEGORIES", "build_vl_dataset", "make_vl_row"]

IMAGES_SUBDIR = "images"
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (96, 64))  # (width, height)
# Category -> RGB colour, per label; the colour is what the model can learn the category from.
VL_CATEGORIES: dict[str, dict[str, tuple[int, int, int]]] = {
    "lvis": {"teapot": (200, 40, 40), "flamingo": (240, 120, 180), "traffic cone": (250, 140, 0)},
    "coco": {"person": (40, 40, 200), "car": (30, 160, 60), "dog": (120, 80, 40)},
}
_MAX_OBJECTS = 3
_BACKGROUND = (235, 235, 235)
_PROMPT = "<image>Detect every object in the image. Answer in JSON with desc and bbox_2d."


def _norm(v: int, size: int) -> int:
    """Pixel edge -> Qwen-VL's 0..999 frame."""
    return min(COORD_BINS - 1, max(0, round(v * (COORD_BINS - 1) / size)))


def _draw(
    path: Path, size: tuple[int, int], boxes: Sequence[tuple[tuple[int, int, int, int], tuple[int, int, int]]]
) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    for (x1, y1, x2, y2), colour in boxes:
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False)


def make_vl_row(rng: random.Random, label: str, split: str, base_idx: int, data_dir: Path) -> dict[str, Any]:
    """One row; draws its image under ``data_dir/images``."""
    width, height = rng.choice(IMAGE_SIZES)
    categories = VL_CATEGORIES[label]
    names = sorted(categories)
    objects: list[dict[str, Any]] = []
    boxes = []
    for _ in range(rng.randint(1, _MAX_OBJECTS)):
        name = rng.choice(names)
        w, h = rng.randint(8, width // 2), rng.randint(8, height // 2)
        x1, y1 = rng.randint(0, width - w), rng.randint(0, height - h)
        x2, y2 = x1 + w, y1 + h
        boxes.append(((x1, y1, x2, y2), categories[name]))
        objects.append(
            {
                "desc": name,
                "bbox_2d": [
                    coord_token(_norm(x1, width)),
                    coord_token(_norm(y1, height)),
                    coord_token(_norm(x2, width)),
                    coord_token(_norm(y2, height)),
                ],
            }
        )
    image_name = f"{IMAGES_SUBDIR}/{split}_{label}_{base_idx:06d}.png"
    _draw(data_dir / image_name, (width, height), boxes)
    payload = {"objects": objects}
    return {
        "messages": [
            {"role": "user", "content": _PROMPT},
            {"role": "assistant", "content": serialize_payload(payload)},
        ],
        "images": [image_name],
        "assistant_payload": payload,
        "dataset": label,
        "base_idx": base_idx,
        "sample_id": f"{label}-{split}-{base_idx:06d}",
    }


def build_vl_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 32,
    n_val: int = 8,
    labels: Sequence[str] = DATASET_LABELS,
) -> DemoDatasetFiles:
    """Write ``{train,val}_{label}.jsonl`` and their images under ``out_dir``."""
    out = Path(out_dir)
    unknown = [label for label in labels if label not in VL_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown dataset label {unknown[0]!r}; expected one of {sorted(VL_CATEGORIES)}")

    def rows_for(split: str, label: str, n: int) -> list[dict[str, Any]]:
        rng = random.Random(f"coordexp-demo-vl:{seed}:{split}:{label}")
        return [make_vl_row(rng, label, split, i, out) for i in range(n)]

    return write_demo_splits(out, rows_for, n_train=n_train, n_val=n_val, labels=labels)
