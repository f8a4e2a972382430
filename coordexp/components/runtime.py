"""Runtime keys: learning rate and gradient-accumulation steps (train and eval)."""

from __future__ import annotations

from typing import Any, ClassVar

from coordexp.components.base import BaseComponent
from coordexp.components.context import StepContext
from coordexp.generated import metric_keys as K


def current_learning_rate(trainer: Any) -> float | None:
    getter = getattr(trainer, "_get_learning_rate", None)
    if callable(getter) and getattr(trainer, "lr_scheduler", None) is not None:
        try:
            return float(getter())
        except Exception:  # before the scheduler exists HF raises; fall back to the configured LR
            pass
    scheduler = getattr(trainer, "lr_scheduler", None)
    if scheduler is not None and hasattr(scheduler, "get_last_lr"):
        return float(scheduler.get_last_lr()[0])
    value = getattr(getattr(trainer, "args", None), "learning_rate", None)
    return None if value is None else float(value)


def accumulation_steps(trainer: Any) -> tuple[int, int]:
    """(configured, current) accumulation steps; current is the size of this optimizer update (the
    last window of an epoch may be shorter)."""
    configured = int(getattr(getattr(trainer, "args", None), "gradient_accumulation_steps", 1) or 1)
    current = int(getattr(trainer, "current_gradient_accumulation_steps", configured) or configured)
    return configured, current


def current_accumulation_steps(trainer: Any) -> int:
    """The micro-batches of the current optimizer step."""
    return accumulation_steps(trainer)[1]


class RuntimeComponent(BaseComponent):
    name: ClassVar[str] = "runtime"
    feature: ClassVar[str] = "runtime"
    reads_logits: ClassVar[bool] = False

    def reports(self, ctx: StepContext) -> bool:
        return True  # learning rate and accumulation are known without any statistics

    def report(self, ctx: StepContext) -> None:
        lr = current_learning_rate(ctx.trainer)
        if lr is not None:
            ctx.metrics[K.LEARNING_RATE] = lr
        configured, current = accumulation_steps(ctx.trainer)
        ctx.metrics[K.ACCUM_GRAD_STEPS] = float(configured)
        ctx.metrics[K.ACCUM_CURRENT_GRAD_STEPS] = float(current)
