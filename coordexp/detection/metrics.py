"""The ``det_*`` values of one evaluation slice (logged as ``eval_det_*``), from the val rows' ground
truth and the model's generated answers: pure, the same on every rank given the same samples.

Keys (after the ``eval_`` prefix, spelled as the reference spells them):

- hygiene: ``det_empty_pred`` (images with no surviving prediction, a correct empty answer too),
  ``det_parse_valid_rate`` = (images - empty_pred) / max(images, 1), and the share of answers that
  start (left-stripped) with ``{"objects"`` (``det_start_objects_wrapper_rate``), with ``{"desc"``
  (``det_start_bare_desc_rate``) or with a coord token (``det_start_coord_first_rate``); coordexp
  adds ``det_truncated_rate`` (answers whose last record never closed) and ``det_invalid_rate``
  (answers with no container at all);
- ``metrics: coco | both``: ``det_bbox_{AP, AP50, ..., ARl}`` (:mod:`coordexp.detection.coco`);
- ``metrics: f1ish | both``: ``det_f1ish@{tau:.2f}_{name}`` for each threshold and the 24 names of
  :mod:`coordexp.detection.f1ish`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from coordexp.detection.coco import COCO_STATS, ScoredImage, coco_metrics
from coordexp.detection.confidence import object_scores
from coordexp.detection.descs import ExactDescs, desc_matcher
from coordexp.detection.f1ish import F1ISH_NAMES, f1ish_metrics
from coordexp.detection.objects import DetObject, ReadAnswer, read_prediction
from coordexp.generated.metric_catalog import CONDITIONS
from coordexp.generated.models.config import EvalDetectionConfig

MetricsChoice = Literal["coco", "f1ish", "both"]
ScoreMode = Literal["constant", "coord_logprob"]
HYGIENE_NAMES = (
    "empty_pred",
    "parse_valid_rate",
    "start_objects_wrapper_rate",
    "start_bare_desc_rate",
    "start_coord_first_rate",
    "truncated_rate",
    "invalid_rate",
)
PREFIX = "det_"
_F1ISH_CONDITION = "det_f1ish@"
# The thresholds whose keys the catalog declares (one condition each): the only ones a config may ask.
F1ISH_THRESHOLDS: tuple[float, ...] = tuple(
    sorted(float(c.removeprefix(_F1ISH_CONDITION)) for c in CONDITIONS if c.startswith(_F1ISH_CONDITION))
)


def f1ish_condition(tau: float) -> str:
    return f"{_F1ISH_CONDITION}{tau:.2f}"


def iou_thresholds_error(thresholds: Sequence[float] | None) -> str | None:
    """Why ``iou_thrs`` cannot be used (a threshold outside [0, 1]), or None."""
    bad = [t for t in thresholds or () if not 0.0 <= t <= 1.0]
    return None if not bad else f"{bad[0]:g} is not an IoU threshold in [0, 1]"


def f1ish_threshold_error(thresholds: Sequence[float]) -> str | None:
    """Why ``f1ish_iou_thrs`` cannot be used (a threshold without declared keys), or None."""
    bad = [t for t in thresholds if round(t, 2) not in F1ISH_THRESHOLDS or round(t, 2) != t]
    if not bad:
        return None
    allowed = ", ".join(f"{t:g}" for t in F1ISH_THRESHOLDS)
    return f"{bad[0]:g} has no declared eval_det_f1ish keys; use thresholds among {allowed}"


def f1ish_key(tau: float, name: str) -> str:
    return f"{PREFIX}f1ish@{tau:.2f}_{name}"


def detection_keys(metrics: MetricsChoice, f1ish_iou_thrs: Sequence[float]) -> list[str]:
    """Every key a slice writes under these settings (what the catalog must declare)."""
    keys = [PREFIX + n for n in HYGIENE_NAMES]
    if metrics in ("coco", "both"):
        keys += [f"{PREFIX}bbox_{s}" for s in COCO_STATS]
    if metrics in ("f1ish", "both"):
        keys += [f1ish_key(t, n) for t in sorted(set(f1ish_iou_thrs)) for n in F1ISH_NAMES]
    return keys


@dataclass(frozen=True)
class EvalSample:
    """One val row's ground truth and the model's answer to it (with the generated tokens'
    character spans and log-probs when boxes are scored by them)."""

    gt: tuple[DetObject, ...]
    width: int
    height: int
    answer: str
    token_spans: tuple[tuple[int, int], ...] | None = None
    logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SliceResult:
    metrics: dict[str, float]
    answers: list[ReadAnswer]
    scores: list[list[float | None]]  # per answer, per kept object (None: unscorable, dropped)
    images: list[ScoredImage]  # what was scored: GT and the scored predictions
    dropped: Counter[str]


def _start(answer: str, prefix: str) -> bool:
    return answer.lstrip().startswith(prefix)


def score_boxes(
    read: ReadAnswer, sample: EvalSample, score_mode: ScoreMode, constant_score: float
) -> list[float | None]:
    if score_mode == "constant":
        return [constant_score] * len(read.objects)
    if sample.token_spans is None or sample.logprobs is None:
        raise ValueError("score_mode coord_logprob needs each answer's token spans and log-probs")
    return object_scores(read, sample.token_spans, sample.logprobs)


def detection_metrics(
    samples: Sequence[EvalSample], cfg: EvalDetectionConfig, descs: ExactDescs | None = None
) -> SliceResult:
    """The slice's ``det_*`` values (see the module docstring) and what each answer gave, under the
    ``custom.eval_detection`` settings ``cfg`` (metrics, scores, thresholds, scope); ``descs``: the
    desc matcher (built from ``cfg`` when not given; an evaluation builds it once)."""
    metrics = cfg.metrics
    descs = descs or desc_matcher(cfg.semantic_model, cfg.semantic_threshold)
    answers = [read_prediction(s.answer, s.width, s.height) for s in samples]
    dropped: Counter[str] = Counter()
    for read in answers:
        dropped.update(read.dropped)
    scores = [
        score_boxes(r, s, cfg.score_mode, cfg.constant_score) for r, s in zip(answers, samples, strict=True)
    ]
    images = [
        ScoredImage(
            s.width,
            s.height,
            s.gt,
            tuple(obj for obj, sc in zip(r.objects, row, strict=True) if sc is not None),
            tuple(float(sc) for sc in row if sc is not None),
        )
        for s, r, row in zip(samples, answers, scores, strict=True)
    ]
    dropped["unscorable"] += sum(sc is None for row in scores for sc in row)
    n = len(samples)
    empty = sum(not r.objects for r in answers)
    out: dict[str, float] = {
        "empty_pred": float(empty),
        "parse_valid_rate": (n - empty) / max(n, 1),
        "start_objects_wrapper_rate": sum(_start(s.answer, '{"objects"') for s in samples) / max(n, 1),
        "start_bare_desc_rate": sum(_start(s.answer, '{"desc"') for s in samples) / max(n, 1),
        "start_coord_first_rate": sum(_start(s.answer, "<|coord_") for s in samples) / max(n, 1),
        "truncated_rate": sum(r.truncated for r in answers) / max(n, 1),
        "invalid_rate": sum(r.invalid for r in answers) / max(n, 1),
    }
    values = {PREFIX + k: v for k, v in out.items()}
    if metrics in ("coco", "both"):
        coco, unknown = coco_metrics(images, cfg.iou_thrs, descs)
        dropped["unknown_dropped"] += unknown
        values.update({f"{PREFIX}bbox_{k}": v for k, v in coco.items()})
    if metrics in ("f1ish", "both"):
        pairs = [(image.pred, image.gt) for image in images]
        for tau in sorted(set(cfg.f1ish_iou_thrs)):
            values.update(
                {
                    f1ish_key(tau, k): v
                    for k, v in f1ish_metrics(pairs, tau, cfg.f1ish_pred_scope, descs).items()
                }
            )
    return SliceResult(values, answers, scores, images, dropped)
