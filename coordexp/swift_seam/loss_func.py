"""The Stage-1 objective through ms-swift's ``compute_loss_func`` seam: ONE pass over the logits per step.

ms-swift 4.6's ``Seq2SeqTrainer`` (``_prepare_inputs`` / ``compute_loss``) handles a trainer whose
``compute_loss_func`` is set like this: it pops ``labels`` before the forward, so the model returns
logits only (no HF causal-LM loss, no fp32 copy of the logits); it calls
``compute_loss_func(outputs, labels, num_items_in_batch=..., loss_scale=..., trainer=...)``; then it
adds the MoE router aux loss, multiplies by the process count under ``average_tokens_across_devices``
and computes its ``token_acc`` from ``outputs.logits`` and those labels. transformers' ``training_step``
then never divides by the accumulation steps (it does so only when no ``compute_loss_func`` is set).

:class:`Stage1LossFunc` is what the Stage-1 hook installs there: it hands the call to the pipeline,
which computes the base CE, the coord terms and every statistic in one autograd function with one
gradient buffer (see :meth:`Stage1Pipeline.fused_loss`). The loss options of ms-swift that change the
objective in a way that pass does not reproduce are refused when the trainer is built
(:func:`refuse_unsupported_options`); ``loss_scale`` is checked again per batch.
"""

from __future__ import annotations

from typing import Any

from coordexp.config import ConfigError


class Stage1OptionError(ConfigError):
    """A training option the Stage-1 objective cannot honour; raised when the trainer is built."""


def _refusal(option: str, why: str) -> Stage1OptionError:
    return Stage1OptionError(f"{option}: {why}; the Stage-1 objective (custom:) does not support it")


def _non_binary_loss_scale(template: Any) -> bool:
    """Whether the template weights tokens with values other than 0 / 1 (only then a ``loss_scale``
    tensor reaches the loss; 0 / 1 weights are plain label masking, which the pass already sees)."""
    binary = getattr(template, "is_binary_loss_scale", None)
    if binary is None:
        loss_scale = getattr(template, "loss_scale", None)
        binary = getattr(loss_scale, "is_binary_loss_scale", True)
    return binary is False


def refuse_unsupported_options(args: Any, template: Any) -> None:
    """Raise :class:`Stage1OptionError` (one line naming the option) for every ms-swift loss option that
    would change the objective computed through the seam; return when there is none."""
    loss_type = getattr(args, "loss_type", None)
    if loss_type is not None:
        raise _refusal(
            f"training.loss_type={loss_type!r}",
            "the Stage-1 loss is ms-swift's compute_loss_func, a user loss_type would replace it",
        )
    smoothing = float(getattr(args, "label_smoothing_factor", 0.0) or 0.0)
    if smoothing != 0.0:
        raise _refusal(
            f"training.label_smoothing_factor={smoothing}",
            "the Stage-1 base CE is unsmoothed "
            "(ms-swift skips its label smoother when compute_loss_func is set)",
        )
    for flag, why in (
        ("enable_dft_loss", "DFT reweights the per-token CE, which the Stage-1 pass computes unweighted"),
        ("enable_channel_loss", "per-channel losses need per-token losses the Stage-1 pass does not keep"),
        (
            "use_liger_kernel",
            "Liger's fused linear CE returns no logits, which every Stage-1 statistic reads",
        ),
    ):
        if getattr(args, flag, False):
            raise _refusal(f"training.{flag}=true", why)
    sp = max(
        int(getattr(args, "sequence_parallel_size", 1) or 1),
        int(getattr(template, "sequence_parallel_size", 1) or 1),
    )
    if sp > 1:
        raise _refusal(
            f"training.sequence_parallel_size={sp}",
            "sequence parallel shards the logits and labels across ranks, the Stage-1 pass needs whole rows",
        )
    if _non_binary_loss_scale(template):
        raise _refusal(
            f"template loss_scale={getattr(template, '_loss_scale', '?')!r}",
            "non-binary per-token loss weights are not applied by the Stage-1 pass",
        )


def refuse_loss_scale_tensor(loss_scale: Any) -> None:
    """Per batch: a ``loss_scale`` tensor reaching the loss (a template changed after start) is refused."""
    if loss_scale is not None:
        raise _refusal(
            "loss_scale", "the batch carries per-token loss weights, not applied by the Stage-1 pass"
        )


class Stage1LossFunc:
    """``trainer.compute_loss_func`` of a Stage-1 trainer: the pipeline's single pass over the logits."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer

    def __call__(
        self,
        outputs: Any,
        labels: Any,
        *,
        num_items_in_batch: Any = None,
        loss_scale: Any = None,
        trainer: Any = None,
        **_: Any,
    ) -> Any:
        owner = trainer if trainer is not None else self._trainer
        refuse_loss_scale_tensor(loss_scale)
        return owner.stage1_pipeline().fused_loss(owner, outputs, labels, num_items_in_batch)
