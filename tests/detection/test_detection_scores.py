"""Detection scores of generated answers (coordexp.detection): oracles, hand-built pycocotools runs,
the reference's worked F1-ish and parse examples, answer hygiene counts, the empty-GT image, and box
confidence from token log-probs."""

from __future__ import annotations

import contextlib
import io
import json
import math
from typing import Any

import pytest

from coordexp.config import EvalDetectionConfig
from coordexp.detection import (
    COCO_STATS,
    F1ISH_NAMES,
    EvalSample,
    detection_keys,
    detection_metrics,
    read_ground_truth,
    read_prediction,
)
from coordexp.detection.confidence import token_spans


def settings(**values: Any) -> EvalDetectionConfig:
    return EvalDetectionConfig.from_mapping({"enabled": True, **values})


W = H = 1000  # bins read as pixels: round(v / 999 * 999) = v
Box = tuple[int, int, int, int]


def answer(*objects: tuple[str, Box], geometry_first: bool = False) -> str:
    records = []
    for desc, box in objects:
        coords = ", ".join(f"<|coord_{v}|>" for v in box)
        if geometry_first:
            records.append(f'{{"bbox_2d": [{coords}], "desc": {json.dumps(desc)}}}')
        else:
            records.append(f'{{"desc": {json.dumps(desc)}, "bbox_2d": [{coords}]}}')
    return '{"objects": [' + ", ".join(records) + "]}"


def sample(gt: list[tuple[str, Box]], pred: str) -> EvalSample:
    return EvalSample(read_ground_truth(answer(*gt), W, H), W, H, pred)


GT_IMAGES = [
    [("cat", (10, 10, 300, 400)), ("dog", (400, 100, 900, 700))],
    [("cat", (50, 60, 250, 260))],
    [("person", (100, 100, 600, 900)), ("dog", (700, 700, 990, 990)), ("cat", (0, 0, 120, 150))],
]


def test_predictions_equal_to_the_ground_truth_score_one_everywhere() -> None:
    samples = [sample(gt, answer(*gt)) for gt in GT_IMAGES]
    result = detection_metrics(samples, settings(metrics="both"))
    m = result.metrics
    for stat in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert m[f"det_bbox_{stat}"] == pytest.approx(1.0), stat
    for tau in (0.3, 0.5):
        for name in F1ISH_NAMES:
            if name.startswith(("precision", "recall", "f1", "sem_acc")):
                assert m[f"det_f1ish@{tau:.2f}_{name}"] == 1.0, name
        assert m[f"det_f1ish@{tau:.2f}_fp_full"] == m[f"det_f1ish@{tau:.2f}_fn_full"] == 0
    assert m["det_empty_pred"] == 0 and m["det_parse_valid_rate"] == 1
    assert sorted(m) == sorted(detection_keys("both", (0.3, 0.5)))


def _pycocotools(gt: list[list[tuple[str, Box]]], preds: list[list[tuple[str, Box, float]]]) -> list[float]:
    """COCOeval on json built by hand from the same boxes: the expected values."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names: list[str] = []
    for image in gt:
        names += [d for d, _ in image if d not in names]
    cat = {n: i + 1 for i, n in enumerate(names)}
    anns, dets = [], []
    for img_id, image in enumerate(gt, start=1):
        for d, (x1, y1, x2, y2) in image:
            w, h = x2 - x1, y2 - y1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat[d],
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    for img_id, image in enumerate(preds, start=1):
        for d, (x1, y1, x2, y2), s in image:
            dets.append(
                {"image_id": img_id, "category_id": cat[d], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": [{"id": i + 1, "width": W, "height": H} for i in range(len(gt))],
            "annotations": anns,
            "categories": [{"id": i, "name": n} for n, i in cat.items()],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(x) for x in ev.stats]


def test_shifted_and_missing_boxes_give_what_pycocotools_gives() -> None:
    preds = [
        [("cat", (30, 20, 320, 410)), ("dog", (400, 300, 900, 700))],  # small shift; half the dog
        [],  # the cat missed
        [("person", (100, 100, 600, 900)), ("cat", (700, 700, 990, 990)), ("cat", (0, 0, 60, 150))],
    ]
    samples = [sample(gt, answer(*p)) for gt, p in zip(GT_IMAGES, preds, strict=True)]
    got = detection_metrics(samples, settings(metrics="coco")).metrics
    expected = _pycocotools(GT_IMAGES, [[(d, b, 1.0) for d, b in p] for p in preds])
    assert [got[f"det_bbox_{s}"] for s in COCO_STATS] == pytest.approx(expected)
    assert 0 < got["det_bbox_AP"] < 1 and got["det_empty_pred"] == 1


def test_the_reference_worked_f1ish_example() -> None:
    gt = [("cat", (0, 0, 100, 100)), ("dog", (200, 200, 300, 300))]
    pred = answer(("cat", (0, 0, 100, 80)), ("dog", (200, 200, 300, 240)), ("car", (500, 500, 600, 600)))
    m = detection_metrics([sample(gt, pred)], settings(metrics="f1ish", f1ish_iou_thrs=(0.5, 0.3))).metrics
    at5 = {n: m[f"det_f1ish@0.50_{n}"] for n in F1ISH_NAMES}
    assert (at5["tp_loc"], at5["fp_loc"], at5["fn_loc"]) == (1, 1, 1)
    assert at5["precision_loc_micro"] == at5["recall_loc_micro"] == at5["f1_loc_micro"] == 0.5
    assert (at5["pred_total"], at5["pred_eval"], at5["pred_ignored"]) == (3, 2, 1)
    assert m["det_f1ish@0.30_f1_loc_micro"] == m["det_f1ish@0.30_f1_full_micro"] == 1.0
    assert all(
        m[f"det_f1ish@0.50_{k}_full_micro"] == m[f"det_f1ish@0.50_{k}_loc_micro"]
        for k in ("precision", "recall", "f1")
    )


def test_a_right_box_with_the_wrong_desc_is_a_full_miss_not_a_localisation_miss() -> None:
    gt = [("cat", (0, 0, 100, 100))]
    m = detection_metrics([sample(gt, answer(("cat", (0, 0, 100, 100))))], settings(metrics="f1ish")).metrics
    assert m["det_f1ish@0.50_f1_full_micro"] == 1
    other = detection_metrics(
        [sample(gt, answer(("dog", (0, 0, 100, 100))))], settings(metrics="f1ish", f1ish_pred_scope="all")
    ).metrics
    assert other["det_f1ish@0.50_tp_loc"] == 1 and other["det_f1ish@0.50_matched_sem_bad"] == 1
    assert other["det_f1ish@0.50_tp_full"] == 0 and other["det_f1ish@0.50_sem_acc_on_matched"] == 0


def test_the_reference_worked_parse_keeps_the_order_with_more_records() -> None:
    text = (
        'Sure: {"objects": [{"desc": "cat", "bbox_2d": '
        "[<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}, "
        '{"bbox_2d": [<|coord_5|>, <|coord_6|>, <|coord_7|>, <|coord_8|>], "desc": "dog"}, '
        '{"desc": "cow", "bbox_2d": [<|coord_9|>, <|coord_1'
    )
    read = read_prediction(text, W, H)
    assert [(o.desc, o.box) for o in read.objects] == [("dog", (5, 6, 7, 8))]
    assert read.truncated and not read.invalid


def test_malformed_truncated_and_empty_answers_are_counted() -> None:
    gt = [("cat", (10, 10, 300, 400))]
    answers = [
        answer(*gt),  # fine
        "I see a cat.",  # no container: invalid, empty
        '{"objects": []}',  # a correct empty answer shape: empty, valid JSON
        answer(*gt)[:-12],  # cut inside the only record: truncated, empty
        answer(("cat", (300, 10, 10, 400))),  # x1 > x2
        answer(("cat", (10, 10, 300, 400)), ("dog", (5, 5, 5, 9))),  # one degenerate, one kept
    ]
    result = detection_metrics([sample(gt, a) for a in answers], settings(metrics="f1ish"))
    m = result.metrics
    assert m["det_empty_pred"] == 4
    assert m["det_parse_valid_rate"] == pytest.approx(2 / 6)
    assert m["det_invalid_rate"] == pytest.approx(1 / 6)
    assert m["det_truncated_rate"] == pytest.approx(1 / 6)
    assert m["det_start_objects_wrapper_rate"] == pytest.approx(5 / 6)
    assert result.dropped["degenerate"] == 2


def test_an_empty_gt_image_in_the_middle_changes_no_other_image() -> None:
    first, last = GT_IMAGES[0], GT_IMAGES[2]
    preds = [
        answer(("cat", (30, 20, 320, 410))),
        answer(("dog", (700, 700, 990, 990)), ("cat", (0, 0, 60, 150))),
    ]
    two = detection_metrics(
        [sample(first, preds[0]), sample(last, preds[1])], settings(metrics="both")
    ).metrics
    empty = EvalSample((), W, H, '{"objects": []}')
    three = detection_metrics(
        [sample(first, preds[0]), empty, sample(last, preds[1])], settings(metrics="both")
    ).metrics
    assert {k: v for k, v in three.items() if "bbox" in k or "f1ish" in k} == {
        k: v for k, v in two.items() if "bbox" in k or "f1ish" in k
    }


def test_coord_logprob_scores_equal_hand_computed_ones() -> None:
    # a character-level "tokenizer": each token is one piece of text
    pieces = [
        '{"objects": [{"desc": "',
        "ca",
        "t",
        '", "bbox_2d": [',
        "<|coord_10|>",
        ", ",
        "<|coord_20|>",
        ", ",
    ]
    pieces += ["<|coord_300|>", ", ", "<|coord_400|>", "]}]}"]
    text = "".join(pieces)
    lp = [-0.1, -0.5, -0.2, -0.05, -0.3, -0.01, -0.4, -0.01, -0.2, -0.01, -0.6, -0.02]
    spans = token_spans(list(range(len(pieces))), lambda ids: "".join(pieces[i] for i in ids))
    gt = read_ground_truth(text, W, H)
    s = EvalSample(gt, W, H, text, tuple(spans), tuple(lp))
    result = detection_metrics([s], settings(metrics="coco", score_mode="coord_logprob"))
    geom = math.exp((-0.3 - 0.4 - 0.2 - 0.6) / 4)
    desc = math.exp((-0.5 - 0.2) / 2)
    assert result.scores[0] == [pytest.approx(0.7 * geom + 0.3 * desc, rel=1e-12)]
    assert result.metrics["det_bbox_AP"] == pytest.approx(1.0)


def test_an_unscorable_box_is_dropped_not_a_false_positive() -> None:
    pieces = [
        '{"objects": [{"desc": "cat", "bbox_2d": [',
        "<|coord_10|>, <|coord_20|>, <|coord_300|>, <|coord_400|>",
        "]}]}",
    ]
    text = "".join(pieces)
    spans = token_spans([0, 1, 2], lambda ids: "".join(pieces[i] for i in ids))
    s = EvalSample(read_ground_truth(text, W, H), W, H, text, tuple(spans), (0.0, float("nan"), 0.0))
    result = detection_metrics([s], settings(metrics="f1ish", score_mode="coord_logprob"))
    assert result.scores == [[None]] and result.dropped["unscorable"] == 1
    assert result.metrics["det_f1ish@0.50_fp_loc"] == 0 and result.metrics["det_f1ish@0.50_fn_loc"] == 1
