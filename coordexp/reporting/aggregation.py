"""Metric objects that combine a key's values as the catalog's ``aggregation`` declares.

ms-swift keeps one metric object per key in ``trainer.custom_metrics[mode]`` and, at each log, calls
``compute()`` (all-reducing across ranks) then ``reset()`` on every key, in sorted key order. These
objects speak that interface (``update`` / ``compute`` / ``reset``, like ``swift.metrics.MeanMetric``).
Their state is host floats (float64): ``update`` is plain arithmetic, never a device sync; the only
collective is one all-reduce per key in ``compute``, at log time, which every rank reaches because every
rank registers the same keys with the same kinds (``MetricReporter.register``).

``compute`` returns ``{"value": None}`` when no rank had data for the key in the window, and ms-swift
drops None values: a key without data is not logged (never logged as 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist

from coordexp.generated.metric_catalog import METRIC_SPECS, Aggregation

AggregationMode = Literal["exact", "per_step_mean"]


@dataclass(frozen=True, slots=True)
class Ratio:
    """One micro-step's contribution to a ratio key: its numerator and denominator statistics.

    Components write this (not ``num / den``) so that the window's value can be ``Σ num / Σ den``.
    ``observed=False``: the step lacks the key's batch condition (a per-sample key of a batch without
    coord targets) but its samples still belong in the window's denominator; such a step has no
    value of its own (``per_step_mean`` skips it) and alone does not make the key logged.
    """

    num: float
    den: float
    observed: bool = True

    @property
    def value(self) -> float:
        """The step's own ratio; NaN without a denominator (the metric guard refuses it)."""
        return self.num / self.den if self.den != 0 else math.nan


StepValue = float | Ratio
"""What a component writes for one key in one micro-step."""


def step_value(value: StepValue) -> float:
    """The micro-step's own value of a key (what ``per_step_mean`` averages)."""
    return value.value if isinstance(value, Ratio) else float(value)


def _reduce_device(device: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    if dist.get_backend() == "nccl":  # NCCL reduces device tensors only
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class WindowMetric:
    """Base: float64 host state over the logging window, reduced across ranks in ``compute``.

    Subclasses name their state fields (``FIELDS``, all 0 after ``reset``), the collective op and
    how the reduced state becomes the value.
    """

    FIELDS: ClassVar[tuple[str, ...]]
    OP: ClassVar[str] = "sum"
    kind: ClassVar[Aggregation]

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.state: list[float] = []
        self.reset()

    def reset(self) -> None:
        self.state = self._empty()

    def _empty(self) -> list[float]:
        return [0.0] * len(self.FIELDS)

    def update(self, value: StepValue) -> None:
        raise NotImplementedError

    def _value(self, reduced: list[float]) -> float | None:
        raise NotImplementedError

    def _reduced(self) -> list[float]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return list(self.state)
        tensor = torch.tensor(self.state, dtype=torch.float64, device=_reduce_device(self.device))
        op = dist.ReduceOp.MAX if self.OP == "max" else dist.ReduceOp.SUM
        dist.all_reduce(tensor, op=op)
        return [float(x) for x in tensor.tolist()]

    def compute(self) -> dict[str, float | None]:
        return {"value": self._value(self._reduced())}


class RatioMetric(WindowMetric):
    """``Σ numerator / Σ denominator`` over the micro-steps that wrote the key, on every rank;
    logged when at least one of them observed it."""

    FIELDS = ("num", "den", "steps")
    kind = "ratio"

    def update(self, value: StepValue) -> None:
        if not isinstance(value, Ratio):
            raise TypeError(f"a ratio key takes Ratio(num, den) per micro-step, got {type(value).__name__}")
        self.state[0] += value.num
        self.state[1] += value.den
        self.state[2] += 1.0 if value.observed else 0.0

    def _value(self, reduced: list[float]) -> float | None:
        num, den, steps = reduced
        return num / den if steps > 0 and den != 0 else None


class SumMetric(WindowMetric):
    """The sum of the per-micro-step counts over the window and ranks."""

    FIELDS = ("total", "steps")
    kind = "sum"

    def update(self, value: StepValue) -> None:
        self.state[0] += step_value(value)
        self.state[1] += 1.0

    def _value(self, reduced: list[float]) -> float | None:
        return reduced[0] if reduced[1] > 0 else None


class MeanMetric(WindowMetric):
    """A gauge: the mean of the per-micro-step values over the window and ranks."""

    FIELDS = ("total", "steps")
    kind = "mean"

    def update(self, value: StepValue) -> None:
        self.state[0] += step_value(value)
        self.state[1] += 1.0

    def _value(self, reduced: list[float]) -> float | None:
        return reduced[0] / reduced[1] if reduced[1] > 0 else None


class LastMetric(WindowMetric):
    """The last value of the window; across ranks, the mean of the ranks' last values (the keys
    declared ``last`` - learning rate, accumulation steps - are the same on every rank)."""

    FIELDS = ("last", "has")
    kind = "last"

    def update(self, value: StepValue) -> None:
        self.state = [step_value(value), 1.0]

    def _value(self, reduced: list[float]) -> float | None:
        return reduced[0] / reduced[1] if reduced[1] > 0 else None


class MaxMetric(WindowMetric):
    """The largest value of the window over all ranks."""

    FIELDS = ("max", "has")
    OP = "max"
    kind = "max"

    def _empty(self) -> list[float]:
        return [-math.inf, 0.0]

    def update(self, value: StepValue) -> None:
        self.state = [max(self.state[0], step_value(value)), 1.0]

    def _value(self, reduced: list[float]) -> float | None:
        return reduced[0] if reduced[1] > 0 else None


METRIC_BY_KIND: Mapping[Aggregation, Callable[[Any], WindowMetric]] = {
    "ratio": RatioMetric,
    "sum": SumMetric,
    "mean": MeanMetric,
    "last": LastMetric,
    "max": MaxMetric,
}


def metric_for(key: str, device: Any = None) -> WindowMetric:
    """The metric object that aggregates ``key`` as its catalog entry declares (a key outside the
    catalog, only written with the contract guards off, is a per-step gauge)."""
    spec = METRIC_SPECS.get(key)
    return METRIC_BY_KIND[spec.aggregation if spec is not None else "mean"](device)
