"""The trainer mixins and ``build_trainer_cls`` at their old import path: a thin facade over
:mod:`coordexp.trainer` (nothing inside ``coordexp`` imports from here)."""

from coordexp.trainer import *  # noqa: F403  (exactly the names of the new home)
from coordexp.trainer import __all__ as __all__
