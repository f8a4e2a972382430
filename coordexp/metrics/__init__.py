"""Stage-1 trainer mixins (``coordexp.metrics.dataset_metrics``)."""
