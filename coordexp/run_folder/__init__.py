"""The run folder (``output_dir``): the one home of its file names (:mod:`.names`) and its readers
(:mod:`.reader`: the logs, the trainer state, TensorBoard scalars and the resolved config, as read by
``check-logs`` and ``report``).

Import from the modules: this package imports nothing, so the monitor (torch-free) can name its
files without loading the readers.
"""
