"""Sample dumps from real ms-swift runs hold the rows of their own batches, train and eval alike.

One run per layout (padded, packing) over files laid out to break every lookup but the right one:
an upper-case label, a label given only in ``metadata.dataset``, one label over two files, rows whose
own ``base_idx`` disagrees with their position in a file with blank lines, and eval files that share
a label with the train files. The monitor's logit threshold is set so low that every step (train
and eval) dumps its batch; one epoch passes every row, so each row must be dumped exactly once, read
at the file and line it was written to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.launch import build_trainer, parse_config
from coordexp.launch.run import demo_config
from coordexp.rows.fields import SOURCE_FILE_KEY, SOURCE_LINE_KEY
from tests.data import support

pytestmark = pytest.mark.slow


def _layout(tmp_path: Path) -> tuple[support.Written, list[Path], list[Path]]:
    written = support.Written()
    reverse = (0, 3)  # blank lines before these rows

    def write(name: str, split: str, seed: int, relabel: support.Relabel) -> Path:
        rows = support.demo_rows(4, split=split, seed=seed)
        return written.write(tmp_path / f"{name}.jsonl", rows, relabel=relabel, blank_before=reverse)

    def misleading(label: str) -> support.Relabel:
        def relabel(row: dict[str, Any]) -> None:
            row["dataset"] = label
            row["base_idx"] = 3 - row["base_idx"]  # the row's own field, not where it is

        return relabel

    train = [
        write("upper", "train", 1, misleading("LVIS")),
        write("via_metadata", "train", 2, support.label_via_metadata("coco")),
        write("part_a", "train", 3, misleading("o365")),
        write("part_b", "train", 4, misleading("o365")),
    ]
    val = [
        write("val_upper", "val", 5, misleading("LVIS")),  # same label as a train file
        write("val_metadata", "val", 6, support.label_via_metadata("coco")),
    ]
    return written, train, val


def _dumped(run_dir: Path, mode: str) -> list[dict[str, Any]]:
    paths = sorted((run_dir / "instability_dumps").glob(f"step_*_{mode}*.jsonl"))
    return [json.loads(line) for p in paths for line in p.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("layout", ["padded", "packing"])
def test_every_dump_holds_its_own_rows(layout: str, tmp_path: Path) -> None:
    written, train_files, val_files = _layout(tmp_path)
    raw = demo_config(support.demo_assets().root.parent).model_dump()
    raw["data"] = {
        "train": [str(p) for p in train_files],
        "val": [str(p) for p in val_files],
        "layout": layout,
    }
    raw["training"].update(
        output_dir=str(tmp_path / "run"),
        max_steps=-1,
        num_train_epochs=1,  # every train row once
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        gradient_accumulation_steps=1,
        eval_strategy="no",  # one evaluation, at the end: every eval row once
        save_strategy="no",
        logging_steps=1,
    )
    raw["custom"]["instability_monitor"] = {
        "enabled": True,
        "dump_samples": True,
        "guard": {"enabled": False, "max_abs_logit": 1e-6},
    }
    raw["custom"]["contracts"] = {"mode": "strict"}
    trainer = build_trainer(parse_config(raw))
    seen: list[set[str]] = []

    def record_inputs(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(set(kwargs))

    trainer.model.register_forward_pre_hook(record_inputs, with_kwargs=True)
    trainer.train()
    trainer.evaluate()

    run_dir = Path(trainer.args.output_dir)
    support.assert_dumps_hold_their_rows(_dumped(run_dir, "train"), written, train_files)
    support.assert_dumps_hold_their_rows(_dumped(run_dir, "eval"), written, val_files)
    assert seen and not any(keys & {SOURCE_FILE_KEY, SOURCE_LINE_KEY} for keys in seen)
