"""Next-token alignment of labels and token types.

A causal LM scores ``labels[:, t + 1]`` with ``logits[:, t]``. Instead of slicing the logits (which
would force a copy of the largest tensor of the step), the functional code shifts the *labels* left by
one and pads the last position, so ``logits.view(-1, V)[i]`` scores ``targets[i]``.
"""

from __future__ import annotations

from typing import Final

import torch.nn.functional as F
from torch import Tensor

from coordexp.generated.batch_extras import IGNORE_INDEX, TokenType

__all__ = [
    "IGNORE_INDEX",
    "TYPE_COORD",
    "TYPE_DESC",
    "TYPE_FORMAT",
    "TYPE_IGNORE",
    "next_token_targets",
    "next_token_types",
]

# The token-type codes as plain ints (tensor fill values, comparisons); their values and meaning
# are declared once, in schemas/batch_extras.schema.json (generated ``TokenType``).
TYPE_IGNORE: Final = int(TokenType.IGNORE)
TYPE_DESC: Final = int(TokenType.DESC)
TYPE_COORD: Final = int(TokenType.COORD)
TYPE_FORMAT: Final = int(TokenType.FORMAT)


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
