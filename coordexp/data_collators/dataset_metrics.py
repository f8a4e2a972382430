"""The Stage-1 metrics collator at its old import path: a thin facade over
:mod:`coordexp.rows.collator` (nothing inside ``coordexp`` imports from here)."""

from coordexp.rows.collator import *  # noqa: F403  (exactly the names of the new home)
from coordexp.rows.collator import __all__ as __all__
