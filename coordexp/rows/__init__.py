"""A data row from its JSONL line to the collated batch: its fields and the dataset-label rule
(:mod:`.fields`).

Import from the modules: this package imports nothing, so the light readers (the contracts, the log
checker) can use the label rule without loading torch or ms-swift.
"""
