"""Installing the one-pass ``compute_loss_func`` seam, and what it refuses (fast, stand-in trainers)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from coordexp.config import ConfigError
from coordexp.swift_seam.assembly import build_trainer_cls
from coordexp.swift_seam.loss_func import Stage1LossFunc, Stage1OptionError, refuse_unsupported_options
from coordexp.swift_seam.mixins import GradAccumLossScaleMixin
from tests.components.stage1_fixtures import SwiftLikeTrainer, ToyLM, custom_with, tokenizer


def _trainer(custom: dict, tmp_path: Path, **args: object) -> SwiftLikeTrainer:
    cls = build_trainer_cls(SwiftLikeTrainer, custom)
    return cls(ToyLM(len(tokenizer())), output_dir=str(tmp_path), args=args)


def test_every_stage1_feature_that_reads_logits_installs_the_seam(tmp_path: Path) -> None:
    for custom in (
        custom_with(True),
        custom_with(False),
        {"token_type_metrics": {"enabled": True}},
        {"instability_monitor": {"enabled": True}},
        {"coord_soft_ce_w1": {"enabled": False}},
    ):
        assert isinstance(_trainer(custom, tmp_path).compute_loss_func, Stage1LossFunc), custom


def test_runtime_keys_alone_keep_the_models_own_loss(tmp_path: Path) -> None:
    cls = type("RuntimeOnly", (GradAccumLossScaleMixin, SwiftLikeTrainer), {})
    trainer = cls(ToyLM(len(tokenizer())), output_dir=str(tmp_path))
    assert trainer.compute_loss_func is None
    assert _trainer({}, tmp_path).compute_loss_func is None


def test_options_are_refused_only_with_the_seam(tmp_path: Path) -> None:
    with pytest.raises(Stage1OptionError, match=re.escape("training.loss_type='cross_entropy'")) as info:
        _trainer(custom_with(False), tmp_path, loss_type="cross_entropy")
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)
    # no Stage-1 feature reads the logits: ms-swift's own loss options are its business
    assert _trainer({}, tmp_path, loss_type="cross_entropy").compute_loss_func is None


@pytest.mark.parametrize(
    ("template", "refused"),
    [
        (SimpleNamespace(is_binary_loss_scale=False, _loss_scale="react"), True),
        (
            SimpleNamespace(
                is_binary_loss_scale=None, loss_scale=SimpleNamespace(is_binary_loss_scale=False)
            ),
            True,
        ),
        (
            SimpleNamespace(is_binary_loss_scale=None, loss_scale=SimpleNamespace(is_binary_loss_scale=True)),
            False,
        ),
        (SimpleNamespace(is_binary_loss_scale=True), False),
        (SimpleNamespace(), False),
    ],
)
def test_non_binary_loss_scale_is_refused(template: object, refused: bool) -> None:
    args = SimpleNamespace()
    if refused:
        with pytest.raises(Stage1OptionError, match="loss_scale"):
            refuse_unsupported_options(args, template)
    else:
        refuse_unsupported_options(args, template)


def test_a_loss_scale_tensor_reaching_the_loss_is_refused(tmp_path: Path) -> None:
    trainer = _trainer(custom_with(False), tmp_path)
    outputs = SimpleNamespace(logits=torch.zeros(1, 3, 8))
    with pytest.raises(Stage1OptionError, match="loss_scale"):
        trainer.compute_loss_func(outputs, torch.zeros(1, 3, dtype=torch.long), loss_scale=torch.ones(1, 3))


def test_the_seam_outside_compute_loss_is_an_error(tmp_path: Path) -> None:
    trainer = _trainer(custom_with(False), tmp_path)
    outputs = SimpleNamespace(logits=torch.zeros(1, 3, 8))
    with pytest.raises(RuntimeError, match="outside the Stage-1 compute_loss"):
        trainer.compute_loss_func(outputs, torch.zeros(1, 3, dtype=torch.long))
