"""Building blocks of the data tests: real JSONL files, the real loader and template, real dumps.

Rows are demo rows (real payloads, coord tokens, chat messages) written to files the test lays out
itself (labels, blank lines, misleading ``base_idx``), encoded by ``coordexp.rows.data`` with the
demo tokenizer's ms-swift template, collated by the real metrics collator and dumped by the real
instability monitor. ``Written`` remembers where each row was written, so a test can check that a
dump holds exactly the rows of the batch it was made for.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from coordexp.demo import DemoAssets, build_demo_assets
from coordexp.demo.dataset import make_rows
from coordexp.generated.batch_extras import INSTABILITY_META_JSON_KEY
from coordexp.launch.config import DataSection
from coordexp.monitor import InstabilityMonitor, StepObservation
from coordexp.rows.collator import build_dataset_metrics_collator
from coordexp.rows.datasets import build_datasets
from coordexp.rows.refused import DataError
from coordexp.run_folder.names import REFUSED_ROWS_FILE, UNTYPED_ROWS_FILE

__all__ = [
    "Written",
    "assert_dumps_hold_their_rows",
    "cli_stop_line",
    "demo_assets",
    "demo_rows",
    "dump_split",
    "encode_splits",
    "expect_refused",
    "template",
]

MAX_LENGTH = 512


@functools.cache
def demo_assets() -> DemoAssets:
    """One seed-0 demo build per process (tokenizer + tiny model + data), removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="coordexp-data-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_demo_assets(root / "assets", seed=0)


@functools.cache
def _tokenizer() -> Any:
    import swift

    assets = demo_assets()
    _, tokenizer = swift.get_model_processor(
        str(assets.model_dir), model_type=assets.model_type, load_model=False
    )
    return tokenizer


def template(layout: str = "padded", max_length: int = MAX_LENGTH) -> Any:
    """A fresh ms-swift train template over the demo tokenizer (packing mutates its template)."""
    import swift

    tpl = swift.get_template(
        _tokenizer(),
        template_type=demo_assets().template_type,
        max_length=max_length,
        padding_free=layout == "padding_free",
    )
    tpl.set_mode("train")
    return tpl


def demo_rows(n: int, *, label: str = "lvis", split: str = "train", seed: int = 0) -> list[dict[str, Any]]:
    """``n`` demo rows (messages, assistant_payload, dataset, base_idx, sample_id)."""
    return list(make_rows(label, split, n, seed=seed))


@dataclass
class Written:
    """Every row written by :meth:`write`, by its ``sample_id``: (file, 1-based line, row)."""

    at: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)

    def write(
        self,
        path: Path,
        rows: Sequence[dict[str, Any]],
        *,
        relabel: Callable[[dict[str, Any]], None] | None = None,
        blank_before: Iterable[int] = (),
    ) -> Path:
        """Write ``rows`` to ``path``; each gets ``sample_id`` ``<stem>-<i>`` and ``relabel`` applied;
        a blank line goes before each row index in ``blank_before``."""
        blanks = set(blank_before)
        lines: list[str] = []
        for i, source in enumerate(rows):
            row = dict(source, sample_id=f"{path.stem}-{i}")
            if relabel is not None:
                relabel(row)
            if i in blanks:
                lines.append("")
            lines.append(json.dumps(row, ensure_ascii=False))
            self.at[row["sample_id"]] = (str(path.resolve()), len(lines), row)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def ids_in(self, files: Iterable[Path]) -> set[str]:
        wanted = {str(p.resolve()) for p in files}
        return {sid for sid, (f, _, _) in self.at.items() if f in wanted}


def encode_splits(
    train: Sequence[str | Path],
    val: Sequence[str | Path] = (),
    *,
    output_dir: Path,
    layout: str = "padded",
    max_refused_fraction: float = 0.0,
    max_length: int = MAX_LENGTH,
    token_types: Any = None,
    answer_format: str = "auto",
    cache_dir: Path | None = None,
    num_proc: int | None = None,
) -> tuple[Any, Any]:
    """The real ``build_datasets`` over these files (raises ``DataError`` on refused rows, or on
    untypeable train datasets when ``token_types`` (a ``custom.token_type_metrics`` section) is on)."""
    data = DataSection.model_validate(
        {
            "train": [str(p) for p in train],
            "val": [str(p) for p in val],
            "layout": layout,
            "max_refused_fraction": max_refused_fraction,
            "answer_format": answer_format,
            "cache_dir": None if cache_dir is None else str(cache_dir),
            **({} if num_proc is None else {"num_proc": num_proc}),
        }
    )
    return build_datasets(
        template(layout, max_length),
        data,
        packing_length=max_length,
        output_dir=output_dir,
        token_types=token_types,
    )


def dump_split(
    dataset: Any, mode: Literal["train", "eval"], out_dir: Path, *, batch_size: int = 4
) -> list[dict[str, Any]]:
    """Collate ``dataset`` with the real metrics collator and let a real monitor dump every batch
    (a NaN loss each step); the dumped records, in order. The monitor gets no label -> file map."""
    tpl = getattr(dataset, "template", None) or template()
    collator = build_dataset_metrics_collator(
        tpl, instability_monitor_cfg={"enabled": True, "max_meta_samples": 64}
    )
    monitor = InstabilityMonitor({"enabled": True, "dump_samples": True}, output_dir=out_dir)
    items = [dataset[i] for i in range(len(dataset))]
    for step, start in enumerate(range(0, len(items), batch_size)):
        batch = collator(items[start : start + batch_size])
        monitor.observe(
            StepObservation(
                mode=mode, global_step=step, loss=math.nan, meta_json=batch[INSTABILITY_META_JSON_KEY]
            )
        )
    dumps = sorted(p for p in monitor.dump_dir.glob(f"step_*_{mode}*.jsonl"))
    return [json.loads(line) for path in dumps for line in path.read_text(encoding="utf-8").splitlines()]


def assert_dumps_hold_their_rows(
    records: list[dict[str, Any]], written: Written, files: Sequence[Path]
) -> None:
    """Each dumped record is the batch's own row (its meta's sample_id), read at the file and line it
    was written to, and every row of ``files`` was dumped exactly once."""
    dumped = [r["sample_id"] for r in records]
    assert sorted(dumped) == sorted(written.ids_in(files)), "every row of the split dumped once, no other"
    for record in records:
        file, line, row = written.at[record["sample_id"]]
        assert (record["source_file"], record["source_line"]) == (file, line), record["sample_id"]
        assert record["source"] == row, record["sample_id"]
        assert record["base_idx"] == row.get("base_idx")  # the row's own field, informational only


def expect_refused(run: Callable[[], Any], output_dir: Path) -> tuple[DataError, list[dict[str, Any]]]:
    """Run ``run`` expecting a ``DataError``; the error and the refused-rows file's records."""
    try:
        run()
    except DataError as exc:
        summary = output_dir / REFUSED_ROWS_FILE
        records = [json.loads(line) for line in summary.read_text(encoding="utf-8").splitlines()]
        return exc, records
    raise AssertionError("expected a DataError")


# ---------------------------------------------------------------- scenarios (bad-input matrix rows)

Relabel = Callable[[dict[str, Any]], None] | None


def dump_scenario(
    tmp: Path,
    train: dict[str, Relabel],
    val: dict[str, Relabel] | None = None,
    *,
    blank_before: Iterable[int] = (),
    layout: str = "padded",
) -> None:
    """Write one file per entry (``name -> relabel``), encode, dump every train (and eval) batch and
    check each dump holds the rows of its own batch, from its own split's files."""
    written = Written()
    blanks = tuple(blank_before)

    def write(split: str, specs: dict[str, Relabel], first_seed: int) -> list[Path]:
        return [
            written.write(
                tmp / f"{name}.jsonl",
                demo_rows(6, split=split, seed=first_seed + k),
                relabel=relabel,
                blank_before=blanks,
            )
            for k, (name, relabel) in enumerate(specs.items())
        ]

    train_files = write("train", train, 0)
    val_files = write("val", val or {}, 100)
    run = tmp / "run"
    train_ds, val_ds = encode_splits(train_files, val_files, output_dir=run, layout=layout)
    assert_dumps_hold_their_rows(dump_split(train_ds, "train", run), written, train_files)
    if val_files:
        assert_dumps_hold_their_rows(dump_split(val_ds, "eval", run), written, val_files)
    assert not (run / REFUSED_ROWS_FILE).exists()


def refused_scenario(
    tmp: Path, name: str, bad: dict[int, dict[str, Any]], *, n: int = 5, max_refused_fraction: float = 0.0
) -> None:
    """Write ``n`` demo rows to ``<name>.jsonl`` with the rows at the indexes of ``bad`` replaced,
    encode them (raises the ``DataError`` it gets), and check the refused-rows file lists exactly
    the bad rows with their file:line and split."""
    rows = [bad.get(i, row) for i, row in enumerate(demo_rows(n))]
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run = tmp / "run"
    try:
        encode_splits([path], output_dir=run, max_refused_fraction=max_refused_fraction)
    finally:
        records = [json.loads(x) for x in (run / REFUSED_ROWS_FILE).read_text().splitlines()]
        assert [(r["file"], r["line"], r["split"]) for r in records] == [
            (str(path.resolve()), i + 1, "train") for i in sorted(bad)
        ]
        assert all(r["reason"] and "\n" not in r["reason"] for r in records)


def untyped_scenario(tmp: Path, name: str, answers: Sequence[str]) -> None:
    """Write one CoordJSON demo row per answer text to ``<name>.jsonl`` (no ``assistant_payload``),
    encode them with token types on (raises the ``DataError`` it gets: no train row can be typed),
    and check the untyped-rows file lists every row with its file:line."""
    rows = []
    for answer, row in zip(
        answers, make_rows("lvis", "train", len(answers), answer="coordjson"), strict=True
    ):
        row.pop("assistant_payload", None)
        rows.append({**row, "messages": [row["messages"][0], {"role": "assistant", "content": answer}]})
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run = tmp / "run"
    try:
        encode_splits([path], output_dir=run, token_types={"enabled": True, "include": ["lvis"]})
    finally:
        records = [json.loads(x) for x in (run / UNTYPED_ROWS_FILE).read_text().splitlines()]
        assert [(r["line"], r["kind"]) for r in records] == [(i + 1, "untyped") for i in range(len(rows))]


def label_via_metadata(label: str) -> Callable[[dict[str, Any]], None]:
    """A relabel: the row's label moves to ``metadata.dataset`` (no top-level ``dataset``)."""

    def relabel(row: dict[str, Any]) -> None:
        row.pop("dataset", None)
        row["metadata"] = {"dataset": label}

    return relabel


def too_long_row() -> dict[str, Any]:
    row = demo_rows(1)[0]
    row["messages"][0]["content"] = "teapot " * (2 * MAX_LENGTH)
    return row


def user_turn_only_row() -> dict[str, Any]:
    row = demo_rows(1)[0]
    row["messages"] = row["messages"][:1]
    return row


def out_of_range_coord_row() -> dict[str, Any]:
    row = demo_rows(1)[0]
    answer = row["messages"][1]["content"]
    first = answer.index("<|coord_")
    end = answer.index("|>", first) + 2
    row["messages"][1]["content"] = answer[:first] + "<|coord_1555|>" + answer[end:]
    return row


def cli_stop_line(tmp_path: Path, config: dict[str, Any]) -> str:
    """Run ``python -m coordexp train`` on ``config`` (written to ``tmp_path/train.yaml``, run from
    ``tmp_path``) and return its one error line; asserts exit 2, no traceback, and that the line
    is the last thing printed."""
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "coordexp", "train", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("coordexp train:")]
    assert len(ours) == 1 and proc.stderr.rstrip().endswith(ours[0]), proc.stderr[-3000:]
    return ours[0]
