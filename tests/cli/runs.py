"""Synthetic ms-swift run folders shaped like the probe's (docs/ms-swift-probe.md, section b).

A run is built as a list of logical records first, so a test can break one of them, and only then
written to every source: ``logging.jsonl`` (records + swift's progress fields, no ``step``),
``trainer_state.json`` (``log_history``: records + ``step``) and a real TensorBoard event file
(``train/x`` / ``eval/x`` tags, text summaries as the HF callback writes them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coordexp.contracts import keys_written_under
from coordexp.generated.metric_catalog import METRIC_SPECS, TRAIN_ONLY_KEYS

FULL_CUSTOM: dict[str, Any] = {
    "coord_soft_ce_w1": {"enabled": True, "gate_weight": 1.0, "text_gate_weight": 0.1},
    "token_type_metrics": {"enabled": True, "include": ["lvis"]},
    "contracts": {"mode": "strict"},
    "bbox_geo": {"enabled": True, "smoothl1_weight": 0.5, "ciou_weight": 1.0},
    "bbox_size_aux": {
        "enabled": True,
        "log_wh_weight": 0.05,
        "oversize_penalty_weight": 0.0,
        "oversize_area_frac_threshold": None,
        "oversize_log_w_threshold": None,
        "oversize_log_h_threshold": None,
        "eps": 1e-6,
    },
}
ALL_CONDITIONS = (
    "runtime",
    "coord_loss",
    "coord_diag",
    "coord_gate",
    "token_metrics",
    "token_top5",
    "coord_monitor_mass",
    "coord_vocab",
    "supervised",
    "coord_targets",
    "noncoord_targets",
    "repulsion_applied",
    "token_types",
    "desc_targets",
    "format_targets",
    "text_gate",
    "bbox_geo",
    "bbox_size_aux",
    "coord_soft_ce_term",
    "coord_w1_term",
)
RUN_KEYS = keys_written_under(ALL_CONDITIONS)
"""the keys of the clean run: every catalog key but the adjacent repulsion's (off here; its batch
condition ``repulsion_applied`` is assumed like every batch condition) and the gradient monitor's
(off here; see test_grad_monitor_keys_are_train_only)"""


@dataclass
class Rec:
    """One logical record: ``mode`` in train / eval / summary, ``step``, and its values."""

    mode: str
    step: int
    values: dict[str, Any] = field(default_factory=dict)


def value_for(key: str, step: int) -> float:
    """A plausible in-range value that moves with the step (so the report has lines to draw)."""
    spec = METRIC_SPECS[key]
    if key == "coord_diag/enabled":
        return 1.0
    if spec.maximum == 1:
        return round(0.2 + 0.15 * step, 4) if step <= 4 else 0.8
    if spec.unit in ("steps",):
        return 2.0
    if spec.unit.startswith("tokens"):
        return 100.0 + step
    if key == "learning_rate":
        return 1e-4 * (1 - step / 10)
    return round(3.0 / step, 4)


def build_records(
    keys: frozenset[str], *, steps: int = 4, eval_every: int = 2, max_steps: int = 4
) -> list[Rec]:
    """Train records at every step, eval records every ``eval_every`` steps, the final summary."""
    out: list[Rec] = []
    for step in range(1, steps + 1):
        train: dict[str, Any] = {"loss": 4.0 / step, "grad_norm": 1.5, "learning_rate": 1e-4}
        for key in sorted(keys):
            train[key] = value_for(key, step)
        train["token_acc"] = 0.1 * step
        train["epoch"] = step / max_steps
        out.append(Rec("train", step, train))
        if eval_every and step % eval_every == 0:
            ev: dict[str, Any] = {
                "eval_loss": 4.2 / step,
                "eval_runtime": 0.2,
                "eval_samples_per_second": 40.0,
                "eval_steps_per_second": 10.0,
            }
            for key in sorted(keys - TRAIN_ONLY_KEYS):  # the gradient monitor's keys need a gradient
                scale = 1.0 if METRIC_SPECS[key].maximum == 1 else 1.05
                ev["eval_" + key] = value_for(key, step) * scale
            ev["eval_token_acc"] = 0.09 * step
            ev["epoch"] = step / max_steps
            out.append(Rec("eval", step, ev))
    summary = {
        "train_runtime": 1.3,
        "train_samples_per_second": 12.0,
        "train_steps_per_second": 3.0,
        "total_flos": 1234.0,
        "train_loss": 2.1,
        "epoch": 1.0,
    }
    out.append(Rec("summary", steps, summary))
    return out


def _progress(step: int, max_steps: int) -> dict[str, Any]:
    return {
        "global_step/max_steps": f"{step}/{max_steps}",
        "elapsed_time": f"{step}s",
        "remaining_time": f"{max_steps - step}s",
        "train_speed(s/it)": 0.31,
    }


def write_jsonl(run: Path, records: list[Rec], max_steps: int = 4) -> None:
    lines = [json.dumps({**r.values, **_progress(r.step, max_steps)}) for r in records]
    (run / "logging.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_trainer_state(path: Path, records: list[Rec]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    history = [{**r.values, "step": r.step} for r in records]
    path.write_text(json.dumps({"global_step": 4, "log_history": history}), encoding="utf-8")


def write_tensorboard(run: Path, records: list[Rec]) -> Path:
    """A real event file, tags as HF's TensorBoardCallback rewrites them."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = run / "runs" / "Nov26_03-00-00_host"
    writer = SummaryWriter(log_dir=str(log_dir))
    writer.add_text("args", "{'output_dir': '...'}")
    for r in records:
        for key, value in r.values.items():
            if not isinstance(value, int | float):
                continue
            tag = "eval/" + key[len("eval_") :] if key.startswith("eval_") else "train/" + key
            writer.add_scalar(tag, value, r.step)
    writer.close()
    return log_dir


def write_data(root: Path) -> tuple[list[str], list[str]]:
    """Two tiny data files with rows labelled lvis and coco (the demo's layout)."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {"train": [], "val": []}
    for split in files:
        for label in ("lvis", "coco"):
            path = root / f"{split}_{label}.jsonl"
            rows = [{"messages": [], "dataset": label, "base_idx": i} for i in range(3)]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            files[split].append(str(path))
    return files["train"], files["val"]


def write_config(run: Path, custom: dict[str, Any] | None, *, val: bool = True) -> Path:
    train, val_files = write_data(run.parent / f"{run.name}_data")
    cfg = {
        "model": {"path": "/models/demo", "model_type": "qwen3"},
        "data": {"train": train, "val": val_files if val else [], "layout": "padded"},
        "training": {"output_dir": str(run), "max_steps": 4, "eval_steps": 2},
        "custom": custom or {},
        "seed": 0,
    }
    path = run / "coordexp_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def make_run(
    root: Path,
    *,
    custom: dict[str, Any] | None = None,
    conditions: tuple[str, ...] = ALL_CONDITIONS,
    mutate: Callable[[list[Rec]], None] | None = None,
    jsonl: bool = True,
    trainer_state: bool = True,
    tensorboard: bool = True,
    config: bool = True,
    eval_every: int = 2,
) -> Path:
    """A run folder whose logs hold exactly the keys the catalog writes under ``conditions``."""
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    records = build_records(keys_written_under(conditions), eval_every=eval_every)
    if mutate is not None:
        mutate(records)
    if jsonl:
        write_jsonl(run, records)
    if trainer_state:
        write_trainer_state(run / "checkpoint-4" / "trainer_state.json", records)
    if tensorboard:
        write_tensorboard(run, records)
    if config:
        write_config(run, FULL_CUSTOM if custom is None else custom, val=bool(eval_every))
    return run
