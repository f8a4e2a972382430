"""Real ms-swift 4.6 Seq2SeqTrainer runs with the Stage-1 components (slow: seconds each)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.contracts import ContractViolation
from coordexp.generated import metric_keys as K
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS
from coordexp.launch import TrainConfig, build_trainer, train
from coordexp.run_folder.names import CONFIG_FILE

pytestmark = pytest.mark.slow


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines() if line.strip()]


def _keys(records: list[dict[str, Any]], eval_: bool) -> set[str]:
    marker = "eval_loss" if eval_ else "loss"
    return {k for r in records if marker in r for k in r}


def _check_logs(run_dir: Path) -> int:
    from coordexp.cli import check_logs

    return check_logs.main([str(run_dir)])


@pytest.mark.parametrize("layout", ["padded", "packing"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_real_run_passes_check_logs(
    layout: str, coord_on: bool, make_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    result = train(make_config(layout=layout, coord_on=coord_on))
    run_dir = result.output_dir
    assert (run_dir / CONFIG_FILE).is_file()
    records = _records(run_dir)
    train_keys, eval_keys = _keys(records, False), _keys(records, True)
    assert sum("eval_loss" in r for r in records) >= 2  # evaluated at least twice
    expected = {
        K.COORD_DIAG_LOSS,
        K.COORD_DIAG_W1,
        K.TEXT_TOKEN_ACC,
        K.TOKEN_ACC_TOP5,
        K.COORD_TOKEN_FRAC,
        K.DESC_TOKEN_ACC,
        K.COORD_MONITOR_FLIP_TEXT_TO_COORD,
        K.ACCUM_GRAD_STEPS,
    }
    if coord_on:
        expected |= {K.BASE_CE_LOSS, K.COORD_DIAG_CE, K.PACK_NUM_SAMPLES, K.STAGE1_TOTAL_LOSS_PER_SAMPLE_EST}
    else:
        assert not any(
            k.startswith("base_ce/") or k.startswith("eval_base_ce/") for k in train_keys | eval_keys
        )
    assert expected <= train_keys
    assert {f"eval_{k}" for k in expected} <= eval_keys
    for record in records:
        for key, value in record.items():
            if isinstance(value, float):
                assert math.isfinite(value), key
    capsys.readouterr()
    assert _check_logs(run_dir) == 0, capsys.readouterr().out


def test_logits_to_keep_is_on_and_types_stay_aligned(make_config: Callable[..., TrainConfig]) -> None:
    trainer = build_trainer(make_config(layout="padded", coord_on=True))
    trainer.train()
    assert trainer.args.use_logits_to_keep is True
    logged = {k for r in trainer.state.log_history for k in r}
    assert K.COORD_TOKEN_ACC in logged and K.FORMAT_TOKEN_FRAC in logged


def test_extras_never_reach_the_model(make_config: Callable[..., TrainConfig]) -> None:
    trainer = build_trainer(make_config(layout="padded"))
    seen: list[set[str]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(set(kwargs))

    trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.train()
    trainer.evaluate()
    assert seen
    assert all(not (keys & set(BATCH_EXTRAS_KEYS)) for keys in seen)
    assert all(not (keys & {"assistant_payload", "base_idx", "sample_id", "dataset"}) for keys in seen)


class RogueEnricher:
    """Declares an extra the contract does not know."""

    name = "rogue"
    emits = frozenset({"my_debug_extra"})
    optional = True

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        batch["my_debug_extra"] = 1


class SneakyEnricher(RogueEnricher):
    """Declares nothing, then writes an undeclared extra anyway."""

    name = "sneaky"
    emits = frozenset()


def test_strict_guard_refuses_an_undeclared_extra(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordexp.swift_seam.mixins import DatasetMetricsCollatorMixin

    monkeypatch.setattr(DatasetMetricsCollatorMixin, "stage1_extra_enrichers", (RogueEnricher(),))
    with pytest.raises(ContractViolation) as info:
        build_trainer(make_config(layout="padded"))  # the collator is wired in the constructor
    assert (info.value.key, info.value.rule) == ("my_debug_extra", "undeclared_extra")

    monkeypatch.setattr(DatasetMetricsCollatorMixin, "stage1_extra_enrichers", (SneakyEnricher(),))
    trainer = build_trainer(make_config(layout="padded"))
    with pytest.raises(ContractViolation) as info:
        trainer.train()
    assert (info.value.key, info.value.rule) == ("my_debug_extra", "undeclared_extra")


def test_a_raising_diagnostic_warns_once_and_the_run_finishes(
    make_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordexp.components.token_metrics import TokenMetricsComponent

    calls = {"n": 0}

    def broken(self: Any, ctx: Any) -> None:
        calls["n"] += 1
        raise ValueError("bug in a diagnostic")

    monkeypatch.setattr(TokenMetricsComponent, "report", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(make_config(layout="padded"))
    ours = [w for w in caught if "token_metrics" in str(w.message)]
    assert len(ours) == 1 and calls["n"] == 1
    keys = _keys(_records(result.output_dir), False)
    assert K.TEXT_TOKEN_ACC not in keys and K.COORD_DIAG_LOSS in keys


def test_forced_spike_writes_an_event_and_the_guard_zeroes_that_step(
    make_config: Callable[..., TrainConfig],
) -> None:
    cfg = make_config(
        layout="padded",
        training={"gradient_accumulation_steps": 1, "max_steps": 5},
        custom={"instability_monitor": {"enabled": True, "spike_factor": 2.0, "guard": {"enabled": True}}},
    )
    trainer = build_trainer(cfg)
    calls = {"n": 0}
    spike_call = 4  # a train forward after the EMA exists (evaluations in between also call forward)

    def blow_up(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        if module.training:
            calls["n"] += 1
            if calls["n"] == spike_call:
                output.logits = output.logits * 60.0
        return output

    trainer.model.register_forward_hook(blow_up, with_kwargs=True)
    before: dict[str, torch.Tensor] = {}

    class Snapshot:
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == spike_call - 1:
                before.update({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    from transformers import TrainerCallback

    trainer.add_callback(type("SnapshotCallback", (Snapshot, TrainerCallback), {})())
    trainer.train()
    events_path = Path(trainer.args.output_dir) / "instability_dumps" / "events.jsonl"
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    spikes = [e for e in events if "loss_spike" in e["reasons"]]
    assert spikes and spikes[0]["guard"] is True and spikes[0]["mode"] == "train"
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses[spike_call - 1] == 0.0  # the guarded step's loss is a (differentiable) zero
    assert all(v > 0 for i, v in enumerate(losses) if i != spike_call - 1)
