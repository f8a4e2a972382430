"""The train and eval datasets of a run: the pre-pass (or its cache), the refused-rows check, then
lazy rows (padded, padding_free) or ms-swift's ``PackingDataset`` over them (packing).

:func:`build_datasets` runs under ``main_process_first`` (``TrainingArguments.main_process_first(
local=True)`` in a run): the first process of each node runs the pre-pass and writes the cache while
the others wait, then they read the cache. What a user sees, per split (the last line on a cache
hit: a restart, a second run, the node's other ranks)::

    [coordexp] indexing train rows: 2 file(s), 0.2 MB, 2 process(es)
    indexing train rows: 100%|██████████| 192/192 [00:00<00:00, 1177.31 rows/s]
    [coordexp] train rows: 192 kept, 0 refused, indexed in 0.2 s (1,177 rows/s); cache <path>
    [coordexp] train rows: 192 kept, 0 refused, from the cache <path> (0.00 s)

What is reused, and what is not: HF's ``main_process_first`` (once per node), ms-swift's
``PackingDataset`` (binpacking over the ``lengths`` column, unchanged), tqdm (the progress bar).
Not reused: ``datasets.Dataset.map(num_proc=...)`` and its Arrow cache (it pickles the template into
each worker and would store every encoded row: token lists, and media tensors turned into nested
lists), and ms-swift's ``LazyLLMDataset`` (on an encode error it serves another, random row: the
data and the order would change silently, where this loader refuses with ``file:line``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from coordexp.launch.config import DataSection
from coordexp.rows.index_cache import cache_key, cache_path, default_cache_dir, load_index, save_index
from coordexp.rows.lazy_rows import LazyRows
from coordexp.rows.refused import RefusedRows
from coordexp.rows.row_index import RowIndex, build_index, scan_file
from coordexp.rows.untyped import TypingSetup, UntypedRows


def index_split(
    template: Any,
    files: Sequence[str],
    split: str,
    data: DataSection,
    *,
    progress: bool = True,
    typing: TypingSetup | None = None,
) -> RowIndex:
    """The split's row index: from the cache when it holds this data for this template (and these
    token-type settings), else from the pre-pass (then cached)."""
    start = time.perf_counter()
    scans = [scan_file(os.path.abspath(name)) for name in files]
    key = cache_key(template, scans, getattr(template, "max_length", None), typing, data.image_check)
    path = cache_path(Path(data.cache_dir) if data.cache_dir else default_cache_dir(), split, key)
    index = load_index(path, key)
    if index is not None:
        print(
            f"[coordexp] {split} rows: {len(index):,} kept, {len(index.refused):,} refused, "
            f"from the cache {path} ({time.perf_counter() - start:.2f} s)"
        )
        return index
    lines = sum(len(s.line_starts) for s in scans)
    megabytes = sum(s.size for s in scans) / 1e6
    print(
        f"[coordexp] indexing {split} rows: {len(scans)} file(s), {megabytes:.1f} MB, "
        f"{data.num_proc} process(es)"
    )
    from tqdm.auto import tqdm

    with tqdm(
        total=lines, desc=f"indexing {split} rows", unit=" rows", disable=not progress, dynamic_ncols=True
    ) as bar:
        index = build_index(
            template,
            scans,
            num_proc=data.num_proc,
            progress=bar.update,
            typing=typing,
            image_check=data.image_check,
        )
    seconds = time.perf_counter() - start
    save_index(path, key, index)
    rate = (len(index) + len(index.refused)) / max(seconds, 1e-9)
    print(
        f"[coordexp] {split} rows: {len(index):,} kept, {len(index.refused):,} refused, "
        f"indexed in {seconds:.1f} s ({rate:,.0f} rows/s); cache {path}"
    )
    return index


def build_datasets(
    template: Any,
    data: DataSection,
    *,
    packing_length: int,
    output_dir: Path,
    main_process_first: AbstractContextManager[Any] | None = None,
    token_types: Any = None,
) -> tuple[Any, Any | None]:
    """Train and eval datasets for the trainer (:class:`LazyRows`, or a swift ``PackingDataset``
    over them for packing); raises ``DataError`` when more rows are refused than tolerated, or
    when ``token_types`` (``custom.token_type_metrics``) is on and an included dataset's train rows
    cannot be typed."""
    refused = RefusedRows()
    untyped = UntypedRows(TypingSetup.for_run(template, token_types, data.answer_format))
    indexes: dict[str, RowIndex] = {}
    with main_process_first or contextlib.nullcontext():
        for split, files in (("train", data.train), ("val", data.val)):
            if not files:
                continue
            index = index_split(template, files, split, data, typing=untyped.setup)
            indexes[split] = index.truncated(data.max_samples)
            if len(indexes[split]) < len(index):
                print(f"[coordexp] {split} rows: the first {len(indexes[split]):,} used (data.max_samples)")
            indexes[split].record(refused, split)
            indexes[split].record_untyped(untyped, split)
    refused.enforce(data.max_refused_fraction, output_dir)
    untyped.enforce(output_dir)

    def as_dataset(index: RowIndex) -> Any:
        rows = LazyRows(template, index, answer_format=data.answer_format)
        if data.layout != "packing":
            return rows
        from swift.dataset import PackingDataset

        return PackingDataset(template, rows, packing_length=packing_length)

    val = indexes.get("val")
    return as_dataset(indexes["train"]), None if val is None else as_dataset(val)
