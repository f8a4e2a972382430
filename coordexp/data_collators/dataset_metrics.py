"""The Stage-1 metrics collator at its old import path: a thin facade over
:mod:`coordexp.data_collators.collator` (nothing inside ``coordexp`` imports from here)."""

from coordexp.data_collators.collator import *  # noqa: F403  (exactly the names of the new home)
from coordexp.data_collators.collator import __all__ as __all__
