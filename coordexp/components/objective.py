"""The step's objective: the one place where "is the coord loss on" changes what a step does.

:func:`objective_for` picks it once, when the pipeline is built: :class:`CoordObjective` when
``custom.coord_soft_ce_w1.enabled`` (base CE over the non-coord targets + coord terms, fail fast),
else :class:`CrossEntropyObjective` (the model's CE over every target; the statistics pass is
best-effort diagnostics). The pipeline calls the same phases on either:

- ``before_forward`` - the two-pass coord loss masks the coord targets the model sees;
- ``two_pass`` - after the model's own forward and CE: the statistics (and the coord terms);
- ``fused`` - the one-pass seam: the whole objective and every statistic from one pass;
- ``finish`` - the step's loss is final: accumulation scaling where the objective owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from coordexp.components.base import PassRequest
from coordexp.components.context import StepContext
from coordexp.components.coord_loss import CoordLossComponent, CoordObjectiveError
from coordexp.components.pass_inputs import PassInputs
from coordexp.diagnostics.best_effort import BestEffort
from coordexp.functional import CoordSlice, ce_loss, stage1_stats
from coordexp.functional.linear_pass import OutputHead, linear_ce_loss

__all__ = [
    "CoordObjective",
    "CoordSliceFn",
    "CrossEntropyObjective",
    "Fused",
    "Objective",
    "SeamCall",
    "objective_for",
]

CoordSliceFn = Callable[[torch.device], CoordSlice | None]
Fused = tuple[Tensor, dict[str, Tensor], bool]
"""(loss, statistics, whether the loss is a per-batch mean) of the one-pass seam"""
COORD = CoordLossComponent.name


@dataclass(frozen=True)
class SeamCall:
    """What the one-pass seam adds to a step: the output head whose logits are computed chunk by chunk
    (``materialize_logits: false``; None otherwise), the buffer for each row's argmax, and the
    ``num_items_in_batch`` the seam was called with."""

    head: OutputHead | None
    preds: Tensor | None
    num_items_in_batch: Any


class Objective(Protocol):
    """What the step optimises, phase by phase (see the module docstring)."""

    strict: bool
    """the objective depends on the statistics pass: missing or misaligned logits raise"""

    def before_forward(self, ctx: StepContext, coord_slice: CoordSliceFn, one_pass: bool) -> None: ...

    def missing_inputs(self, missing: str) -> None:
        """Two-pass path: the batch has no labels or the model returned no logits."""

    def two_pass(
        self, ctx: StepContext, inputs: PassInputs, request: PassRequest
    ) -> dict[str, Tensor] | None: ...

    def fused(self, ctx: StepContext, inputs: PassInputs, request: PassRequest, seam: SeamCall) -> Fused:
        """(loss, statistics, whether the loss is a per-batch mean the pipeline still divides by the
        accumulation steps in training)."""
        ...

    def finish(self, ctx: StepContext) -> None: ...


class CoordObjective:
    """The enabled coord loss (see :mod:`coordexp.components.coord_loss`)."""

    strict = True

    def __init__(self, coord: CoordLossComponent) -> None:
        self.coord = coord

    def before_forward(self, ctx: StepContext, coord_slice: CoordSliceFn, one_pass: bool) -> None:
        # The vocab size is only known from the logits; ids are validated again after the forward.
        # Both raise when the batch has no labels (before the forward, with a clear message).
        coord = coord_slice(ctx.labels.device) if ctx.labels is not None else None
        if one_pass:
            self.coord.require(ctx, coord)
        else:
            self.coord.prepare(ctx, coord)

    def missing_inputs(self, missing: str) -> None:
        raise CoordObjectiveError(f"custom.coord_soft_ce_w1.enabled is true but {missing}")

    def two_pass(self, ctx: StepContext, inputs: PassInputs, request: PassRequest) -> dict[str, Tensor]:
        assert ctx.loss is not None
        ctx.device_values["base_loss"] = ctx.loss.detach().to(torch.float32)  # the model's CE
        try:
            return self.coord.add_coord_loss(ctx, inputs)
        except CoordObjectiveError:
            raise
        except Exception as exc:
            raise CoordObjectiveError(
                f"custom.coord_soft_ce_w1: the enabled coord loss failed ({type(exc).__name__}: {exc}); "
                "refusing to train on without it"
            ) from exc

    def fused(self, ctx: StepContext, inputs: PassInputs, request: PassRequest, seam: SeamCall) -> Fused:
        value, stats = self.coord.fused_loss(ctx, inputs, head=seam.head, preds=seam.preds)
        return value, stats, True

    def finish(self, ctx: StepContext) -> None:
        self.coord.scale_for_accumulation(ctx)


class CrossEntropyObjective:
    """The model's CE over every supervised target; the pass computes best-effort diagnostics
    (the coord ones unless the coord component is disabled: no usable coord vocabulary)."""

    strict = False

    def __init__(self, best_effort: BestEffort) -> None:
        self.best_effort = best_effort

    def before_forward(self, ctx: StepContext, coord_slice: CoordSliceFn, one_pass: bool) -> None:
        return None

    def missing_inputs(self, missing: str) -> None:
        return None  # nothing to diagnose this step

    def two_pass(
        self, ctx: StepContext, inputs: PassInputs, request: PassRequest
    ) -> dict[str, Tensor] | None:
        diagnose_coord = self.best_effort.enabled(COORD) and inputs.coord is not None
        coord_cfg = request.coord_cfg if diagnose_coord else None

        def diagnostics() -> dict[str, Tensor]:
            with torch.no_grad():
                return stage1_stats(
                    inputs.logits.detach(),
                    inputs.targets,
                    coord=inputs.coord,
                    types=inputs.types,
                    coord_cfg=coord_cfg,
                    **inputs.options,
                )

        return self.best_effort.run("stage1_statistics", diagnostics)

    def fused(self, ctx: StepContext, inputs: PassInputs, request: PassRequest, seam: SeamCall) -> Fused:
        """``Σ CE / num_items_in_batch`` exactly as ms-swift + transformers compute it when the model
        accepts loss kwargs (the accumulation window's count in training, the batch's in eval), else
        the batch mean (per batch: the pipeline divides it by the accumulation steps)."""
        accepts = bool(getattr(ctx.trainer, "model_accepts_loss_kwargs", False))
        count = seam.num_items_in_batch if accepts else None
        options: dict[str, Any] = dict(
            denominator=count,
            coord=inputs.coord,
            coord_cfg=request.coord_cfg if self.best_effort.enabled(COORD) else None,
            types=inputs.types,
            **inputs.options,
        )
        if seam.head is None:
            value, stats = ce_loss(inputs.logits, inputs.targets, **options)
        else:
            value, stats = linear_ce_loss(
                inputs.logits, seam.head, inputs.targets, preds=seam.preds, **options
            )
        return value, stats, count is None

    def finish(self, ctx: StepContext) -> None:
        return None  # the Trainer (or the seam's per-batch division) already scaled the loss


def objective_for(coord: CoordLossComponent | None, best_effort: BestEffort) -> Objective:
    """THE branch on the coord loss: the objective of a pipeline with this coord component."""
    if coord is not None and coord.enabled:
        return CoordObjective(coord)
    return CrossEntropyObjective(best_effort)
