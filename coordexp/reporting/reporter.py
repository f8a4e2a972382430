"""The only writer into ms-swift's ``custom_metrics``, and the best-effort runner of diagnostics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from coordexp.contracts import ContractViolation, check_metric_key

logger = logging.getLogger("coordexp")
Mode = Literal["train", "eval"]
T = TypeVar("T")


def trainer_mode(model: Any) -> Mode:
    """``train`` iff the model is in training mode (ms-swift's own rule)."""
    return "train" if bool(getattr(model, "training", False)) else "eval"


class MetricReporter:
    """Writes a step's metric values into ``trainer.custom_metrics[mode]``.

    Every write passes :func:`coordexp.contracts.check_metric_key` with the step's dataset labels:
    in ``strict`` mode a bad key raises, in ``warn`` mode it is dropped with one warning. Values are
    host floats (ONE device->host transfer per step happens before this), so ``MeanMetric.update``
    never syncs.
    """

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode

    def write(
        self, trainer: Any, mode: Mode, values: Mapping[str, float], dataset_labels: Iterable[str]
    ) -> int:
        store = getattr(trainer, "custom_metrics", None)
        if store is None:
            return 0
        labels = tuple(dataset_labels)
        written = 0
        for key, value in values.items():
            if check_metric_key(key, value, dataset_labels=labels, mode=self.mode):
                store[mode][key].update(float(value))
                written += 1
        return written


class BestEffort:
    """Runs diagnostics so that they never block training.

    An unexpected exception warns once for that diagnostic and disables it for the rest of the run.
    Contract violations are not swallowed: in ``strict`` mode they are meant to stop the run.
    """

    def __init__(self) -> None:
        self.disabled: set[str] = set()

    def enabled(self, name: str) -> bool:
        return name not in self.disabled

    def run(self, name: str, fn: Callable[[], T]) -> T | None:
        if name in self.disabled:
            return None
        try:
            return fn()
        except ContractViolation:
            raise
        except Exception as exc:  # diagnostics are best-effort by contract
            self.disabled.add(name)
            logger.warning(
                "coordexp: diagnostic %r failed and is disabled for the rest of the run: %s: %s",
                name,
                type(exc).__name__,
                exc,
            )
            import warnings

            warnings.warn(
                f"coordexp diagnostic {name!r} failed ({type(exc).__name__}: {exc}); it is disabled "
                "for the rest of the run",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
