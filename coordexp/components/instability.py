"""The instability monitor as a component: observe each step, record events, guard, early stop."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from coordexp.components.base import BaseComponent, PassRequest
from coordexp.components.context import StepContext
from coordexp.components.runtime import current_learning_rate
from coordexp.generated.models.config import InstabilityMonitorConfig
from coordexp.io.ranks import gather_to_all, rank_and_world
from coordexp.monitor import InstabilityMonitor, MonitorDecision, StepObservation


def is_main_process(trainer: Any) -> bool:
    check = getattr(trainer, "is_world_process_zero", None)
    if callable(check):
        try:
            return bool(check())
        except Exception:
            pass
    return rank_and_world()[0] == 0


def differentiable_zero(model: Any, like: Tensor) -> Tensor:
    """A zero loss that still reaches every trainable parameter (DDP sees no unused parameters)
    but carries no gradient from the poisoned forward graph."""
    params = [p for p in getattr(model, "parameters", lambda: [])() if p.requires_grad]
    if not params or not torch.is_grad_enabled():
        return torch.zeros((), dtype=like.dtype, device=like.device)
    anchor = torch.stack([p.reshape(-1)[:1].sum().to(torch.float32) for p in params]).sum()
    return (anchor * 0.0).to(device=like.device, dtype=like.dtype)


class InstabilityMonitorComponent(BaseComponent):
    name: ClassVar[str] = "instability_monitor"
    feature: ClassVar[str] = "instability_monitor"  # no catalog key: it guards the loss, stops training
    objective_conditions: ClassVar[frozenset[str]] = frozenset({"instability_monitor"})

    def __init__(self, cfg: InstabilityMonitorConfig, trainer: Any) -> None:
        self.cfg = cfg
        output_dir = getattr(getattr(trainer, "args", None), "output_dir", None) or "."
        self.monitor = InstabilityMonitor(
            cfg,  # the validated section model: the monitor reads its fields as they are
            output_dir=output_dir,
            is_main_process=is_main_process(trainer),
            source_files=getattr(trainer, "instability_source_files", None),
        )
        self.last_decision: MonitorDecision | None = None
        settings = self.monitor.settings
        self.can_stop = settings.early_stop.enabled or settings.early_stop_on_zero_acc
        self.stop_requested = False

    def state_callback(self) -> TrainerCallback:
        """The callback that keeps this monitor's state in the trainer's checkpoints."""
        link: dict[str, Any] = {"component": self}
        return type(MonitorStateCallback.__name__, (MonitorStateCallback,), link)()

    def pass_request(self, ctx: StepContext) -> PassRequest | None:
        return PassRequest()

    def after_loss(self, ctx: StepContext) -> None:
        if ctx.loss is not None:
            # the monitor compares per-batch losses: undo the seam's accumulation division
            ctx.device_values["loss"] = ctx.loss.detach().to(torch.float32) * ctx.loss_divisor

    def reports(self, ctx: StepContext) -> bool:
        return bool(ctx.stats) and "loss" in ctx.host

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

    def end_step(self, ctx: StepContext) -> None:
        self.agree_on_stop(ctx)

    def agree_on_stop(self, ctx: StepContext) -> None:
        """Make the ranks stop together: a stop seen by one rank only (its own bad batch) would
        leave the others waiting in their next collective for ever.

        Called by the pipeline (``end_step``) once per ``compute_loss`` on EVERY rank, whatever the step's
        diagnostics did (never from ``report``, which may be skipped), and only when early stop is
        configured and the run is distributed: one MAX all-reduce of a one-element flag.
        """
        requested, self.stop_requested = self.stop_requested, False
        distributed = rank_and_world()[1] > 1
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


class MonitorStateCallback(TrainerCallback, ExportableState):
    """Saves the monitor's state with every checkpoint and restores it when training resumes, so a
    resumed run judges its steps against the same EMA as an uninterrupted one.

    HF writes ``state()`` into each checkpoint's ``trainer_state.json`` (``stateful_callbacks``) and,
    on resume, loads that file as the ``TrainerState`` before ``on_train_begin``; there the state is
    read back. (HF's own restore, ``restore_callback_states_from_checkpoint``, is off by default and
    rebuilds the callback from its class: each monitor gets its own subclass, made by
    ``InstabilityMonitorComponent.state_callback``, so a rebuilt one still reaches its monitor and
    the ``monitor_state`` setter restores it.)

    Every rank has its own EMA (its own batches) but only the main process writes the checkpoint:
    on a step that saves, the ranks' states are gathered first (a collective on save steps only).
    """

    component: ClassVar[InstabilityMonitorComponent | None] = None

    def __init__(self) -> None:
        self._gathered: tuple[int, list[Any]] | None = None  # (global step, per-rank states)
        self._step = -1

    def _monitor(self) -> InstabilityMonitor:
        assert self.component is not None, "use InstabilityMonitorComponent.state_callback()"
        return self.component.monitor

    @property
    def monitor_state(self) -> dict[str, Any]:
        """``InstabilityMonitor.state_dict()`` of every rank, in rank order."""
        if self._gathered is not None and self._gathered[0] == self._step:
            return {"ranks": list(self._gathered[1])}
        return {"ranks": [self._monitor().state_dict()]}

    @monitor_state.setter
    def monitor_state(self, saved: Mapping[str, Any]) -> None:
        monitor = self._monitor()
        ranks = saved.get("ranks") if isinstance(saved, Mapping) else None
        if not isinstance(ranks, list) or not ranks:
            warnings.warn(
                f"coordexp: ignoring unreadable state of the instability monitor in the checkpoint "
                f"({saved!r:.200}); the EMA baseline starts afresh",
                RuntimeWarning,
                stacklevel=2,
            )
            monitor.load_state_dict({"ema": None})
            return
        rank, world = rank_and_world()
        if len(ranks) != world:
            warnings.warn(
                f"coordexp: the checkpoint holds the instability monitor state of {len(ranks)} "
                f"rank(s), this run has {world}; every rank resumes from rank 0's EMA",
                RuntimeWarning,
                stacklevel=2,
            )
            rank = 0
        monitor.load_state_dict(ranks[rank])

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"monitor_state": self.monitor_state}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step = state.global_step
        if state.global_step == 0:
            return  # a fresh run: nothing to restore
        saved = (getattr(state, "stateful_callbacks", None) or {}).get(type(self).__name__)
        if isinstance(saved, list):  # HF keeps a list when several callbacks share a name
            saved = saved[0] if saved else None
        if isinstance(saved, Mapping) and "monitor_state" in saved.get("attributes", {}):
            self.monitor_state = saved["attributes"]["monitor_state"]
        else:
            warnings.warn(
                f"coordexp: the checkpoint of step {state.global_step} holds no instability monitor "
                "state (saved without the monitor, or by an older coordexp); the EMA baseline starts "
                "afresh",
                RuntimeWarning,
                stacklevel=2,
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._gather_before_save(state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._gather_before_save(state, control)

    def _gather_before_save(self, state: Any, control: Any) -> None:
        # control.should_save is decided by the flow callback, which runs before this one.
        self._step = state.global_step
        if not control.should_save or rank_and_world()[1] < 2:
            return
        self._gathered = (state.global_step, gather_to_all(self._monitor().state_dict()))
