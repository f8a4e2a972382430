"""The only writer into ms-swift's ``custom_metrics``, and the best-effort runner of diagnostics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from coordexp.contracts import ContractViolation, check_metric_key
from coordexp.generated.models.config import MetricsConfig
from coordexp.reporting.aggregation import AggregationMode, Ratio, StepValue, WindowMetric, metric_for

logger = logging.getLogger("coordexp")
Mode = Literal["train", "eval"]
T = TypeVar("T")
DEFAULT_AGGREGATION: AggregationMode = MetricsConfig().aggregation  # custom.metrics.aggregation's default


def trainer_mode(model: Any) -> Mode:
    """``train`` iff the model is in training mode (ms-swift's own rule)."""
    return "train" if bool(getattr(model, "training", False)) else "eval"


class MetricReporter:
    """Writes a step's metric values into ``trainer.custom_metrics[mode]``.

    Every write passes :func:`coordexp.contracts.check_metric_key` with the step's dataset labels:
    in ``strict`` mode a bad key raises, in ``warn`` mode it is dropped with one warning. Values are
    host floats (ONE device->host transfer per step happens before this), so no update ever syncs.

    ``aggregation`` (``custom.metrics.aggregation``): ``exact`` feeds the metric objects of
    :mod:`coordexp.reporting.aggregation` that :meth:`register` installed, so each key combines as
    its catalog entry declares (a ratio takes the step's numerator and denominator);
    ``per_step_mean`` writes each step's own value into the store's default metric (ms-swift's
    ``MeanMetric``): the unweighted mean of per-step values that runs logged before the option.
    """

    def __init__(self, mode: str | None = None, aggregation: AggregationMode = DEFAULT_AGGREGATION) -> None:
        self.mode = mode
        self.aggregation: AggregationMode = aggregation
        self._keys: tuple[str, ...] | None = None  # what register() was asked to install
        self._store: Any = None  # the store they are installed in
        self._device: Any = None

    def register(self, trainer: Any, keys: Iterable[str]) -> None:
        """Install, before any step, one metric object per key in the train and eval stores.

        Every rank calls this with the same keys (from the config), so every rank holds the same
        keys with the same kinds even when a key gets no update on some rank: ms-swift then
        reduces them in the same order, with the same collective, on every rank. A trainer whose
        store does not exist yet gets them at its first write.
        """
        if self.aggregation != "exact":
            return
        self._keys = tuple(sorted(keys))
        self._install(trainer)

    def _install(self, trainer: Any) -> None:
        store = getattr(trainer, "custom_metrics", None)
        if store is None or self._keys is None or store is self._store:
            return
        self._store = store
        self._device = getattr(getattr(trainer, "args", None), "device", None)
        for mode in ("train", "eval"):
            for key in self._keys:
                store[mode][key] = metric_for(key, self._device)

    def _window_metric(self, metrics: Any, key: str) -> WindowMetric:
        current = metrics.get(key)
        if not isinstance(current, WindowMetric):  # a store cleared since register()
            metrics[key] = current = metric_for(key, self._device)
        return current

    def write(
        self, trainer: Any, mode: Mode, values: Mapping[str, StepValue], dataset_labels: Iterable[str]
    ) -> int:
        store = getattr(trainer, "custom_metrics", None)
        if store is None:
            return 0
        self._install(trainer)
        labels = tuple(dataset_labels)
        written = 0
        for key, value in values.items():
            shown = value.value if isinstance(value, Ratio) else value
            if not check_metric_key(key, shown, dataset_labels=labels, mode=self.mode):
                continue
            if store is self._store:
                self._window_metric(store[mode], key).update(value)
            elif isinstance(value, Ratio) and not value.observed:
                continue  # a denominator-only contribution has no per-step value
            else:
                store[mode][key].update(float(shown))
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
