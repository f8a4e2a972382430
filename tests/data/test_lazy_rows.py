"""The lazy loader: the same rows, refusals and packing as the eager one, from a parallel pre-pass
that runs once and is then read from its cache; a row that changed since fails loudly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from coordexp.launch.config import DataSection
from coordexp.rows import datasets as datasets_module
from coordexp.rows.datasets import build_datasets, index_split
from coordexp.rows.lazy_rows import LazyRows
from coordexp.rows.refused import DataError, RefusedRows
from coordexp.run_folder.names import REFUSED_ROWS_FILE
from tests.data import support
from tests.data.eager import build_eager_datasets


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _mixed_file(tmp: Path) -> Path:
    """Good rows with every refusal kind between them, and blank lines."""
    lines = [json.dumps(r, ensure_ascii=False) for r in support.demo_rows(12)]
    lines[2] = "{not json"
    lines[4] = ""
    lines[5] = json.dumps(support.too_long_row())
    lines[7] = json.dumps(support.out_of_range_coord_row())
    lines[9] = json.dumps(support.user_turn_only_row())
    path = tmp / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _data(train: list[Path], val: list[Path] = (), **extra: Any) -> DataSection:  # type: ignore[assignment]
    return DataSection.model_validate(
        {"train": [str(p) for p in train], "val": [str(p) for p in val], **extra}
    )


def _refused_records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / REFUSED_ROWS_FILE).read_text().splitlines()]


@pytest.mark.parametrize("layout", ["padded", "padding_free", "packing"])
@pytest.mark.parametrize("max_samples", [None, 5])
def test_the_lazy_rows_are_the_eager_rows(tmp_path: Path, layout: str, max_samples: int | None) -> None:
    mixed = _mixed_file(tmp_path)
    clean = support.Written().write(tmp_path / "clean.jsonl", support.demo_rows(7, label="coco", seed=3))
    data = _data([mixed, clean], [clean], layout=layout, max_refused_fraction=0.5, max_samples=max_samples)

    def build(builder: Any, run: Path) -> tuple[Any, Any]:
        return builder(support.template(layout), data, packing_length=support.MAX_LENGTH, output_dir=run)

    lazy, eager = build(build_datasets, tmp_path / "lazy"), build(build_eager_datasets, tmp_path / "eager")
    for got, want in zip(lazy, eager, strict=True):
        assert len(got) == len(want)
        assert all(same_value(got[i], want[i]) for i in range(len(want)))
        if layout == "packing":
            assert got.packed_idx == want.packed_idx  # the same packs from the index's lengths
    assert _refused_records(tmp_path / "lazy") == _refused_records(tmp_path / "eager")


def test_two_processes_index_what_one_does(tmp_path: Path) -> None:
    files = [_mixed_file(tmp_path)] + [
        support.Written().write(tmp_path / f"f{k}.jsonl", support.demo_rows(9, seed=k)) for k in range(3)
    ]
    one = index_split(
        support.template(),
        [str(p) for p in files],
        "train",
        _data(files, num_proc=1, cache_dir=str(tmp_path / "c1")),
    )
    two = index_split(
        support.template(),
        [str(p) for p in files],
        "train",
        _data(files, num_proc=2, cache_dir=str(tmp_path / "c2")),
    )
    for name in ("file", "offset", "line", "length", "label"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    assert (one.files, one.labels, one.refused) == (two.files, two.labels, two.refused)
    assert [line for _, line, _ in one.refused] == [3, 6, 8, 10]


def test_the_index_keeps_no_row_contents(tmp_path: Path) -> None:
    path = support.Written().write(tmp_path / "rows.jsonl", support.demo_rows(40))
    train, _ = build_datasets(support.template(), _data([path]), packing_length=512, output_dir=tmp_path)
    assert isinstance(train, LazyRows)
    arrays = ("file", "offset", "line", "length", "label")
    assert sum(getattr(train.row_index, a).nbytes for a in arrays) == 40 * (4 + 8 + 4 + 4 + 4)
    assert len(pickle.dumps(train.row_index)) < 4096  # what a spawned DataLoader worker would receive


def test_a_second_start_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mixed_file(tmp_path)
    data = _data([path], max_refused_fraction=0.5, cache_dir=str(tmp_path / "cache"))
    runs: list[int] = []
    real = datasets_module.build_index
    monkeypatch.setattr(datasets_module, "build_index", lambda *a, **k: runs.append(1) or real(*a, **k))

    def start(run: str, template: Any | None = None) -> Any:
        train, _ = build_datasets(
            template or support.template(), data, packing_length=512, output_dir=tmp_path / run
        )
        return train

    first = start("a")
    second = start("b")
    assert runs == [1]
    assert _refused_records(tmp_path / "a") == _refused_records(tmp_path / "b")
    assert all(same_value(first[i], second[i]) for i in range(len(first)))
    out = capsys.readouterr().out
    assert out.count("[coordexp] indexing train rows: 1 file(s)") == 1
    assert out.count("[coordexp] train rows: 7 kept, 4 refused, from the cache") == 1
    # What changes refusals or lengths is in the key: the data, max_length.
    start("c", support.template(max_length=1024))
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(support.demo_rows(1)[0]) + "\n")
    start("d")
    assert runs == [1, 1, 1]


def test_a_corrupt_cache_file_is_never_used(tmp_path: Path) -> None:
    path = _mixed_file(tmp_path)
    cache = tmp_path / "cache"
    data = _data([path], max_refused_fraction=0.5, cache_dir=str(cache))
    index = index_split(support.template(), [str(path)], "train", data)
    (stored,) = cache.glob("train-*.npz")
    stored.write_bytes(stored.read_bytes()[:100])  # a torn write
    again = index_split(support.template(), [str(path)], "train", data)
    assert np.array_equal(index.length, again.length) and index.refused == again.refused
    assert len(stored.read_bytes()) > 100  # rewritten
    assert not list(cache.glob(".*.tmp"))  # no temporary file left behind


def test_an_unwritable_cache_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    path = support.Written().write(tmp_path / "rows.jsonl", support.demo_rows(3))
    data = _data([path], cache_dir=str(blocker / "cache"))
    with pytest.raises(DataError) as info:
        build_datasets(support.template(), data, packing_length=512, output_dir=tmp_path / "run")
    assert str(info.value).startswith(
        f"data.cache_dir: cannot write the row index cache in {blocker / 'cache'}"
    )
    assert "\n" not in str(info.value)


def test_a_row_that_changed_after_the_pre_pass_names_its_line(tmp_path: Path) -> None:
    path = support.Written().write(tmp_path / "rows.jsonl", support.demo_rows(4))
    train, _ = build_datasets(support.template(), _data([path]), packing_length=512, output_dir=tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = "x" * len(lines[1])  # same length: the other rows keep their offsets
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert train[0]["sample_id"] == "rows-0"  # untouched rows still read
    with pytest.raises(DataError, match=rf"^{path.resolve()}:2: not valid JSON .*the data changed since"):
        train[1]


def test_refusals_merge_into_one_record() -> None:
    refused = RefusedRows()
    refused.begin("train")
    refused.refuse("a.jsonl", 3, "train", "bad")
    refused.keep_many("train", 5)
    assert (refused.read["train"], refused.kept["train"], len(refused.rows)) == (6, 5, 1)
