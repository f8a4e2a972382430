"""Stage-1 metrics: the old home of the trainer mixins (``coordexp.metrics.dataset_metrics`` is now
a facade over :mod:`coordexp.trainer`)."""
