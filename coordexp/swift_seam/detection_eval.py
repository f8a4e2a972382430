"""The detection evaluation at ms-swift's ``evaluate`` seam (``custom.eval_detection``).

:class:`DetectionEvalMixin` goes in front of the trainer when the section is enabled. At
construction it reads the evaluated val rows and their ground truth once (a bad row stops the run
there, ``file:line``, exit 2). Each ``evaluate()`` without its own dataset first runs the
evaluation (:class:`~coordexp.detection.evaluation.DetectionEvaluator`, every rank), writes its
``det_*`` values through a :class:`~coordexp.reporting.reporter.MetricReporter` into the eval
store, then runs the framework's evaluation: ms-swift's ``log`` adds the store to the eval record,
so the ``eval_det_*`` keys land in the same record as ``eval_loss`` (``logging.jsonl``,
TensorBoard, the dict ``evaluate`` returns, hence ``metric_for_best_model``), on every rank.
"""

from __future__ import annotations

from typing import Any, ClassVar

from coordexp.config import Stage1CustomConfig
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.generated.metric_catalog import EVAL_ONLY_KEYS
from coordexp.reporting.reporter import MetricReporter
from coordexp.rows.refused import DataError
from coordexp.swift_seam.trainer_sections import trainer_custom

__all__ = ["DetectionEvalMixin", "evaluated_rows_of"]


def evaluated_rows_of(dataset: Any) -> Any:
    """The lazy rows under an eval dataset (ms-swift's ``PackingDataset`` wraps them)."""
    rows = getattr(dataset, "dataset", dataset)
    if not hasattr(rows, "source"):
        raise DataError("custom.eval_detection: the eval dataset does not read rows from files (data.val)")
    return rows


class DetectionEvalMixin:
    """Runs ``custom.eval_detection`` before each evaluation's loss loop (see the module docstring)."""

    eval_detection_cfg: ClassVar[Any] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from coordexp.detection.evaluation import DetectionEvaluator, evaluation_rows

        trainer: Any = self
        cfg = trainer_custom(trainer).eval_detection
        self._coordexp_detection = None
        if cfg is None or not cfg.enabled or trainer.eval_dataset is None:
            return
        rows = evaluation_rows(evaluated_rows_of(trainer.eval_dataset), cfg.limit)
        self._coordexp_detection = DetectionEvaluator(cfg, rows, _output_dir(trainer))
        keys = keys_written_under(conditions_from_config(Stage1CustomConfig(eval_detection=cfg)))
        self._coordexp_detection_reporter = MetricReporter()
        self._coordexp_detection_reporter.register(trainer, keys & EVAL_ONLY_KEYS)

    def evaluate(self, eval_dataset: Any = None, *args: Any, **kwargs: Any) -> Any:
        evaluator = self._coordexp_detection
        trainer: Any = self
        if evaluator is not None and eval_dataset is None:
            model = trainer.accelerator.unwrap_model(trainer.model)
            values = evaluator.evaluate(model, trainer.template, int(trainer.state.global_step))
            self._coordexp_detection_reporter.write(trainer, "eval", values, ())
        return super().evaluate(eval_dataset, *args, **kwargs)  # type: ignore[misc]


def _output_dir(trainer: Any) -> Any:
    from pathlib import Path

    return Path(trainer.args.output_dir)
