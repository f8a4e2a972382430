"""The coord vocabulary of a Stage-1 trainer: the coord token ids of its tokenizer, as a device slice
checked against the logits.

An unusable vocabulary (no tokenizer, missing coord tokens, ids beyond the logits' vocabulary) stops
training while the coord loss is enabled (:class:`CoordObjectiveError`: the objective cannot be
computed); otherwise it warns, once, and the coord diagnostics are skipped.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from coordexp.components.coord_loss import CoordObjectiveError
from coordexp.coord_tokens.codec import CoordVocabError, get_coord_token_ids
from coordexp.functional import CoordSlice

__all__ = ["CoordVocab"]


class CoordVocab:
    """The coord ids of ``tokenizer``; ``required``: the enabled coord loss needs them."""

    def __init__(self, tokenizer: Any, *, required: bool) -> None:
        self.required = required
        self._ids: list[int] | None = None
        self._slice: CoordSlice | None = None
        try:
            if tokenizer is None:
                raise CoordVocabError(
                    "the trainer has no tokenizer (template.tokenizer) to read coord tokens from"
                )
            self._ids = get_coord_token_ids(tokenizer)
        except CoordVocabError as exc:
            if required:
                raise CoordObjectiveError(
                    f"custom.coord_soft_ce_w1.enabled is true but the coord vocabulary is unusable: {exc}"
                ) from exc
            warnings.warn(
                f"coordexp: coord tokens unavailable ({exc}); coord diagnostics and coord monitors "
                "are skipped",
                RuntimeWarning,
                stacklevel=2,
            )

    @property
    def known(self) -> bool:
        """Whether the coord ids are usable (false after a failed check against the logits)."""
        return self._ids is not None

    def slice(self, device: torch.device, vocab_size: int | None = None) -> CoordSlice | None:
        """The coord ids on ``device``; checked against the logits' ``vocab_size`` when given."""
        if self._ids is None:
            return None
        if self._slice is None or self._slice.device != device:
            self._slice = CoordSlice.from_ids(self._ids, device=device)
        if vocab_size is None:
            return self._slice
        try:
            self._slice.check_vocab(vocab_size)
        except ValueError as exc:
            message = f"{exc}: the tokenizer and the model's embedding size disagree"
            if self.required:
                raise CoordObjectiveError(f"custom.coord_soft_ce_w1: {message}") from exc
            warnings.warn(f"coordexp: {message}; coord diagnostics are skipped", RuntimeWarning, stacklevel=3)
            self._ids = None
            return None
        return self._slice
