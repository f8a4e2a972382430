"""The public config names at their old import path: a thin facade over :mod:`coordexp.config`
(its names live in :mod:`coordexp.config.loading`; nothing inside ``coordexp`` imports from here)."""

from coordexp.config import *  # noqa: F403  (exactly the names of the new home)
from coordexp.config import __all__ as __all__
