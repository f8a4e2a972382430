"""The old home of the trainer mixins: ``coordexp.metrics.dataset_metrics`` is a facade over
:mod:`coordexp.swift_seam`."""
