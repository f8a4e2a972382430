"""Token types at their old import path: a thin facade over :mod:`coordexp.rows.token_types`
(nothing inside ``coordexp`` imports from here)."""

from coordexp.rows.token_types import *  # noqa: F403  (exactly the names of the new home)
from coordexp.rows.token_types import __all__ as __all__
