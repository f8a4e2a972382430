"""The ordered coord vocabulary (``<|coord_0|>`` .. ``<|coord_999|>``) as a device-side lookup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class CoordSlice:
    """Token ids of the coord bins, in bin order.

    ``ids[k]`` is the vocab id of bin ``k``. ``start`` is set when the ids are consecutive
    (``ids[k] == start + k``): the coord logits are then a ``narrow`` view and the id -> bin lookup is a
    subtraction; otherwise they are an ``index_select`` and the lookup is a ``searchsorted``.
    Every method is sync-free. Build it once per run with :meth:`from_ids` on the logits' device.
    """

    ids: Tensor
    start: int | None = None
    max_id: int | None = None
    _sorted_ids: Tensor = field(init=False, repr=False)
    _sorted_bins: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ids.dim() != 1 or self.ids.numel() == 0 or self.ids.dtype != torch.long:
            raise ValueError("CoordSlice.ids must be a non-empty 1-D int64 tensor")
        if self.start is None:
            sorted_ids, order = torch.sort(self.ids)
        else:
            sorted_ids, order = self.ids, self.ids
        object.__setattr__(self, "_sorted_ids", sorted_ids)
        object.__setattr__(self, "_sorted_bins", order)

    @classmethod
    def from_ids(cls, ids: Sequence[int] | Tensor, device: torch.device | str | None = None) -> CoordSlice:
        """Validate the ids on the host (non-empty, non-negative, unique) and detect a consecutive run."""
        host = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        if not host:
            raise ValueError("coord token ids are empty")
        if min(host) < 0:
            raise ValueError("coord token ids must be >= 0")
        if len(set(host)) != len(host):
            raise ValueError("coord token ids must be unique")
        consecutive = host == list(range(host[0], host[0] + len(host)))
        tensor = torch.tensor(host, dtype=torch.long, device=device)
        return cls(tensor, host[0] if consecutive else None, max(host))

    @property
    def num_bins(self) -> int:
        """Number of bins ``K`` (1000 for the standard coord vocabulary)."""
        return self.ids.numel()

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def to(self, device: torch.device | str) -> CoordSlice:
        """This slice with its tensors on ``device`` (itself when already there)."""
        device = torch.device(device)
        if self.ids.device == device:
            return self
        return CoordSlice(self.ids.to(device), self.start, self.max_id)

    def check_vocab(self, vocab_size: int) -> None:
        """Raise ``ValueError`` if a coord id (known on the host) does not index into logits of
        ``vocab_size`` columns. The one check of the coord ids against a vocabulary: the pipeline and
        ``coordexp.coord_tokens.validate_coord_ids`` say why it failed around this message."""
        top = self.max_id
        if top is None and self.start is not None:
            top = self.start + self.num_bins - 1
        if top is not None and top >= vocab_size:
            raise ValueError(f"coord token id {top} is beyond the logits' vocabulary ({vocab_size})")

    def take(self, logits: Tensor) -> Tensor:
        """Coord logits in bin order: ``[n, V] -> [n, K]`` (a view when the ids are consecutive)."""
        if self.start is not None:
            return logits.narrow(-1, self.start, self.num_bins)
        return logits.index_select(-1, self.ids)

    def lookup(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(is_coord, bin)`` for 1-D token ids; ``bin`` is 0 where ``is_coord`` is False."""
        k = self.num_bins
        if self.start is not None:
            offset = tokens - self.start
            hit = (offset >= 0) & (offset < k)
            return hit, torch.where(hit, offset, 0)
        pos = torch.searchsorted(self._sorted_ids, tokens.contiguous()).clamp_(max=k - 1)
        hit = self._sorted_ids.index_select(0, pos) == tokens
        return hit, torch.where(hit, self._sorted_bins.index_select(0, pos), 0)
