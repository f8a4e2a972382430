"""The old home of the collation code, now :mod:`coordexp.rows`; ``dataset_metrics`` and
``token_types`` here are thin facades kept for users of the old paths."""
