"""The instability monitor as a component: observe each step, record events, guard, early stop."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor

from coordexp.components.base import PassRequest
from coordexp.components.context import StepContext
from coordexp.components.runtime import current_learning_rate
from coordexp.config import InstabilityMonitorConfig
from coordexp.monitor import InstabilityMonitor, MonitorDecision, StepObservation


def is_main_process(trainer: Any) -> bool:
    check = getattr(trainer, "is_world_process_zero", None)
    if callable(check):
        try:
            return bool(check())
        except Exception:
            pass
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def differentiable_zero(model: Any, like: Tensor) -> Tensor:
    """A zero loss that still reaches every trainable parameter (DDP sees no unused parameters)
    but carries no gradient from the poisoned forward graph."""
    params = [p for p in getattr(model, "parameters", lambda: [])() if p.requires_grad]
    if not params or not torch.is_grad_enabled():
        return torch.zeros((), dtype=like.dtype, device=like.device)
    anchor = torch.stack([p.reshape(-1)[:1].sum().to(torch.float32) for p in params]).sum()
    return (anchor * 0.0).to(device=like.device, dtype=like.dtype)


class InstabilityMonitorComponent:
    name: ClassVar[str] = "instability_monitor"

    def __init__(self, cfg: InstabilityMonitorConfig, trainer: Any) -> None:
        self.cfg = cfg
        output_dir = getattr(getattr(trainer, "args", None), "output_dir", None) or "."
        self.monitor = InstabilityMonitor(
            cfg.model_dump(),
            output_dir=output_dir,
            is_main_process=is_main_process(trainer),
            source_files=getattr(trainer, "instability_source_files", None),
        )
        self.last_decision: MonitorDecision | None = None
        settings = self.monitor.settings
        self.can_stop = settings.early_stop.enabled or settings.early_stop_on_zero_acc
        self.stop_requested = False

    def pass_request(self, ctx: StepContext) -> PassRequest | None:
        return PassRequest()

    def report(self, ctx: StepContext) -> None:
        s = ctx.host
        state = getattr(ctx.trainer, "state", None)
        n_sup = int(s.get("n_sup", 0.0))
        obs = StepObservation(
            mode=ctx.mode,
            global_step=int(getattr(state, "global_step", 0) or 0),
            epoch=getattr(state, "epoch", None),
            loss=s["loss"],
            learning_rate=current_learning_rate(ctx.trainer),
            supervised_tokens=n_sup,
            token_acc=(s["n_top1"] / n_sup) if n_sup > 0 else None,
            max_abs_logit=s.get("max_abs_logit", 0.0),
            logits_finite=s.get("n_nonfinite_logits", 0.0) == 0.0,
            meta_json=ctx.extras.instability_meta_json,
        )
        decision = self.monitor.observe(obs)
        self.last_decision = decision
        if decision.guard and ctx.loss is not None:
            ctx.loss = differentiable_zero(ctx.model, ctx.loss)
        if decision.stop:
            self.stop_requested = True
            _set_stop_flags(ctx.trainer)

    def agree_on_stop(self, ctx: StepContext) -> None:
        """Make the ranks stop together: a stop seen by one rank only (its own bad batch) would
        leave the others waiting in their next collective for ever.

        Called by the pipeline once per ``compute_loss`` on EVERY rank, whatever the step's
        diagnostics did (never from ``report``, which may be skipped), and only when early stop is
        configured and the run is distributed: one MAX all-reduce of a one-element flag.
        """
        requested, self.stop_requested = self.stop_requested, False
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.can_stop and distributed):
            return
        device = ctx.loss.device if ctx.loss is not None else torch.device("cpu")
        flag = torch.tensor([1.0 if requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if float(flag[0]) > 0.0:
            _set_stop_flags(ctx.trainer)


def _set_stop_flags(trainer: Any) -> None:
    control = getattr(trainer, "control", None)
    if control is not None:
        control.should_training_stop = True
        control.should_epoch_stop = True
