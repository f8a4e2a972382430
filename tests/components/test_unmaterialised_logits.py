"""``custom.stage1_pass.materialize_logits: false`` through the one-pass seam (stand-in ms-swift trainer):
the loss, every logged key and value, and the gradients of every parameter (the head weight and bias,
tied embeddings included) equal the materialised path, over the 2x2 feature matrix and both layouts;
the head's own forward is restored after every step; what the mode refuses, it refuses at start."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from coordexp.config import ConfigError
from coordexp.swift_seam.assembly import build_trainer_cls
from coordexp.swift_seam.loss_func import Stage1OptionError
from tests.components.stage1_fixtures import (
    BatchSpec,
    SwiftLikeTrainer,
    ToyLM,
    custom_with,
    make_batch,
    tokenizer,
)


class HeadLM(ToyLM):
    """The toy LM with HF's ``get_output_embeddings`` (optionally tied to the input embeddings)."""

    def __init__(self, vocab: int, *, tied: bool = False) -> None:
        super().__init__(vocab)
        if tied:
            self.head.weight = self.embed.weight

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def _custom(coord_on: bool, metrics: bool, materialize: bool) -> dict[str, Any]:
    custom = custom_with(coord_on)
    if not metrics:
        custom.pop("token_type_metrics")
        custom["instability_monitor"] = {"enabled": False}
    custom["stage1_pass"] = {"materialize_logits": materialize}
    return custom


def _step(
    custom: dict[str, Any], model: nn.Module, packed: bool, tmp_path: Path
) -> tuple[torch.Tensor, dict]:
    cls = build_trainer_cls(SwiftLikeTrainer, custom)
    trainer = cls(model, output_dir=str(tmp_path))
    loss, outputs = trainer.compute_loss(
        model, make_batch(BatchSpec(packed=packed, with_types=True)), return_outputs=True
    )
    # without materialised logits the outputs carry none (ms-swift then skips its token_acc)
    assert (outputs.logits is None) is (custom["stage1_pass"]["materialize_logits"] is False)
    loss.backward()
    return loss.detach(), trainer.logged()


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "no_metrics"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_equals_the_materialised_path(
    packed: bool, coord_on: bool, metrics: bool, tied: bool, tmp_path: Path
) -> None:
    if not coord_on and not metrics:
        # no Stage-1 feature reads the logits: the mode is refused (see below); coord diagnostics only
        custom_on = {"coord_soft_ce_w1": {"enabled": False}}
    else:
        custom_on = {}
    base = HeadLM(len(tokenizer()), tied=tied)
    results = []
    for materialize in (True, False):
        model = copy.deepcopy(base)
        custom = _custom(coord_on, metrics, materialize)
        custom.update(custom_on)
        loss, logged = _step(custom, model, packed, tmp_path)
        grads = {name: p.grad for name, p in model.named_parameters()}
        results.append((loss, logged, grads, model))
    (ref_loss, ref_logged, ref_grads, _), (loss, logged, grads, model) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert set(logged) == set(ref_logged)
    for key, values in ref_logged.items():
        assert logged[key] == pytest.approx(values, rel=1e-5, abs=1e-5), key
    for name, grad in ref_grads.items():
        assert grad is not None and grads[name] is not None, name
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert "forward" not in model.head.__dict__  # the head's own forward is back


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_grad_monitor_without_logits_equals_the_materialised_path(packed: bool, tmp_path: Path) -> None:
    """custom.grad_monitor with every term on: the gradmon/* values from the hidden-state pass equal
    those of the materialised logits (both are taken with respect to the logits)."""
    base = HeadLM(len(tokenizer()))
    results = []
    for materialize in (True, False):
        custom = _custom(True, True, materialize)
        custom["coord_soft_ce_w1"]["text_gate_weight"] = 0.2
        custom["bbox_geo"] = {"enabled": True, "smoothl1_weight": 0.5, "ciou_weight": 1.0}
        custom["grad_monitor"] = {"enabled": True, "interval": 1}
        loss, logged = _step(custom, copy.deepcopy(base), packed, tmp_path)
        results.append((loss, logged))
    (ref_loss, ref_logged), (loss, logged) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert set(logged) == set(ref_logged)
    gradmon = {key for key in ref_logged if key.startswith("gradmon/")}
    assert "gradmon/cos_to_total/bbox_geo" in gradmon and "gradmon/grad_norm/text_gate" in gradmon
    for key in gradmon:
        assert logged[key] == pytest.approx(ref_logged[key], rel=1e-5, abs=1e-6), key


def test_the_head_forward_is_restored_when_the_step_raises(tmp_path: Path) -> None:
    model = HeadLM(len(tokenizer()))
    cls = build_trainer_cls(SwiftLikeTrainer, _custom(True, True, False))
    trainer = cls(model, output_dir=str(tmp_path))
    batch = make_batch(BatchSpec(packed=True, with_types=True))
    batch["labels"] = batch["labels"][:, :-1]  # misaligned with the hidden states
    with pytest.raises(Exception, match="do not line up"):
        trainer.compute_loss(model, batch)
    assert "forward" not in model.head.__dict__


def _build(custom: dict[str, Any], tmp_path: Path, model: nn.Module | None = None, **args: Any) -> Any:
    cls = build_trainer_cls(SwiftLikeTrainer, custom)
    return cls(model or HeadLM(len(tokenizer())), output_dir=str(tmp_path), args=args)


@pytest.mark.parametrize(
    ("custom", "args", "message"),
    [
        ({"stage1_pass": {"materialize_logits": False}}, {}, "no Stage-1 feature reads the logits"),
        (_custom(True, True, False), {"fsdp": "full_shard"}, "with FSDP"),
        (_custom(False, True, False), {"acc_strategy": "seq"}, "training.acc_strategy=seq"),
    ],
)
def test_unsupported_combinations_are_refused_at_start(
    custom: dict[str, Any], args: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(Stage1OptionError, match=re.escape(message)) as info:
        _build(custom, tmp_path, **args)
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)
    assert "custom.stage1_pass.materialize_logits=false" in str(info.value)


def test_deepspeed_zero3_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    with pytest.raises(Stage1OptionError, match="DeepSpeed ZeRO-3"):
        _build(_custom(True, False, False), tmp_path)


def test_a_head_that_is_not_a_plain_linear_layer_is_refused_at_the_first_step(tmp_path: Path) -> None:
    model = ToyLM(len(tokenizer()))  # no get_output_embeddings
    trainer = _build(_custom(True, True, False), tmp_path, model)
    with pytest.raises(Stage1OptionError, match="get_output_embeddings"):
        trainer.compute_loss(model, make_batch(BatchSpec(packed=True, with_types=True)))


def test_the_default_materialises_the_logits(tmp_path: Path) -> None:
    assert _build(custom_with(True), tmp_path).stage1_pipeline().materialize_logits is True
