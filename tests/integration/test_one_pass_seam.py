"""The one-pass ``compute_loss_func`` seam on a real ms-swift 4.6 ``Seq2SeqTrainer`` (tiny demo Qwen3).

For every layout (padded: ``logits_to_keep`` an int; padding_free and packing: a bool mask) and the
2x2 feature matrix (coord loss on/off x token types present/absent), one accumulation window of two
micro-batches through ``training_step`` (forward, loss, backward) must give the same losses, parameter
gradients and logged values with the seam as with the two-pass path (the same trainer with
``compute_loss_func`` unset), and, with the coord loss off, the same loss and gradients as plain
ms-swift SFT (no Stage-1 at all). Also: labels never reach the model, eval, refused options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS, TOKEN_TYPES_KEY
from coordexp.launch import TrainConfig, build_trainer
from coordexp.swift_seam.loss_func import Stage1LossFunc, Stage1OptionError

pytestmark = pytest.mark.slow

LAYOUTS = ["padded", "padding_free", "packing"]
RTOL = 1e-5


def _window(trainer: Any) -> tuple[list[dict[str, Any]], Any]:
    """The first accumulation window (two micro-batches) and its ``num_items_in_batch``, as the
    Trainer's loop builds them."""
    batches, num_items = trainer.get_batch_samples(
        iter(trainer.get_train_dataloader()), 2, trainer.args.device
    )
    return batches, num_items


def _run_window(
    trainer: Any, batches: list[dict[str, Any]], num_items: Any, *, drop: tuple[str, ...] = ()
) -> tuple[list[float], dict[str, torch.Tensor], dict[str, float]]:
    """``training_step`` over the window: per-micro-batch losses, accumulated gradients, logged means."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    for metrics in trainer.custom_metrics.values():
        metrics.clear()
    trainer.current_gradient_accumulation_steps = len(batches)
    losses = []
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k not in drop}
        losses.append(float(trainer.training_step(model, inputs, num_items)))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    logged = {k: float(m.compute()["value"]) for k, m in trainer.custom_metrics["train"].items()}
    return losses, grads, logged


def _assert_same(
    got: tuple[Any, ...], want: tuple[Any, ...], *, logged: bool = True, ignore: frozenset[str] = frozenset()
) -> None:
    (g_losses, g_grads, g_logged), (w_losses, w_grads, w_logged) = got, want
    torch.testing.assert_close(torch.tensor(g_losses), torch.tensor(w_losses), rtol=RTOL, atol=1e-6)
    assert set(g_grads) == set(w_grads) and g_grads
    for name, grad in g_grads.items():
        torch.testing.assert_close(grad, w_grads[name], rtol=RTOL, atol=1e-6, msg=name)
    if logged:
        assert set(g_logged) == set(w_logged)
        for key, value in g_logged.items():
            if key in ignore:
                continue
            assert value == pytest.approx(w_logged[key], rel=1e-4, abs=1e-5), key


@pytest.fixture
def seam_trainer(make_config: Callable[..., TrainConfig]) -> Iterator[Callable[..., Any]]:
    def build(layout: str, coord_on: bool, **kwargs: Any) -> Any:
        torch.manual_seed(0)
        trainer = build_trainer(make_config(layout=layout, coord_on=coord_on, **kwargs))
        assert isinstance(trainer.compute_loss_func, Stage1LossFunc)
        return trainer

    yield build


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_one_pass_equals_two_pass_for_the_matrix(
    layout: str, coord_on: bool, seam_trainer: Callable[..., Any]
) -> None:
    trainer = seam_trainer(layout, coord_on)
    batches, num_items = _window(trainer)
    assert all(TOKEN_TYPES_KEY in b for b in batches)
    seen: list[set[str]] = []
    trainer.model.register_forward_pre_hook(lambda m, a, kw: seen.append(set(kw)), with_kwargs=True)
    for drop in ((), (TOKEN_TYPES_KEY,)):  # types present / absent
        trainer.compute_loss_func = Stage1LossFunc(trainer)
        one_pass = _run_window(trainer, batches, num_items, drop=drop)
        assert seen and all("labels" not in keys for keys in seen)  # logits only: no HF loss
        seen.clear()
        trainer.compute_loss_func = None
        two_pass = _run_window(trainer, batches, num_items, drop=drop)
        assert all("labels" in keys for keys in seen)
        seen.clear()
        # ms-swift's own token_acc still runs on the logits; under the coord loss the two-pass path fed
        # it the coord-masked labels, the seam gives it the original ones (every supervised target)
        _assert_same(one_pass, two_pass, ignore=frozenset({"token_acc"}) if coord_on else frozenset())
        assert "token_acc" in one_pass[2]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_metrics_only_base_ce_equals_plain_ms_swift(layout: str, seam_trainer: Callable[..., Any]) -> None:
    """Coord loss off: the loss and gradients are ms-swift + transformers' own CE (num_items_in_batch
    over the window, accumulation scaling once), to 1e-5 in fp32."""
    from swift import Seq2SeqTrainer

    trainer = seam_trainer(layout, False)
    batches, num_items = _window(trainer)
    one_pass = _run_window(trainer, batches, num_items)
    plain = Seq2SeqTrainer(
        model=trainer.model, args=trainer.args, template=trainer.template, train_dataset=trainer.train_dataset
    )
    assert plain.compute_loss_func is None
    reference = _run_window(plain, batches, num_items, drop=tuple(BATCH_EXTRAS_KEYS))
    _assert_same(one_pass, reference, logged=False)
    assert one_pass[2]["token_acc"] == pytest.approx(reference[2]["token_acc"], rel=1e-6)


def test_per_batch_mean_is_divided_by_the_accumulation_steps_once(seam_trainer: Callable[..., Any]) -> None:
    """A model that does not accept loss kwargs: transformers would pass no count and divide the mean by
    the accumulation steps; with ``compute_loss_func`` set it never divides, so the seam does, once."""
    trainer = seam_trainer("padded", False)
    batches, num_items = _window(trainer)
    with_count = _run_window(trainer, batches, num_items)
    trainer.model_accepts_loss_kwargs = False
    trainer.compute_loss_func = None  # the two-pass path: HF's mean, divided by transformers
    two_pass = _run_window(trainer, batches, None)
    trainer.compute_loss_func = Stage1LossFunc(trainer)
    one_pass = _run_window(trainer, batches, num_items)
    _assert_same(one_pass, two_pass)
    assert with_count[0] != pytest.approx(one_pass[0], rel=1e-6)  # the two normalisations differ


def test_eval_uses_the_seam_and_logs_eval_keys(
    seam_trainer: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordexp.components.pipeline import Stage1Pipeline

    trainer = seam_trainer("packing", True)
    modes: list[bool] = []
    original = Stage1Pipeline.fused_loss

    def counting(self: Any, owner: Any, *args: Any) -> Any:
        modes.append(owner.model.training)
        return original(self, owner, *args)

    monkeypatch.setattr(Stage1Pipeline, "fused_loss", counting)
    trainer.train()
    metrics = trainer.evaluate()
    assert True in modes and False in modes  # train and eval steps both went through the seam
    assert metrics["eval_loss"] > 0 and "eval_base_ce/loss" in metrics and "eval_token_acc" in metrics


@pytest.mark.parametrize(
    ("training", "option"),
    [
        ({"loss_type": "cross_entropy"}, "training.loss_type"),
        ({"label_smoothing_factor": 0.1}, "training.label_smoothing_factor"),
        ({"enable_dft_loss": True}, "training.enable_dft_loss"),
        ({"enable_channel_loss": True}, "training.enable_channel_loss"),
    ],
)
def test_objective_changing_options_are_refused_at_start(
    training: dict[str, Any], option: str, make_config: Callable[..., TrainConfig]
) -> None:
    with pytest.raises(Stage1OptionError, match=option) as info:
        build_trainer(make_config(layout="padded", coord_on=False, training=training))
    assert "\n" not in str(info.value)


def _moe_checkpoint(folder: Path) -> Path:
    """A tiny Qwen3-MoE (4 experts, 2 per token) next to the demo tokenizer."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from coordexp.demo.tokenizer import build_demo_tokenizer

    tok = build_demo_tokenizer(folder)
    config = Qwen3MoeConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        architectures=["Qwen3MoeForCausalLM"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen3MoeForCausalLM(config).save_pretrained(folder)
    return folder


def test_moe_router_aux_loss_is_added_as_plain_ms_swift_adds_it(tmp_path: Path) -> None:
    """ms-swift adds ``router_aux_loss_coef * aux_loss`` (scaled by the batch's share of
    ``num_items_in_batch``) after ``compute_loss_func``: the seam's loss and gradients equal plain SFT's,
    where the MoE model adds it to its own loss."""
    from swift import Seq2SeqTrainer, Seq2SeqTrainingArguments, get_model_processor, get_template

    from coordexp.swift_seam.assembly import build_trainer_cls

    model, processor = get_model_processor(
        str(_moe_checkpoint(tmp_path / "moe")), model_type="qwen3_moe", device_map="cpu", attn_impl="sdpa"
    )
    assert model.model_info.is_moe_model
    template = get_template(processor, template_type="qwen3_nothinking", max_length=128)
    template.set_mode("train")
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 1500, (2, 48), generator=gen)
    labels = input_ids.clone()
    labels[:, :12] = -100
    labels[1, 40:] = -100
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids)}
    num_items = (labels[..., 1:] != -100).sum()

    def run(coef: float, stage1: bool) -> tuple[list[float], dict[str, torch.Tensor], dict[str, float]]:
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / "out"),
            router_aux_loss_coef=coef,
            use_cpu=True,
            report_to=[],
            check_model=False,
            gradient_accumulation_steps=1,
            remove_unused_columns=False,
        )
        cls = (
            build_trainer_cls(Seq2SeqTrainer, {"token_type_metrics": {"enabled": True}})
            if stage1
            else Seq2SeqTrainer
        )
        trainer = cls(model=model, args=args, template=template, train_dataset=[{}])
        assert isinstance(trainer.compute_loss_func, Stage1LossFunc) == stage1
        return _run_window(trainer, [batch], num_items)

    plain, seam = run(0.5, False), run(0.5, True)
    _assert_same(seam, plain, logged=False)
    assert seam[2]["aux_loss"] == pytest.approx(plain[2]["aux_loss"], rel=1e-6)
    assert run(0.0, True)[0] != pytest.approx(seam[0], rel=1e-4)  # the aux term is really in the loss
