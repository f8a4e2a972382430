"""Detection quality of generated answers: boxes from answers, COCO AP, F1-ish set matching and box
confidence from token log-probs; pure functions the evaluation during training builds on."""

from coordexp.detection.coco import COCO_STATS, ScoredImage, coco_metrics
from coordexp.detection.descs import normalize_desc
from coordexp.detection.f1ish import F1ISH_NAMES, f1ish_metrics
from coordexp.detection.metrics import EvalSample, SliceResult, detection_keys, detection_metrics
from coordexp.detection.objects import DetObject, GroundTruthError, read_ground_truth, read_prediction

__all__ = [
    "COCO_STATS",
    "F1ISH_NAMES",
    "DetObject",
    "EvalSample",
    "GroundTruthError",
    "ScoredImage",
    "SliceResult",
    "coco_metrics",
    "detection_keys",
    "detection_metrics",
    "f1ish_metrics",
    "normalize_desc",
    "read_ground_truth",
    "read_prediction",
]
