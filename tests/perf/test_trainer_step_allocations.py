"""One real ms-swift ``training_step`` allocates the logits once and ONE gradient of them, nothing else of
that size: no fp32 copy of bf16 logits, no log-softmax, no second gradient (counts, never time).

Plain ms-swift SFT on the same step is counted too, as the contrast (HF's loss upcasts the logits and
keeps a full-size log-softmax and its gradient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.measure import TensorBytesTracker
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS
from coordexp.launch import build_trainer, demo_config, parse_config

pytestmark = pytest.mark.slow


def _trainer(root: Path, out: Path, layout: str, coord_on: bool) -> Any:
    raw = demo_config(root).model_dump()
    raw["model"]["torch_dtype"] = "bfloat16"
    raw["data"].update(layout=layout, packing_length=512, max_samples=8)
    raw["training"].update(
        output_dir=str(out),
        max_steps=1,
        save_strategy="no",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
    )
    raw["custom"]["coord_soft_ce_w1"]["enabled"] = coord_on
    return build_trainer(parse_config(raw))


def _logits_sized(trainer: Any, batch: dict[str, Any], num_items: Any) -> list[tuple[str, torch.dtype]]:
    """``(op, dtype)`` of every new storage at least as large (in elements) as the step's logits."""
    numel: list[int] = []
    handle = trainer.model.register_forward_hook(lambda m, a, out: numel.append(out.logits.numel()))
    trainer.model.zero_grad(set_to_none=True)
    try:
        with TensorBytesTracker() as tracker:
            trainer.training_step(trainer.model, dict(batch), num_items)
    finally:
        handle.remove()
    assert len(numel) == 1
    return [(op, dtype) for op, dtype, nbytes in tracker.allocations if nbytes // dtype.itemsize >= numel[0]]


@pytest.mark.parametrize("layout", ["padded", "packing"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "metrics_only"])
def test_one_step_allocates_the_logits_and_one_gradient(layout: str, coord_on: bool, tmp_path: Path) -> None:
    from swift import Seq2SeqTrainer

    torch.manual_seed(0)
    trainer = _trainer(tmp_path / "demo", tmp_path / "run", layout, coord_on)
    # The demo batch is smaller than one default chunk: use chunks well below the row count, so that the
    # pass's fp32 chunk scratch is told apart from a logits-sized copy.
    trainer.stage1_pipeline().chunk_size = 16
    batches, num_items = trainer.get_batch_samples(
        iter(trainer.get_train_dataloader()), 1, trainer.args.device
    )
    big = _logits_sized(trainer, batches[0], num_items)
    assert [dtype for _, dtype in big] == [torch.bfloat16, torch.bfloat16], big  # logits + ONE gradient

    plain = Seq2SeqTrainer(
        model=trainer.model, args=trainer.args, template=trainer.template, train_dataset=trainer.train_dataset
    )
    plain_batch = {k: v for k, v in batches[0].items() if k not in BATCH_EXTRAS_KEYS}
    plain_big = _logits_sized(plain, plain_batch, num_items)
    assert len(plain_big) > len(big) and torch.float32 in {dtype for _, dtype in plain_big}, plain_big


@pytest.mark.parametrize("layout", ["padded", "packing"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "metrics_only"])
def test_without_materialised_logits_nothing_sequence_x_vocab_is_allocated(
    layout: str, coord_on: bool, tmp_path: Path
) -> None:
    """``custom.stage1_pass.materialize_logits: false``: no storage of sequence x vocab elements (or
    more) exists during the step, neither the logits nor any gradient or copy of them."""
    torch.manual_seed(0)
    trainer = _trainer(tmp_path / "demo", tmp_path / "run", layout, coord_on)
    pipeline = trainer.stage1_pipeline()
    pipeline.materialize_logits = False
    pipeline.chunk_size = 16  # several chunks per step (the demo batch is smaller than one default chunk)
    batches, num_items = trainer.get_batch_samples(
        iter(trainer.get_train_dataloader()), 1, trainer.args.device
    )
    head = trainer.model.get_output_embeddings()
    rows: list[int] = []
    handle = head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    trainer.model.zero_grad(set_to_none=True)
    try:
        with TensorBytesTracker() as tracker:
            trainer.training_step(trainer.model, dict(batches[0]), num_items)
    finally:
        handle.remove()
    assert len(rows) == 1 and rows[0] > 16 * 2  # the hook saw the hidden states of several chunks
    seq_x_vocab = rows[0] * head.weight.shape[0]
    assert head.weight.shape[1] < rows[0]  # so the head's own gradient is smaller than the logits
    big = [
        (op, dtype) for op, dtype, nbytes in tracker.allocations if nbytes // dtype.itemsize >= seq_x_vocab
    ]
    assert big == [], big
    assert head.weight.grad is not None
