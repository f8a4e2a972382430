"""``custom.stage1_pass.materialize_logits: false``: the Stage-1 pass from the hidden states and the head.

During the Stage-1 forward of a one-pass trainer the output head (``get_output_embeddings()``, the
``lm_head`` of Qwen3 and of Qwen3-VL) is swapped, on the module instance only, for a capture that
records its input (the final hidden states, already cut by ``logits_to_keep``) and returns it in place of
the logits; the original forward comes back when the forward ends. ms-swift then hands those outputs to
``compute_loss_func``, where :mod:`coordexp.functional.linear_pass` computes the logits chunk by chunk,
so the full logits, HF's fp32 copy and their gradient never exist. Nothing upstream is patched.

ms-swift skips its ``token_acc`` when the outputs carry no logits (as with Liger); the pass keeps each
row's argmax and :func:`report_token_acc` feeds it to ms-swift's own ``compute_acc``, with ms-swift's
definition and into its own metric, so the key is unchanged.

Refused at start (:func:`refuse_unmaterialised_options`): sharded heads (DeepSpeed ZeRO-3, FSDP: the
head weight is only whole inside the head's own forward, which this mode replaces),
``acc_strategy: seq`` (its per-sample boundaries are not available to the loss), and the mode without
any Stage-1 feature that reads the logits (there would be no Stage-1 pass to run it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from coordexp.functional.linear_pass import OutputHead
from coordexp.swift_seam.loss_func import Stage1OptionError

OPTION = "custom.stage1_pass.materialize_logits=false"


def _refusal(what: str, why: str) -> Stage1OptionError:
    return Stage1OptionError(f"{OPTION} with {what}: {why}")


def refuse_unmaterialised_options(args: Any, *, reads_logits: bool) -> None:
    """Raise :class:`Stage1OptionError` (one line) for a combination this mode does not support."""
    if not reads_logits:
        raise Stage1OptionError(
            f"{OPTION}: no Stage-1 feature reads the logits (enable coord_soft_ce_w1, token_type_metrics "
            "or instability_monitor), so there is no Stage-1 pass to compute them chunk by chunk"
        )
    from transformers.integrations import is_deepspeed_zero3_enabled

    why = (
        "the head weight is sharded and only gathered inside the head's own forward, which this mode replaces"
    )
    if is_deepspeed_zero3_enabled():
        raise _refusal("DeepSpeed ZeRO-3", why)
    if getattr(args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise _refusal("FSDP", why)
    if getattr(args, "acc_strategy", "token") == "seq":
        raise _refusal(
            "training.acc_strategy=seq", "ms-swift's per-sequence token_acc needs its sample boundaries"
        )


@dataclass
class HeadCapture:
    """What the swapped head saw during one forward."""

    module: nn.Linear
    hidden: Tensor | None = None

    @property
    def head(self) -> OutputHead:
        return OutputHead(self.module.weight, self.module.bias)


def output_head(model: Any) -> nn.Linear:
    """The model's output head, a plain linear layer (one line naming what it is otherwise)."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, nn.Module):  # DDP and similar wrappers
        inner = inner.module
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        raise _refusal(
            f"output head {type(head).__name__}",
            "the model's get_output_embeddings() must be a plain nn.Linear (a LoRA / modules_to_save "
            "wrapped head, or none, is not supported)",
        )
    return head


@contextmanager
def capture_output_head(model: Any) -> Iterator[HeadCapture]:
    """Swap the head's forward for the duration of one model forward (see the module docstring)."""
    module = output_head(model)
    capture = HeadCapture(module)
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")

    def forward(hidden_states: Tensor) -> Tensor:
        if capture.hidden is not None:
            raise RuntimeError(f"coordexp: {OPTION}: the output head ran twice in one forward")
        capture.hidden = hidden_states
        return hidden_states  # stands in for the logits; the Stage-1 loss reads it as hidden states

    module.forward = forward  # type: ignore[method-assign,assignment]
    try:
        yield capture
    finally:
        if had_own:
            module.forward = previous  # type: ignore[method-assign,assignment]
        else:
            del module.forward


def report_token_acc(trainer: Any, mode: str, preds: Tensor, labels: Tensor) -> None:
    """ms-swift's ``token_acc`` from the pass's argmax: its ``compute_acc`` into its own metric, as its
    ``_compute_acc`` does for a causal LM (which it skips when the outputs carry no logits)."""
    args = getattr(trainer, "args", None)
    metrics_by_mode = getattr(trainer, "custom_metrics", None)
    if not callable(getattr(trainer, "_compute_acc", None)) or metrics_by_mode is None:
        return  # not an ms-swift trainer: there is no framework token_acc to stand in for
    if getattr(args, "tuner_backend", None) == "unsloth":
        return
    if getattr(trainer, "task_type", "causal_lm") != "causal_lm":
        return
    from swift.metrics import compute_acc

    template = getattr(trainer, "template", None)
    metrics = compute_acc(
        preds.view(labels.shape),
        labels,
        acc_strategy=getattr(args, "acc_strategy", "token"),
        is_encoder_decoder=bool(getattr(template, "is_encoder_decoder", False)),
    )
    for key, value in metrics.items():
        metrics_by_mode[mode][key].update(value)
