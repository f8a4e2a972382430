"""Pure decision rules of the instability monitor: reasons, the train-loss EMA, guard, early stop.

Everything here is a function of plain Python values and the typed settings, with no I/O and no
state, so each rule is testable on its own and the stateful ``InstabilityMonitor`` only threads
the EMA through.

EMA choices (documented because the spec leaves them open):
- The EMA follows the TRAIN loss only, one update per observed micro-batch; it is initialised by
  the first finite train loss, and a non-finite loss never enters it.
- The spike test compares a loss with the EMA of the PREVIOUS steps. Before any finite train loss
  has been seen there is no baseline, so the first train step is never a spike.
- A spike does enter the EMA, but clipped to ``max(spike_factor * EMA, abs_loss_threshold)``.
  Clipping bounds what one huge finite loss can do to the baseline (unclipped, a loss of 1e6 would
  blind the spike test for hundreds of steps); letting the clipped value in still lets the EMA
  follow a genuine level shift within a few steps, so the guard can never zero every step forever
  (which excluding spikes altogether would do after a lasting jump of the loss).
"""

from __future__ import annotations

import math
from dataclasses import replace

from coordexp.monitor.observation import (
    ALL_REASONS,
    LOGIT_OVERFLOW_LIKE,
    LOSS_SPIKE,
    LOW_TOKEN_ACC,
    NONFINITE_GROUP,
    NONFINITE_LOGITS,
    NONFINITE_LOSS,
    ZERO_TOKEN_ACC,
    StepObservation,
)
from coordexp.monitor.settings import GuardSettings, InstabilityMonitorSettings

__all__ = [
    "clean_observation",
    "detect_reasons",
    "is_loss_spike",
    "next_ema",
    "should_guard",
    "should_stop",
]


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def clean_observation(obs: StepObservation) -> StepObservation:
    """Return ``obs`` with every field as a plain Python value the rules can trust.

    Accepts numpy scalars and the like (anything ``float()``/``int()`` reads). A ``token_acc`` that
    is not finite, or that comes with no supervised token, is "not available" (``None``): an
    accuracy over nothing must not fire ``zero_token_acc``. Raises ``ValueError``/``TypeError`` for
    what cannot be read; the monitor turns that into a warning.
    """
    if obs.mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {obs.mode!r}")
    tokens = int(obs.supervised_tokens)
    acc = _opt_float(obs.token_acc)
    if acc is not None and (not math.isfinite(acc) or tokens <= 0):
        acc = None
    return replace(
        obs,
        global_step=int(obs.global_step),
        loss=float(obs.loss),
        epoch=_opt_float(obs.epoch),
        learning_rate=_opt_float(obs.learning_rate),
        supervised_tokens=tokens,
        token_acc=acc,
        max_abs_logit=float(obs.max_abs_logit),
        logits_finite=bool(obs.logits_finite),
    )


def is_loss_spike(loss: float, ema: float | None, settings: InstabilityMonitorSettings) -> bool:
    """``loss >= abs_loss_threshold`` and (``loss > spike_factor * ema`` or ``ema < threshold / 4``).

    False without a baseline (``ema is None``) and for a non-finite loss (that is
    ``nonfinite_loss``, not a spike).
    """
    if ema is None or not math.isfinite(loss) or loss < settings.abs_loss_threshold:
        return False
    return loss > settings.spike_factor * ema or ema < settings.abs_loss_threshold / 4


def detect_reasons(
    obs: StepObservation, ema: float | None, settings: InstabilityMonitorSettings
) -> tuple[str, ...]:
    """The reasons ``obs`` fires against the EMA of previous train steps, in ``ALL_REASONS`` order.

    ``nonfinite_logits`` also fires when ``max_abs_logit`` itself is NaN/inf;
    ``logit_overflow_like`` needs a finite ``max_abs_logit`` above the threshold (a non-finite one is
    already ``nonfinite_logits``).
    """
    fired: set[str] = set()
    if not math.isfinite(obs.loss):
        fired.add(NONFINITE_LOSS)
    if not obs.logits_finite or not math.isfinite(obs.max_abs_logit):
        fired.add(NONFINITE_LOGITS)
    elif obs.max_abs_logit > settings.guard.max_abs_logit:
        fired.add(LOGIT_OVERFLOW_LIKE)
    spike = obs.mode == "train" and is_loss_spike(obs.loss, ema, settings)
    if spike:
        fired.add(LOSS_SPIKE)
    acc = obs.token_acc
    if acc is not None:
        if obs.supervised_tokens >= settings.min_supervised_tokens and acc == 0.0:
            fired.add(ZERO_TOKEN_ACC)
        if spike and acc < settings.guard.min_token_acc:
            fired.add(LOW_TOKEN_ACC)
    return tuple(reason for reason in ALL_REASONS if reason in fired)


def next_ema(
    ema: float | None, obs: StepObservation, spiked: bool, settings: InstabilityMonitorSettings
) -> float | None:
    """The EMA after ``obs`` (see the module docstring for what enters it and how)."""
    if obs.mode != "train" or not math.isfinite(obs.loss):
        return ema
    if ema is None:
        return obs.loss
    value = obs.loss
    if spiked:
        value = min(value, max(settings.spike_factor * ema, settings.abs_loss_threshold))
    return settings.ema_decay * ema + (1.0 - settings.ema_decay) * value


def should_guard(reasons: tuple[str, ...], mode: str, guard: GuardSettings) -> bool:
    """Whether the caller must replace this step's loss by a differentiable zero.

    Needs ``guard.enabled`` and a train step (or an eval step with ``guard_in_eval``). The
    nonfinite group (``nonfinite_loss``, ``nonfinite_logits``, ``logit_overflow_like``) guards with
    ``guard_on_nonfinite``, ``loss_spike`` with ``guard_on_spike``, ``zero_token_acc`` with
    ``guard_on_zero_acc``. ``low_token_acc`` only fires together with ``loss_spike`` and has no
    switch of its own.
    """
    if not guard.enabled or not reasons or (mode != "train" and not guard.guard_in_eval):
        return False
    fired = set(reasons)
    return (
        (guard.guard_on_nonfinite and not fired.isdisjoint(NONFINITE_GROUP))
        or (guard.guard_on_spike and LOSS_SPIKE in fired)
        or (guard.guard_on_zero_acc and ZERO_TOKEN_ACC in fired)
    )


def should_stop(reasons: tuple[str, ...], settings: InstabilityMonitorSettings) -> bool:
    """Early stop: ``early_stop.enabled`` and a reason in ``on_reasons``, or ``early_stop_on_zero_acc``
    and ``zero_token_acc``. Applies to train and eval steps alike."""
    if settings.early_stop.enabled and not set(reasons).isdisjoint(settings.early_stop.on_reasons):
        return True
    return settings.early_stop_on_zero_acc and ZERO_TOKEN_ACC in reasons
