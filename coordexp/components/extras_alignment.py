"""Keep per-token extras aligned with labels when ms-swift cuts them (``logits_to_keep``).

ms-swift's ``_prepare_inputs`` cuts ``labels`` before ``compute_loss`` runs: to the last ``k``
positions (``logits_to_keep`` an int) or, for a single packed row, to the supervised positions plus a
leading -100 (``logits_to_keep`` a bool mask). The per-token extras (``token_types``, ``box_slots``,
``box_pairs``: code -1 at a cut-in pad) are aligned with the uncut labels and must be cut the same
way, or they would describe the wrong tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from coordexp.functional.targets import IGNORE_INDEX, TYPE_IGNORE


def cut_like_labels(
    token_types: Tensor, original_labels: Tensor | None, labels: Tensor, logits_to_keep: object
) -> Tensor | None:
    """``token_types`` cut the way ms-swift cut ``original_labels`` into ``labels``; None if unknown."""
    if token_types.shape == labels.shape and (
        original_labels is None or original_labels.shape == labels.shape
    ):
        return token_types
    if isinstance(logits_to_keep, int) and not isinstance(logits_to_keep, bool):
        keep = labels.shape[-1]
        return token_types[..., -keep:] if token_types.shape[-1] >= keep else None
    if isinstance(logits_to_keep, Tensor) and original_labels is not None and original_labels.shape[0] == 1:
        # Supervised positions in order, found without boolean indexing (no device sync): a stable
        # sort puts them first, and how many there are is known on the host from the cut labels.
        supervised = original_labels[0] != IGNORE_INDEX
        order = torch.argsort((~supervised).to(torch.int8), stable=True)
        kept = order[: labels.shape[-1] - 1]
        return F.pad(token_types[:, kept], (1, 0), value=TYPE_IGNORE)
    return None
