"""What the step's fused pass reads, taken from the step: logit rows, targets, token types, coord slice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from coordexp.components.base import PassRequest
from coordexp.components.context import StepContext
from coordexp.functional import CoordSlice, next_token_targets, next_token_types
from coordexp.functional.pass_spec import PassOptions

__all__ = ["MisalignedLogits", "PassInputs", "step_pass_inputs"]

CoordSliceFn = Callable[[torch.device, int], CoordSlice | None]
"""``(device, vocab size) -> coord slice`` checked against that vocabulary (None: unknown)"""


class MisalignedLogits(ValueError):
    """The logit rows do not line up with the labels' next-token targets."""


@dataclass(frozen=True)
class PassInputs:
    """What the step's fused pass reads: logit rows ``[N, V]`` (with ``materialize_logits: false``, the
    hidden states ``[N, H]`` the head turns into them), the targets ``[N]`` they score, the shifted token
    types (None: untyped) and the coord slice (None: unknown), with the merged request."""

    logits: Tensor
    targets: Tensor
    types: Tensor | None
    coord: CoordSlice | None
    request: PassRequest
    chunk_size: int
    box_slots: Tensor | None = None
    """the shifted ``box_slots`` codes (None: the batch has none, or no box term asked for them)"""
    box_links: Tensor | None = None
    """the shifted ``box_pairs`` codes (with ``box_slots``)"""

    @property
    def options(self) -> PassOptions:
        return self.request.options(self.chunk_size)


def _usable_token_types(token_types: Any, labels: Tensor) -> bool:
    """Per-token codes (token types, box slots) the pass can use: an integer tensor shaped like the
    labels. Anything else (a collator without the contract guard, a misaligned cut) means "none" for
    the step."""
    return (
        isinstance(token_types, Tensor)
        and token_types.shape == labels.shape
        and not token_types.is_floating_point()
        and not token_types.is_complex()
        and token_types.dtype != torch.bool
    )


def step_pass_inputs(
    ctx: StepContext,
    logits: Tensor,
    request: PassRequest,
    coord_slice: CoordSliceFn,
    *,
    chunk_size: int,
    vocab: int | None = None,
) -> PassInputs:
    """The step's :class:`PassInputs` (``ctx.labels`` must be set); records the pack size.

    With ``vocab`` (``materialize_logits: false``), ``logits`` are the hidden states ``[..., H]`` of a
    head with ``vocab`` outputs, passed on as ``[N, H]``. Raises :class:`MisalignedLogits` when the rows
    do not line up with the labels.
    """
    assert ctx.labels is not None
    flat = logits.reshape(-1, logits.shape[-1])
    vocab = logits.shape[-1] if vocab is None else vocab
    targets = next_token_targets(ctx.labels)
    if flat.shape[0] != targets.shape[0]:
        raise MisalignedLogits(
            f"logits {tuple(logits.shape)} do not line up with labels {tuple(ctx.labels.shape)}"
        )
    types = None
    token_types = ctx.extras.token_types
    if request.types and _usable_token_types(token_types, ctx.labels):
        assert isinstance(token_types, Tensor)
        types = next_token_types(token_types.to(device=ctx.labels.device, dtype=torch.long))
    coord = coord_slice(flat.device, vocab)
    pack = ctx.extras.pack_num_samples
    if isinstance(pack, Tensor) and pack.numel() > 0 and not pack.is_complex():
        ctx.device_values["pack_samples"] = pack.sum().to(torch.float32)
    slots, links = ctx.extras.box_slots, ctx.extras.box_pairs
    box_slots = box_links = None
    if request.boxes and _usable_token_types(slots, ctx.labels) and _usable_token_types(links, ctx.labels):
        assert isinstance(slots, Tensor) and isinstance(links, Tensor)
        box_slots = next_token_types(slots.to(device=ctx.labels.device, dtype=torch.long))
        box_links = next_token_types(links.to(device=ctx.labels.device, dtype=torch.long))
    return PassInputs(flat, targets, types, coord, request, chunk_size, box_slots, box_links)
