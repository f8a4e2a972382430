"""Reasons, EMA, guard and early stop: the decision logic of section 7."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.monitor import (
    ALL_REASONS,
    LOGIT_OVERFLOW_LIKE,
    LOSS_SPIKE,
    LOW_TOKEN_ACC,
    NONFINITE_LOGITS,
    NONFINITE_LOSS,
    ZERO_TOKEN_ACC,
    InstabilityMonitor,
    StepObservation,
    normalize_monitor_config,
)
from coordexp.monitor.rules import next_ema

ObsFactory = Callable[..., StepObservation]
NAN, INF = float("nan"), float("inf")


def _warmed(monitor: InstabilityMonitor, obs: ObsFactory, loss: float = 1.0) -> InstabilityMonitor:
    """Give the monitor an EMA baseline of ``loss``."""
    monitor.observe(obs(loss=loss))
    assert monitor.ema == loss
    return monitor


def test_healthy_step_fires_nothing(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = _warmed(monitor_factory(), make_obs)
    decision = monitor.observe(make_obs(loss=1.1))
    assert decision.reasons == () and not decision.guard and not decision.stop
    assert not monitor.events_path.exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"loss": NAN}, (NONFINITE_LOSS,)),
        ({"loss": INF}, (NONFINITE_LOSS,)),
        ({"loss": -INF}, (NONFINITE_LOSS,)),
        ({"logits_finite": False}, (NONFINITE_LOGITS,)),
        ({"max_abs_logit": NAN}, (NONFINITE_LOGITS,)),
        ({"max_abs_logit": INF}, (NONFINITE_LOGITS,)),  # non-finite is not "overflow-like"
        ({"max_abs_logit": 200.5}, (LOGIT_OVERFLOW_LIKE,)),
        ({"max_abs_logit": 200.0}, ()),  # strictly greater than the threshold
        ({"loss": 8.5}, (LOSS_SPIKE,)),  # > 8 * EMA(1.0)
        ({"loss": 8.0}, ()),  # not strictly greater
        ({"loss": 8.5, "token_acc": 0.005}, (LOSS_SPIKE, LOW_TOKEN_ACC)),
        ({"loss": 8.5, "token_acc": 0.0}, (LOSS_SPIKE, ZERO_TOKEN_ACC, LOW_TOKEN_ACC)),
        ({"token_acc": 0.0}, (ZERO_TOKEN_ACC,)),
        ({"token_acc": 0.0, "supervised_tokens": 63}, ()),  # below min_supervised_tokens
        ({"token_acc": 0.0, "supervised_tokens": 0}, ()),  # an accuracy over nothing
        ({"token_acc": 0.005}, ()),  # low acc without a spike is not a reason
        ({"token_acc": NAN}, ()),
        ({"loss": NAN, "logits_finite": False, "max_abs_logit": INF}, (NONFINITE_LOSS, NONFINITE_LOGITS)),
    ],
)
def test_each_reason(
    monitor_factory: Any, make_obs: ObsFactory, overrides: dict[str, Any], expected: tuple[str, ...]
) -> None:
    monitor = _warmed(monitor_factory(), make_obs)
    assert monitor.observe(make_obs(global_step=2, **overrides)).reasons == expected


def test_reasons_keep_the_canonical_order() -> None:
    assert ALL_REASONS == (
        "nonfinite_loss",
        "nonfinite_logits",
        "logit_overflow_like",
        "loss_spike",
        "zero_token_acc",
        "low_token_acc",
    )


def test_threshold_and_low_ema_branch(monitor_factory: Any, make_obs: ObsFactory) -> None:
    # EMA below threshold / 4 (0.05): any loss >= threshold (0.2) is a spike, even < 8 * EMA.
    monitor = _warmed(monitor_factory(), make_obs, loss=0.04)
    assert monitor.observe(make_obs(loss=0.2)).reasons == (LOSS_SPIKE,)
    monitor = _warmed(monitor_factory(), make_obs, loss=0.04)
    assert monitor.observe(make_obs(loss=0.19)).reasons == ()  # below abs_loss_threshold
    # 8x the EMA but under the absolute threshold: not a spike.
    monitor = _warmed(monitor_factory({"abs_loss_threshold": 0.2}), make_obs, loss=0.01)
    assert monitor.observe(make_obs(loss=0.15)).reasons == ()


def test_first_train_step_is_never_a_spike(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = monitor_factory()
    assert monitor.observe(make_obs(loss=1e6)).reasons == ()
    assert monitor.ema == 1e6


def test_spike_only_in_train(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = _warmed(monitor_factory(), make_obs)
    assert monitor.observe(make_obs(mode="eval", loss=100.0, token_acc=0.001)).reasons == ()
    assert monitor.ema == 1.0  # eval never moves the train EMA
    assert monitor.observe(make_obs(mode="train", loss=100.0)).reasons == (LOSS_SPIKE,)


def test_ema_maths(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = monitor_factory({"ema_decay": 0.9})
    assert monitor.ema is None
    monitor.observe(make_obs(loss=NAN))  # a non-finite loss never initialises or enters the EMA
    assert monitor.ema is None
    monitor.observe(make_obs(loss=2.0))
    assert monitor.ema == 2.0
    monitor.observe(make_obs(loss=1.0))
    assert monitor.ema == pytest.approx(0.9 * 2.0 + 0.1 * 1.0)
    before = monitor.ema
    monitor.observe(make_obs(loss=INF))
    monitor.observe(make_obs(mode="eval", loss=5.0))
    assert monitor.ema == before


def test_spike_enters_the_ema_clipped(monitor_factory: Any, make_obs: ObsFactory) -> None:
    monitor = _warmed(monitor_factory({"ema_decay": 0.9}), make_obs, loss=1.0)
    assert monitor.observe(make_obs(loss=1e6)).reasons == (LOSS_SPIKE,)
    assert monitor.ema == pytest.approx(0.9 * 1.0 + 0.1 * 8.0)  # clipped to spike_factor * EMA


def test_lasting_level_shift_stops_spiking(monitor_factory: Any, make_obs: ObsFactory) -> None:
    """With the guard on spikes, a genuine jump of the loss must not be zeroed forever."""
    monitor = _warmed(monitor_factory({"guard": {"enabled": True}}), make_obs, loss=0.03)
    guarded = [monitor.observe(make_obs(loss=0.5)).guard for _ in range(200)]
    assert guarded[0] and not guarded[-1]
    assert sum(guarded) < 50


@settings(max_examples=60, deadline=None)
@given(
    losses=st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=1, max_size=30),
    decay=st.floats(min_value=0.0, max_value=0.999),
)
def test_ema_matches_the_recurrence_without_spikes(losses: list[float], decay: float) -> None:
    cfg = normalize_monitor_config({"ema_decay": decay, "abs_loss_threshold": 1e9})  # no spikes
    ema: float | None = None
    expected: float | None = None
    for loss in losses:
        obs = StepObservation(mode="train", global_step=0, loss=loss)
        ema = next_ema(ema, obs, False, cfg)
        expected = loss if expected is None else decay * expected + (1 - decay) * loss
        assert ema is not None and math.isclose(ema, expected, rel_tol=1e-12, abs_tol=1e-12)
        assert min(losses) - 1e-9 <= ema <= max(losses) + 1e-9


GUARD_ON = {"enabled": True}


@pytest.mark.parametrize(
    ("guard_cfg", "mode", "overrides", "expected"),
    [
        ({}, "train", {"loss": NAN}, False),  # guard disabled
        (GUARD_ON, "train", {"loss": NAN}, True),
        (GUARD_ON, "train", {"logits_finite": False}, True),
        (GUARD_ON, "train", {"max_abs_logit": 1e3}, True),  # overflow-like counts with non-finite
        ({**GUARD_ON, "guard_on_nonfinite": False}, "train", {"loss": NAN}, False),
        ({**GUARD_ON, "guard_on_nonfinite": False}, "train", {"max_abs_logit": 1e3}, False),
        (GUARD_ON, "train", {"loss": 50.0}, True),  # spike
        ({**GUARD_ON, "guard_on_spike": False}, "train", {"loss": 50.0}, False),
        ({**GUARD_ON, "guard_on_spike": False}, "train", {"loss": 50.0, "token_acc": 0.001}, False),
        (GUARD_ON, "train", {"token_acc": 0.0}, False),  # guard_on_zero_acc defaults to false
        ({**GUARD_ON, "guard_on_zero_acc": True}, "train", {"token_acc": 0.0}, True),
        (GUARD_ON, "eval", {"loss": NAN}, False),  # eval needs guard_in_eval
        ({**GUARD_ON, "guard_in_eval": True}, "eval", {"loss": NAN}, True),
        ({**GUARD_ON, "guard_in_eval": True, "guard_on_zero_acc": True}, "eval", {"token_acc": 0.0}, True),
    ],
)
def test_guard(
    monitor_factory: Any,
    make_obs: ObsFactory,
    guard_cfg: dict[str, Any],
    mode: str,
    overrides: dict[str, Any],
    expected: bool,
) -> None:
    monitor = _warmed(monitor_factory({"guard": guard_cfg}), make_obs)
    decision = monitor.observe(make_obs(mode=mode, **overrides))
    assert decision.reasons
    assert decision.guard is expected


@pytest.mark.parametrize(
    ("cfg", "overrides", "expected"),
    [
        ({}, {"loss": NAN}, False),  # early stop disabled by default
        ({"early_stop": {"enabled": True}}, {"loss": NAN}, True),
        ({"early_stop": {"enabled": True}}, {"logits_finite": False}, True),
        ({"early_stop": {"enabled": True}}, {"loss": 50.0}, False),  # spike not in default on_reasons
        ({"early_stop": {"enabled": True, "on_reasons": ["loss_spike"]}}, {"loss": 50.0}, True),
        ({"early_stop": {"enabled": False, "on_reasons": ["loss_spike"]}}, {"loss": 50.0}, False),
        ({"early_stop_on_zero_acc": True}, {"token_acc": 0.0}, True),
        ({"early_stop_on_zero_acc": True}, {"token_acc": 0.0, "mode": "eval"}, True),
        ({"early_stop_on_zero_acc": False}, {"token_acc": 0.0}, False),
    ],
)
def test_early_stop(
    monitor_factory: Any,
    make_obs: ObsFactory,
    cfg: dict[str, Any],
    overrides: dict[str, Any],
    expected: bool,
) -> None:
    monitor = _warmed(monitor_factory(cfg), make_obs)
    decision = monitor.observe(make_obs(**overrides))
    assert decision.reasons
    assert decision.stop is expected


def test_state_dict_round_trip(monitor_factory: Any, make_obs: ObsFactory) -> None:
    first = _warmed(monitor_factory(), make_obs, loss=0.7)
    resumed = monitor_factory()
    resumed.load_state_dict(first.state_dict())
    assert resumed.ema == 0.7
    assert resumed.observe(make_obs(loss=6.0)).reasons == (LOSS_SPIKE,)  # baseline survived
    resumed.load_state_dict({"ema": "not a number"})  # warns, never raises
