"""``coordexp report RUN_DIR``: plot a run's loss composition and diagnostics, and dump the numbers.

The logs hold ~50 keys per step; reading them as JSON lines does not show whether the coord terms
dominate the loss or whether the coord-vocabulary mass collapses. One PNG with one panel per
catalog group (the groups and the "in loss" flags come from the catalog, so a new key lands in the
right panel without touching this file) and a CSV (one row per step, train and eval columns) for
anything else.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordexp.cli.run_dir import parse_run_args, read_run_or_say_why, run_dir_parser
from coordexp.contracts.catalog import EVAL_PREFIX
from coordexp.generated import metric_keys as K
from coordexp.generated.metric_catalog import KEYS_BY_GROUP, METRIC_SPECS
from coordexp.run_folder.reader import LogRecord, RunLogs

__all__ = [
    "MetricTable",
    "Panel",
    "build_table",
    "main",
    "panels_for",
    "write_csv",
    "write_png",
]

PNG_NAME = "coordexp_report.png"
CSV_NAME = "coordexp_report.csv"
STEP_COLUMN = "step"
# Groups not plotted: the framework's bookkeeping, and deprecated aliases (duplicates of coord_diag).
_SKIPPED_GROUPS = frozenset({"framework", "legacy"})
# Framework keys shown first in the CSV, in this order; catalog order follows.
_LEADING = (K.LOSS, K.GRAD_NORM, K.LEARNING_RATE, K.TOKEN_ACC, K.EPOCH)
_CATALOG_ORDER = {key: i for i, key in enumerate(dict.fromkeys((*_LEADING, *METRIC_SPECS)))}


def _rank(column: str) -> tuple[int, int, str]:
    """Train columns before eval ones, each in catalog order, unknown keys last."""
    is_eval = column.startswith(EVAL_PREFIX) and column not in _CATALOG_ORDER
    base = column[len(EVAL_PREFIX) :] if is_eval else column
    return int(is_eval), _CATALOG_ORDER.get(base, len(_CATALOG_ORDER)), base


@dataclass
class MetricTable:
    """Numbers per step: ``rows[step][column]``; eval columns carry the ``eval_`` prefix."""

    source: str
    columns: list[str]
    rows: dict[int, dict[str, float]]

    def series(self, column: str) -> tuple[list[int], list[float]]:
        steps = [s for s in sorted(self.rows) if column in self.rows[s]]
        return steps, [self.rows[s][column] for s in steps]


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_table(records: Iterable[LogRecord], source: str) -> MetricTable:
    """Train and eval records of one source as a step table (the end-of-run summary is left out).

    A record without a step (no progress field) is placed at its record index.
    """
    rows: dict[int, dict[str, float]] = {}
    for record in records:
        if record.mode == "summary":
            continue
        step = record.step if record.step is not None else record.index
        row = rows.setdefault(step, {})
        for key, value in record.values.items():
            if key == K.STEP or not _numeric(value):
                continue
            if record.mode == "eval" and not key.startswith(EVAL_PREFIX):
                continue  # epoch repeats the train row's value
            row[key] = float(value)  # type: ignore[arg-type]
    columns = sorted({c for row in rows.values() for c in row}, key=_rank)
    return MetricTable(source, columns, {s: rows[s] for s in sorted(rows) if rows[s]})


def write_csv(table: MetricTable, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([STEP_COLUMN, *table.columns])
        for step, row in table.rows.items():
            writer.writerow([step, *(repr(row[c]) if c in row else "" for c in table.columns)])


@dataclass(frozen=True)
class Panel:
    """One subplot: a title and the train keys it shows (eval twins are drawn dashed)."""

    title: str
    keys: tuple[str, ...]
    log_scale: bool = False


def _catalog_sorted(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: _CATALOG_ORDER.get(k, len(_CATALOG_ORDER)))


def _loss_keys() -> list[str]:
    """``loss`` and the catalog keys that are (or may be) part of the optimised objective."""
    in_loss = [
        k
        for group in ("base_ce", "coord_diag", "bbox_geo", "bbox_size_aux")
        for k in _catalog_sorted(KEYS_BY_GROUP.get(group, ()))
        if METRIC_SPECS[k].in_loss != "no"
    ]
    return [K.LOSS, *in_loss]


def _group_order() -> list[str]:
    seen: dict[str, None] = {}
    for spec in METRIC_SPECS.values():
        if spec.group not in _SKIPPED_GROUPS:
            seen.setdefault(spec.group, None)
    return list(seen)


_DETECTION_GROUP = "detection"
_DETECTION_HEADLINES = (
    "det_bbox_AP",
    "det_bbox_AP50",
    "det_bbox_AP75",
    "det_bbox_AR100",
    "det_parse_valid_rate",
)


def _headline(key: str) -> bool:
    return key in _DETECTION_HEADLINES or key.endswith(("_f1_full_micro", "_f1_loc_micro"))


def panels_for(table: MetricTable) -> list[Panel]:
    """The loss composition, then each catalog group split into [0, 1] keys and scale keys.

    Panels without any logged key are skipped (a run without token metrics has no token panels).
    """
    present = {c.removeprefix(EVAL_PREFIX) for c in table.columns} | set(table.columns)
    loss = _loss_keys()
    candidates = [Panel("loss composition (loss = base_ce + coord_diag terms)", tuple(loss))]
    for group in _group_order():
        keys = [k for k in _catalog_sorted(KEYS_BY_GROUP[group]) if k not in loss]
        if group == _DETECTION_GROUP:  # ~90 keys: the ones a checkpoint is picked by (the CSV has all)
            candidates.append(Panel("detection (eval)", tuple(k for k in keys if _headline(k))))
            continue
        if group == "token_acc":
            keys.insert(0, K.TOKEN_ACC)  # ms-swift's own top-1 accuracy sits best next to ours
        bounded = [k for k in keys if METRIC_SPECS[k].minimum == 0 and METRIC_SPECS[k].maximum == 1]
        signed = [k for k in keys if METRIC_SPECS[k].minimum == -1 and METRIC_SPECS[k].maximum == 1]
        scale = [k for k in keys if k not in bounded and k not in signed]
        if signed:  # cosines (gradmon/cos_to_total/*): their own linear [-1, 1] panel
            candidates.append(Panel(f"{group} [-1, 1]", tuple(signed)))
        if bounded and scale:
            candidates.append(Panel(f"{group} [0, 1]", tuple(bounded)))
            candidates.append(Panel(f"{group} (scale)", tuple(scale), log_scale=True))
        else:
            candidates.append(Panel(group, tuple(keys), log_scale=bool(scale) and len(scale) > 1))
    out = []
    for panel in candidates:
        shown = tuple(k for k in panel.keys if k in present)
        if shown:
            out.append(Panel(panel.title, shown, panel.log_scale))
    return out


def _eval_column(key: str) -> str:
    return key if key.startswith(EVAL_PREFIX) else EVAL_PREFIX + key


def _scale_axis(ax: Any, values: list[float]) -> None:
    """Log y for keys of different magnitudes; symlog when a series touches 0 (a warmup LR of 0)."""
    positive = [v for v in values if v > 0]
    if not positive or any(v < 0 for v in values):
        return
    if len(positive) == len(values):
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=min(positive))


def write_png(table: MetricTable, path: Path, title: str) -> int:
    """Draw the panels (Agg, no pyplot state); returns how many were drawn."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = panels_for(table)
    if not panels:
        return 0
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(7.0 * ncols, 3.6 * nrows), dpi=100, layout="constrained")
    fig.suptitle(f"{title}   (solid: train, dashed + markers: eval)", fontsize=11)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn: list[float] = []
        for i, key in enumerate(panel.keys):
            color, labelled = f"C{i % 10}", False
            for column, style in ((key, {}), (_eval_column(key), {"linestyle": "--", "marker": "o"})):
                steps, values = table.series(column)
                if not steps:
                    continue
                values = [v if math.isfinite(v) else math.nan for v in values]
                drawn += [v for v in values if not math.isnan(v)]
                # one legend entry per key: the eval twin shares the colour (and says so in the title)
                label = None if labelled else key
                labelled = True
                ax.plot(steps, values, color=color, label=label, linewidth=1.2, markersize=3, **style)
        if panel.log_scale:
            _scale_axis(ax, drawn)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if len(panel.keys) > 6 else 1, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.savefig(path)
    return len(panels)


def _table_of(logs: RunLogs) -> MetricTable | None:
    source = logs.preferred_source()
    if source is None:
        return None
    table = build_table(logs.records_from(source), source)
    return table if table.rows else None


def build_parser() -> argparse.ArgumentParser:
    parser = run_dir_parser(
        "report",
        "Plot a run's loss composition, coord diagnostics and token accuracies (PNG) and write its "
        "per-step numbers (CSV).",
    )
    parser.add_argument("--out", help="output folder (default: RUN_DIR)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_run_args(build_parser(), argv)
    print(f"coordexp report: reading {args.run_dir}")
    logs = read_run_or_say_why("report", args.run_dir)
    if logs is None:
        return 2
    for problem in logs.problems:
        print(f"coordexp report: note: {problem.source}#{problem.index}: {problem.message}")
    table = _table_of(logs)
    if table is None:
        print(f"coordexp report: error: no train or eval metric records in {args.run_dir}", file=sys.stderr)
        return 2
    print(f"coordexp report: {len(table.rows)} steps, {len(table.columns)} columns from {table.source}")
    out_dir = Path(args.out) if args.out else Path(args.run_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        png, csv_path = out_dir / PNG_NAME, out_dir / CSV_NAME
        write_csv(table, csv_path)
        drawn = write_png(table, png, title=f"coordexp report: {Path(args.run_dir).resolve().name}")
    except OSError as exc:
        print(f"coordexp report: error: cannot write to {out_dir}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {csv_path}")
    if drawn:
        print(f"wrote {png} ({drawn} panels)")
    else:
        print("coordexp report: note: no catalog key to plot; PNG not written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
