"""F1-ish: set matching of predicted to GT boxes at IoU thresholds, with and without the desc.

Per image with at least one GT object (images without GT are not scored here), at threshold tau:

1. Scope: ``annotated`` (default) keeps a prediction whose normalised desc equals one of the image's
   normalised GT descs; ``all`` keeps every prediction. Out-of-scope predictions are ignored (not
   false positives).
2. Matching, class-agnostic: every (prediction, GT) pair with IoU >= tau, sorted by IoU descending,
   then prediction index, then GT index; a pair is accepted when both are still free.
3. Counts: ``tp_loc`` = matches, ``fp_loc`` = in-scope predictions - matches, ``fn_loc`` = GT -
   matches; a match is semantically ok when the normalised descs are equal and non-empty;
   ``tp_full = sem_ok``, ``fp_full = fp_loc + sem_bad``, ``fn_full = fn_loc + sem_bad``.
4. ``p = tp / (tp + fp)`` (1 when the denominator is 0), ``r = tp / (tp + fn)`` (1 when 0),
   ``f1 = 2pr / (p + r)`` (0 when ``p + r = 0``); micro from the summed counts, macro the mean of the
   per-image values.

Desc matching is :mod:`coordexp.detection.descs`'s: exact after normalisation by default, or also by
embedding cosine with a local encoder (``semantic_model``). IoU is in pixels
with inclusive corners as written: ``(x2 - x1) * (y2 - y1)`` areas, as COCO's ``[x, y, w, h]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from coordexp.detection.descs import ExactDescs
from coordexp.detection.objects import DetObject

Scope = Literal["annotated", "all"]
F1ISH_NAMES = (
    "tp_loc",
    "fp_loc",
    "fn_loc",
    "pred_total",
    "pred_eval",
    "pred_ignored",
    "precision_loc_micro",
    "recall_loc_micro",
    "f1_loc_micro",
    "precision_loc_macro",
    "recall_loc_macro",
    "f1_loc_macro",
    "matched_sem_ok",
    "matched_sem_bad",
    "sem_acc_on_matched",
    "tp_full",
    "fp_full",
    "fn_full",
    "precision_full_micro",
    "recall_full_micro",
    "f1_full_micro",
    "precision_full_macro",
    "recall_full_macro",
    "f1_full_macro",
)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def match(pred: Sequence[DetObject], gt: Sequence[DetObject], tau: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matches ``(pred index, gt index)`` with IoU >= tau."""
    pairs = [
        (iou, i, j)
        for i, p in enumerate(pred)
        for j, g in enumerate(gt)
        if (iou := box_iou(p.box, g.box)) >= tau
    ]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            out.append((i, j))
    return out


def f1ish_image(
    pred: Sequence[DetObject], gt: Sequence[DetObject], tau: float, scope: Scope, descs: ExactDescs
) -> dict[str, int]:
    in_scope = [p for p in pred if scope == "all" or any(descs.same(p.desc, g.desc) for g in gt)]
    matches = match(in_scope, gt, tau)
    sem_ok = sum(1 for i, j in matches if descs.same(in_scope[i].desc, gt[j].desc))
    tp = len(matches)
    sem_bad = tp - sem_ok
    return {
        "tp_loc": tp,
        "fp_loc": len(in_scope) - tp,
        "fn_loc": len(gt) - tp,
        "pred_total": len(pred),
        "pred_eval": len(in_scope),
        "pred_ignored": len(pred) - len(in_scope),
        "matched_sem_ok": sem_ok,
        "matched_sem_bad": sem_bad,
        "tp_full": sem_ok,
        "fp_full": len(in_scope) - tp + sem_bad,
        "fn_full": len(gt) - tp + sem_bad,
    }


def f1ish_metrics(
    images: Sequence[tuple[Sequence[DetObject], Sequence[DetObject]]],
    tau: float,
    scope: Scope,
    descs: ExactDescs,
) -> dict[str, float]:
    """The 24 ``F1ISH_NAMES`` at ``tau`` over ``(pred, gt)`` pairs; images without GT are skipped."""
    per_image = [f1ish_image(p, g, tau, scope, descs) for p, g in images if g]
    total = {k: sum(img[k] for img in per_image) for k in per_image[0]} if per_image else {}
    out: dict[str, float] = {k: float(total.get(k, 0)) for k in F1ISH_NAMES if not _derived(k)}
    for kind in ("loc", "full"):
        p, r, f = prf(total.get(f"tp_{kind}", 0), total.get(f"fp_{kind}", 0), total.get(f"fn_{kind}", 0))
        out[f"precision_{kind}_micro"], out[f"recall_{kind}_micro"], out[f"f1_{kind}_micro"] = p, r, f
        macro = [prf(img[f"tp_{kind}"], img[f"fp_{kind}"], img[f"fn_{kind}"]) for img in per_image]
        for k, name in enumerate(("precision", "recall", "f1")):
            out[f"{name}_{kind}_macro"] = sum(m[k] for m in macro) / len(macro) if macro else 0.0
    tp = total.get("tp_loc", 0)
    out["sem_acc_on_matched"] = total.get("matched_sem_ok", 0) / tp if tp else 1.0
    return {k: out[k] for k in F1ISH_NAMES}


def _derived(name: str) -> bool:
    return name.startswith(("precision_", "recall_", "f1_")) or name == "sem_acc_on_matched"
