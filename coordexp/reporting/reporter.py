"""The only writer into ms-swift's ``custom_metrics``, and the best-effort runner of diagnostics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from coordexp.contracts import check_metric_key
from coordexp.contracts.modes import Mode
from coordexp.generated.models.config import MetricsConfig
from coordexp.reporting.aggregation import AggregationMode, Ratio, StepValue, WindowMetric, metric_for

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
