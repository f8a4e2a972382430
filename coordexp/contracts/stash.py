"""Batch extras at run time: pop them off a batch, keep them on the trainer for the step.

Extras are diagnostics inputs, never model inputs: the trainer pops them before
``model(**inputs)`` and stashes them on itself, so the same step's diagnostics can read them. What
an extra is (its key, type, shape) is declared in ``schemas/batch_extras.schema.json`` and generated
into ``coordexp.generated.batch_extras``; this module is the behaviour around those declarations,
written once for every declared key.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import fields
from typing import Any, Final

from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS, BatchExtrasFields

__all__ = [
    "STASH_ATTRIBUTE",
    "BatchExtras",
    "get_stashed_batch_extras",
    "maybe_pop_and_stash_batch_extras",
    "pop_and_stash_batch_extras",
    "pop_batch_extras",
    "stash_batch_extras",
]

STASH_ATTRIBUTE: Final = "_coordexp_batch_extras"
"""Trainer attribute holding the current step's extras."""


class BatchExtras(BatchExtrasFields):
    """The extras of one batch, each an attribute named like its key (None when absent).

    The fields (and ``__init__``, ``__eq__``, ``dataclasses.replace``) are the generated frozen
    dataclass's; this subclass adds no field, only the behaviour below.
    """

    __slots__ = ()

    def present(self) -> frozenset[str]:
        """Keys of the extras this batch carried."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def as_dict(self) -> dict[str, Any]:
        """The present extras as a batch-style dict."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


def pop_batch_extras(batch: MutableMapping[str, Any]) -> BatchExtras:
    """Remove every declared extra from ``batch`` (in place) and return them typed."""
    # The generated fields are named like the keys (tests/contracts check it).
    return BatchExtras(**{key: batch.pop(key, None) for key in BATCH_EXTRAS_KEYS})


def stash_batch_extras(trainer: object, extras: BatchExtras) -> None:
    """Make ``extras`` the current step's extras of ``trainer`` (replacing the last step's)."""
    setattr(trainer, STASH_ATTRIBUTE, extras)


def get_stashed_batch_extras(trainer: object) -> BatchExtras | None:
    """The extras stashed for the current step, or None before the first step."""
    value = getattr(trainer, STASH_ATTRIBUTE, None)
    return value if isinstance(value, BatchExtras) else None


def pop_and_stash_batch_extras(trainer: object, batch: MutableMapping[str, Any]) -> BatchExtras:
    """Pop the extras from ``batch`` and stash them on ``trainer`` for this step."""
    extras = pop_batch_extras(batch)
    stash_batch_extras(trainer, extras)
    return extras


def maybe_pop_and_stash_batch_extras(trainer: object, batch: object) -> BatchExtras | None:
    """Like ``pop_and_stash_batch_extras`` for anything: non-mappings are left alone (None)."""
    if not isinstance(batch, MutableMapping):
        return None
    return pop_and_stash_batch_extras(trainer, batch)
