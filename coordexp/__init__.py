"""coordexp: schema-first contracts and Stage-1 training components for coord-token detection SFT.

Start with :mod:`coordexp.swift_seam` (trainer mixins, ``build_trainer_cls``),
:mod:`coordexp.contracts` (runtime guards) and :mod:`coordexp.generated` (constants and models
generated from ``schemas/``). ``python -m coordexp`` runs the training entry and the log tools.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("coordexp")  # the one source is pyproject.toml, through the install
except _metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
