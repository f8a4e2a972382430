"""Boxes in pixels from an answer text: the ground truth of a val row and a model's generated answer.

Both go through the one answer parser (:mod:`coordexp.answers`):

- **Ground truth** (the val row's assistant text, training data): :func:`coordexp.answers.parse_answer`,
  strict; a GT answer that does not parse is a ground-truth error (one line at load).
- **Predictions** (model output): the first balanced ``{...}`` of the text, when it is valid JSON
  (today's answers with quoted coord tokens, or ``{"objects": []}``); otherwise CoordJSON in salvage
  mode, read once with each field order, the reading with more objects kept (a tie: geometry first).
  This is the reference's rule, so an answer mixing both orders keeps one order's records.

Each object then needs a geometry (its ``bbox_2d`` when it has one, as today's JSON answers may
also give a ``poly``), a ``bbox_2d`` of 4 bins or a ``poly`` of at least 6,
every element a bin 0..999; bins become pixels as ``x = round(v / 999 * (W - 1))`` and
``y = round(v / 999 * (H - 1))``, clamped to the image, and a box must have x1 < x2 and y1 < y2
(the reference's codes for the failures: ``bbox_points``, ``poly_points``, ``coord_range``,
``degenerate``). A polygon is scored by its bounding box. Descs are stripped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from coordexp.answers import (
    AnswerObject,
    ParsedAnswer,
    balanced_end,
    parse_answer,
    parse_coordjson,
    parse_json_answer,
)
from coordexp.coord_tokens.codec import COORD_BINS

MAX_BIN = COORD_BINS - 1  # 999: the bin that maps to the last pixel
MIN_POLY_POINTS = 6


@dataclass(frozen=True)
class DetObject:
    """One box in pixels, ``(x1, y1, x2, y2)`` inclusive corners as written, and its desc."""

    desc: str
    box: tuple[int, int, int, int]
    index: int  # the object's position in the parsed answer (for the confidence of its tokens)


@dataclass(frozen=True)
class ReadAnswer:
    """An answer's usable boxes, the parse they came from, and why the others were dropped."""

    objects: tuple[DetObject, ...]
    parsed: ParsedAnswer
    offset: int = 0  # where ``parsed.text`` starts in the answer (the JSON path parses a substring)
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def truncated(self) -> bool:
        return any(p.reason == "dropped_incomplete_tail" for p in self.parsed.problems)

    @property
    def invalid(self) -> bool:
        """No container was found at all."""
        return self.parsed.format is None


def to_pixels(bins: tuple[int, ...], width: int, height: int) -> tuple[int, ...]:
    """Bins 0..999 as pixels (x at even positions, y at odd ones)."""
    out = []
    for k, v in enumerate(bins):
        size = width if k % 2 == 0 else height
        out.append(min(max(round(v / MAX_BIN * (size - 1)), 0), size - 1))
    return tuple(out)


def _box(obj: AnswerObject, width: int, height: int) -> tuple[int, int, int, int] | str:
    """The object's pixel box, or the code of why it has none."""
    if not obj.geometries:
        return "geometry_count"
    # today's JSON answers may give a bbox_2d and a poly: the box is what is scored
    geometry = next((g for g in obj.geometries if g.kind == "bbox_2d"), obj.geometries[0])
    bins, kind = geometry.bins, geometry.kind
    if kind == "bbox_2d" and len(bins) != 4:
        return "bbox_points"
    if kind == "poly" and (len(bins) < MIN_POLY_POINTS or len(bins) % 2):
        return "poly_points"
    if any(b is None or not 0 <= b <= MAX_BIN for b in bins):
        return "coord_range"
    points = to_pixels(tuple(int(b) for b in bins if b is not None), width, height)
    if kind == "poly":
        xs, ys = points[0::2], points[1::2]
        points = (min(xs), min(ys), max(xs), max(ys))
    x1, y1, x2, y2 = points
    if x1 >= x2 or y1 >= y2:
        return "degenerate"
    return (x1, y1, x2, y2)


def _objects(parsed: ParsedAnswer, width: int, height: int) -> tuple[tuple[DetObject, ...], Counter[str]]:
    kept: list[DetObject] = []
    dropped: Counter[str] = Counter()
    for i, obj in enumerate(parsed.objects):
        box = _box(obj, width, height)
        if isinstance(box, str):
            dropped[box] += 1
        else:
            kept.append(DetObject((obj.desc or "").strip(), box, i))
    return tuple(kept), dropped


def read_prediction(text: str, width: int, height: int) -> ReadAnswer:
    """A generated answer's boxes (salvage reading: never raises)."""
    start = text.find("{")
    if start >= 0:
        end = balanced_end(text, start)
        if end is not None:
            as_json = parse_json_answer(text[start:end])
            if as_json.typed:
                objects, dropped = _objects(as_json, width, height)
                return ReadAnswer(objects, as_json, start, dropped)
    readings = [
        parse_coordjson(text, mode="salvage", field_order=o) for o in ("geometry_first", "desc_first")
    ]
    parsed = max(readings, key=lambda p: len(p.objects))  # max keeps the first on a tie
    objects, dropped = _objects(parsed, width, height)
    return ReadAnswer(objects, parsed, 0, dropped)


class GroundTruthError(ValueError):
    """A val row's answer cannot serve as ground truth (raised with the reason; the caller names the row)."""


def read_ground_truth(text: str, width: int, height: int) -> tuple[DetObject, ...]:
    """A val row's boxes; raises :class:`GroundTruthError` when its answer or an object is unusable."""
    parsed = parse_answer(text)
    if not parsed.typed:
        raise GroundTruthError(f"the answer does not parse: {parsed.problem}")
    objects, dropped = _objects(parsed, width, height)
    if dropped:
        code, _ = dropped.most_common(1)[0]
        raise GroundTruthError(f"{sum(dropped.values())} object(s) without a usable box ({code})")
    return objects
