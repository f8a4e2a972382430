"""Next-token alignment of labels and token types.

A causal LM scores ``labels[:, t + 1]`` with ``logits[:, t]``. Instead of slicing the logits (which
would force a copy of the largest tensor of the step), the functional code shifts the *labels* left by
one and pads the last position, so ``logits.view(-1, V)[i]`` scores ``targets[i]``.
"""

from __future__ import annotations

from typing import Final

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX: Final = -100
"""Label value of an unsupervised position (the HF / PyTorch convention)."""

TYPE_IGNORE: Final = -1
"""Token type of an unsupervised or untyped position."""
TYPE_DESC: Final = 1
"""Token type of a ``desc`` string value (quotes included)."""
TYPE_COORD: Final = 2
"""Token type of a coordinate (coord token or number under ``bbox_2d``/``poly``)."""
TYPE_FORMAT: Final = 3
"""Token type of JSON punctuation, keys and template suffix tokens."""


def _shift_left(values: Tensor, pad_value: int) -> Tensor:
    if values.dim() != 2:
        raise ValueError(f"expected a [batch, seq] tensor, got shape {tuple(values.shape)}")
    return F.pad(values[:, 1:], (0, 1), value=pad_value).reshape(-1)


def next_token_targets(labels: Tensor) -> Tensor:
    """Flattened next-token targets: ``targets[b * T + t] = labels[b, t + 1]``, last position -100.

    ``logits.view(-1, V)`` of ``[B, T, V]`` logits is then scored against these targets row by row.
    """
    return _shift_left(labels, IGNORE_INDEX)


def next_token_types(token_types: Tensor) -> Tensor:
    """Flattened next-token types, aligned like :func:`next_token_targets` (pad value ``TYPE_IGNORE``)."""
    return _shift_left(token_types, TYPE_IGNORE)
