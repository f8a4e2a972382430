"""COCO box AP / AR of an evaluation slice, by ``pycocotools``' ``COCOeval``.

Conventions (the reference's where it has one):

- Every evaluated image is an image of the COCO ground truth, ids 1..N in slice order, including
  images without ground-truth objects: a prediction on such an image is a false positive, and no
  image's pairing depends on another's (the reference skipped empty-GT images on the GT side only,
  which paired every later image with another image's predictions).
- Categories are the distinct GT descs (stripped, case-sensitive), numbered from 1 in order of first
  appearance. A prediction takes the category its desc names exactly (or, with a ``semantic_model``,
  the most similar one above the threshold: :mod:`coordexp.detection.descs`); a prediction whose
  desc names no category is dropped and counted (``unknown_dropped``), not a false positive.
- A GT box ``(x1, y1, x2, y2)`` becomes ``bbox [x1, y1, x2 - x1, y2 - y1]``, ``area = w * h``,
  ``iscrowd 0``; predictions alike, with their score.
- ``COCOeval(iouType="bbox")`` with its defaults (IoU 0.50:0.05:0.95, or ``iou_thrs``; 101 recall
  points; maxDets 1, 10, 100; areas all / small / medium / large), then ``stats[0..11]`` are
  AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl. ``-1`` where nothing is
  evaluable (no small GT box, an IoU threshold list without 0.5). No GT object or no scored
  prediction in the whole slice: every value 0.0.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

from coordexp.detection.descs import ExactDescs
from coordexp.detection.objects import DetObject

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class ScoredImage:
    """One evaluated image: its size, GT boxes, and predicted boxes with their scores."""

    width: int
    height: int
    gt: tuple[DetObject, ...]
    pred: tuple[DetObject, ...]
    scores: tuple[float, ...]


def categories(images: Sequence[ScoredImage]) -> dict[str, int]:
    """GT desc -> category id, from 1, in order of first appearance."""
    ids: dict[str, int] = {}
    for image in images:
        for obj in image.gt:
            ids.setdefault(obj.desc, len(ids) + 1)
    return ids


def _xywh(box: tuple[int, int, int, int]) -> list[float]:
    x1, y1, x2, y2 = box
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def coco_json(
    images: Sequence[ScoredImage], descs: ExactDescs
) -> tuple[dict[str, object], list[dict[str, object]], int]:
    """The COCO ground-truth dict, the result list, and how many predictions named no category."""
    cats = categories(images)
    names = list(cats)
    gt_images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    results: list[dict[str, object]] = []
    unknown = 0
    for image_id, image in enumerate(images, start=1):
        gt_images.append({"id": image_id, "width": image.width, "height": image.height})
        for obj in image.gt:
            bbox = _xywh(obj.box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cats[obj.desc],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
        for obj, score in zip(image.pred, image.scores, strict=True):
            name = descs.category(obj.desc, names)
            if name is None:
                unknown += 1
                continue
            results.append(
                {"image_id": image_id, "category_id": cats[name], "bbox": _xywh(obj.box), "score": score}
            )
    gt: dict[str, object] = {
        "images": gt_images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for name, i in cats.items()],
    }
    return gt, results, unknown


def coco_metrics(
    images: Sequence[ScoredImage], iou_thrs: Sequence[float] | None, descs: ExactDescs
) -> tuple[dict[str, float], int]:
    """``{AP: ..., AR100: ...}`` (the 12 ``COCO_STATS``) and the count of ``unknown_dropped``."""
    gt, results, unknown = coco_json(images, descs)
    if not gt["annotations"] or not results:
        return dict.fromkeys(COCO_STATS, 0.0), unknown
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # pycocotools prints its progress and tables
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if iou_thrs is not None:
            evaluator.params.iouThrs = np.array(sorted(iou_thrs), dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STATS, evaluator.stats, strict=True)}, unknown
