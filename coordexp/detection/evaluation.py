"""One detection evaluation of the live model (``custom.eval_detection``), the same on every rank.

At setup (:func:`evaluation_rows`) the first ``limit`` kept val rows are read once, in file order,
with their ground truth in pixels: a row whose answer cannot serve as ground truth stops the run
with ``file:line`` and the reason (exit 2). A row's image size is its first image's (read from the
header); a text-only row is measured on the 1000 x 1000 bin grid itself.

At each evaluation (:meth:`DetectionEvaluator.evaluate`): rank ``r`` of ``W`` generates the rows
whose position is ``r`` mod ``W``; the answers are gathered to every rank (``all_gather_object``),
so every rank scores the same slice and gets the same values (:func:`detection_metrics` is pure),
and ``metric_for_best_model`` can name any ``eval_det_*`` key on every rank. A generation error on
any rank stops every rank with one line naming the rank. Rank 0 writes the evaluation's files under
``<output_dir>/eval_detection/step_<7 digits>/``: the answers with their boxes and scores
(``predictions.jsonl``), the values (``metrics.json``) and the COCO json of both sides.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordexp.detection.coco import coco_json
from coordexp.detection.confidence import token_spans
from coordexp.detection.descs import desc_matcher
from coordexp.detection.generate import Generated, generate_answers
from coordexp.detection.metrics import EvalSample, SliceResult, detection_metrics
from coordexp.detection.objects import DetObject, GroundTruthError, read_ground_truth
from coordexp.generated.models.config import EvalDetectionConfig
from coordexp.io.ranks import gather_to_all, rank_and_world
from coordexp.rows.data import answer_texts
from coordexp.rows.refused import DataError, one_line
from coordexp.run_folder.names import (
    DET_COCO_GT_FILE,
    DET_COCO_PREDS_FILE,
    DET_METRICS_FILE,
    DET_PREDICTIONS_FILE,
    detection_eval_dir,
)

BIN_GRID = 1000  # a text-only row's "image": its boxes stay in bins


class DetectionEvalError(RuntimeError):
    """The evaluation could not run (generation or scoring failed); raised on every rank."""


@dataclass(frozen=True)
class EvalRow:
    where: str  # file:line
    row: dict[str, Any]  # as the file holds it, media paths absolute
    gt: tuple[DetObject, ...]
    width: int
    height: int


def _size(row: dict[str, Any]) -> tuple[int, int]:
    images = row.get("images")
    first = images[0] if isinstance(images, list) and images else images
    if not first:
        return BIN_GRID, BIN_GRID
    from coordexp.rows.image_lengths import image_size

    path = first.get("path") if isinstance(first, dict) else first
    return image_size(str(path))


def evaluation_rows(rows: Any, limit: int | None) -> list[EvalRow]:
    """The first ``limit`` rows of ``rows`` (a :class:`~coordexp.rows.lazy_rows.LazyRows`) with
    their ground truth; raises ``DataError`` naming ``file:line`` when one cannot serve."""
    count = len(rows) if limit is None else min(limit, len(rows))
    out = []
    for i in range(count):
        source_file, line, row = rows.source(i)
        where = f"{source_file}:{line}"
        texts = answer_texts(row)
        try:
            if not texts:
                raise GroundTruthError("no assistant answer")
            width, height = _size(row)
            gt = read_ground_truth(texts[-1], width, height)
        except (GroundTruthError, OSError, ValueError) as exc:
            raise DataError(f"{where}: custom.eval_detection ground truth: {one_line(str(exc))}") from None
        out.append(EvalRow(where, row, gt, width, height))
    return out


class DetectionEvaluator:
    """Generates, gathers, scores and writes one evaluation (see the module docstring)."""

    def __init__(self, cfg: EvalDetectionConfig, rows: Sequence[EvalRow], output_dir: Path) -> None:
        self.cfg = cfg
        self.rows = list(rows)
        self.descs = desc_matcher(cfg.semantic_model, cfg.semantic_threshold)  # the encoder loads once
        self.output_dir = output_dir

    def evaluate(self, model: Any, template: Any, global_step: int) -> dict[str, float]:
        rank, world = rank_and_world()
        mine = [(k, r.row) for k, r in enumerate(self.rows) if k % world == rank]
        error = None
        generated: list[Generated] = []
        try:
            generated = generate_answers(model, template, mine, self.cfg, progress=rank == 0)
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            error = f"rank {rank}: {type(exc).__name__}: {one_line(str(exc))}"
        parts: list[tuple[list[Generated], str | None]] = gather_to_all((generated, error))
        errors = [e for _, e in parts if e]
        if errors:
            raise DetectionEvalError(f"custom.eval_detection: generation failed on {errors[0]}")
        by_index = {g.index: g for part, _ in parts for g in part}
        answers = [by_index[k] for k in range(len(self.rows))]
        result = detection_metrics(
            [self._sample(r, a, template) for r, a in zip(self.rows, answers, strict=True)],
            self.cfg,
            self.descs,
        )
        if rank == 0:
            self._write(result, [a.text for a in answers], global_step)
        return result.metrics

    def _sample(self, row: EvalRow, answer: Generated, template: Any) -> EvalSample:
        spans = None
        if self.cfg.score_mode == "coord_logprob":
            decode = template.tokenizer.decode
            spans = tuple(
                token_spans(answer.token_ids, lambda ids: decode(list(ids), skip_special_tokens=False))
            )
        return EvalSample(row.gt, row.width, row.height, answer.text, spans, answer.logprobs)

    def _write(self, result: SliceResult, texts: Sequence[str], global_step: int) -> None:
        folder = detection_eval_dir(self.output_dir, global_step)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / DET_PREDICTIONS_FILE).open("w", encoding="utf-8") as handle:
            for row, text, read, scores in zip(self.rows, texts, result.answers, result.scores, strict=True):
                record = {
                    "source": row.where,
                    "answer": text,
                    "truncated": read.truncated,
                    "invalid": read.invalid,
                    "dropped": dict(read.dropped),
                    "gt": [{"desc": o.desc, "bbox": list(o.box)} for o in row.gt],
                    "pred": [
                        {"desc": o.desc, "bbox": list(o.box), "score": s}
                        for o, s in zip(read.objects, scores, strict=True)
                    ],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        summary = {
            "step": global_step,
            "rows": len(self.rows),
            "metrics": result.metrics,
            "dropped": dict(result.dropped),
        }
        (folder / DET_METRICS_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        gt, preds, _ = coco_json(result.images, self.descs)
        (folder / DET_COCO_GT_FILE).write_text(json.dumps(gt) + "\n", encoding="utf-8")
        (folder / DET_COCO_PREDS_FILE).write_text(json.dumps(preds) + "\n", encoding="utf-8")
