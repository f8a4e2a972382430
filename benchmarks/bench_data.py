"""Start-up time and peak memory of the data loader as the row count grows (text and Qwen3-VL rows).

    python -m benchmarks.bench_data [--text-rows 1000,10000,100000] [--vl-rows 400,4000,20000]
        [--vl-decode-rows 4000] [--num-proc 1,2] [--json OUT.json] [--markdown OUT.md] [--work DIR]

Rows are generated: text rows are the text demo's rows (the demo tokenizer, ``max_length`` 512);
VL rows are the VL demo's rows, each pointing at one of 8 generated photo-like JPEGs (noise and
shapes, as hard to decode as a photo) of the sizes COCO and LVIS images have (640x480, 480x640,
640x427, ...; the tiny Qwen3-VL processor). The VL cases run with ``data.image_check: header`` (the
default: the pre-pass reads each image's size from its header) and, at ``--vl-decode-rows``, with
``decode`` (every image decoded, resized and processed in the pre-pass, as training does), for
comparison. Run it with the ``vl`` extra's Python for the VL cases (they are skipped, and said so,
without it).

Each case runs in a fresh subprocess with a fresh cache folder: load the processor and template,
``build_datasets`` (the pre-pass in ``--num-proc`` processes, then the cache write), then the first
batch (``per_device_train_batch_size`` 4 rows encoded by the lazy dataset). A "second start" reruns the
largest ``num_proc`` case on the same cache. Measured:

- ``startup_s``: from before the template load to the first batch; ``index_s``: ``build_datasets``
  alone (scan, pre-pass or cache read, refused-rows check);
- ``peak_pss_mb``: the peak proportional set size of the process tree (the case's process and its
  pre-pass workers), sampled every 100 ms from /proc (PSS, not RSS: forked workers share their
  parent's pages, and RSS would count those once per process);
- ``peak_rss_mb``: the case process's own peak RSS (``ru_maxrss``), comparable to the issue's table.

The targets (2 cores) are checked and written with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report_files import machine, write_report

VL_SIZES = [(640, 480), (480, 640), (640, 427), (500, 375), (640, 360), (427, 640), (612, 612), (640, 512)]
BATCH = 4


# ---------------------------------------------------------------- the data


def _text_rows(path: Path, n: int) -> None:
    from coordexp.demo.dataset import make_rows, write_jsonl

    write_jsonl(path, make_rows("lvis", "train", n, seed=0))


def _vl_rows(path: Path, n: int, template_rows: Path) -> None:
    """``n`` VL demo rows, cycling through the demo's answers, each pointing at one of the
    ``VL_SIZES`` JPEGs (drawn once per folder)."""
    import numpy as np
    from PIL import Image, ImageDraw

    images = path.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(VL_SIZES):
        noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) // 2 + np.uint8(40 + 10 * k)
        image = Image.fromarray(noise, "RGB")
        ImageDraw.Draw(image).rectangle((40 * k, 30 * k, 40 * k + 200, 30 * k + 150), fill=(230, 200, 30))
        image.save(images / f"img{k}.jpg", format="JPEG", quality=90)
    sources = [json.loads(line) for line in template_rows.read_text(encoding="utf-8").splitlines()]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            row = dict(
                sources[i % len(sources)], images=[f"images/img{i % len(VL_SIZES)}.jpg"], sample_id=f"vl-{i}"
            )
            handle.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------- one case (in its own process)


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    import swift

    from coordexp.launch.config import DataSection
    from coordexp.rows.datasets import build_datasets

    _, processor = swift.get_model_processor(
        case["model_dir"], model_type=case["model_type"], load_model=False
    )
    template = swift.get_template(processor, template_type=case["template_type"], max_length=512)
    template.set_mode("train")
    data = DataSection.model_validate(
        # (a few generated rows encode past max_length 512: refused and listed, as in a real run)
        {
            "train": [case["data"]],
            "num_proc": case["num_proc"],
            "cache_dir": case["cache_dir"],
            "image_check": case.get("image_check", "header"),
            "max_refused_fraction": 0.01,
        }
    )
    begin = time.perf_counter()
    train, _ = build_datasets(template, data, packing_length=512, output_dir=Path(case["cache_dir"]) / "run")
    index_s = time.perf_counter() - begin
    batch = [train[i] for i in range(min(BATCH, len(train)))]
    startup_s = time.perf_counter() - start
    return {
        "rows": len(train),
        "batch_rows": len(batch),
        "index_s": index_s,
        "startup_s": startup_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------- measuring a case's process tree


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return pids


def _pss_mb(pids: Sequence[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            pass  # the process ended between the listing and the read
    return total / 1024


def measure(case: dict[str, Any]) -> dict[str, Any]:
    """Run ``case`` in a fresh process; its result plus the peak PSS of its process tree."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.bench_data", "--case", json.dumps(case)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _pss_mb(_tree(proc.pid)))
            time.sleep(0.1)  # reading smaps_rollup costs CPU the case would lose

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_pss_mb"] = peak[0]
    return result


# ---------------------------------------------------------------- the cases and the targets


def _assets(work: Path, kind: str) -> Any:
    from coordexp.demo.build import build_demo_assets

    return build_demo_assets(work / f"assets_{kind}", seed=0, kind=kind)  # type: ignore[arg-type]


def run_cases(
    work: Path, kind: str, sizes: Sequence[int], procs: Sequence[int], decode: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Each size's cases; for VL, the sizes in ``decode`` also with ``data.image_check: decode``."""
    assets = _assets(work, kind)
    results = []
    for n in sizes:
        data = work / f"{kind}_{n}" / "rows.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            _text_rows(data, n)
        else:
            _vl_rows(data, n, assets.train_files[0])
        base = {
            "model_dir": str(assets.model_dir),
            "model_type": assets.model_type,
            "template_type": assets.template_type,
            "data": str(data),
        }
        checks = ["header", "decode"] if kind == "vl" and n in decode else ["header"]
        for check in checks:
            for num_proc in procs:
                cache = work / f"cache_{kind}_{n}_{num_proc}_{check}"
                shutil.rmtree(cache, ignore_errors=True)
                case = {**base, "num_proc": num_proc, "cache_dir": str(cache), "image_check": check}
                results.append(_result(kind, n, num_proc, "first", check, measure(case)))
                print(_line(results[-1]), flush=True)
        cache = work / f"cache_{kind}_{n}_{max(procs)}_header"
        case = {**base, "num_proc": max(procs), "cache_dir": str(cache), "image_check": "header"}
        results.append(_result(kind, n, max(procs), "second", "header", measure(case)))
        print(_line(results[-1]), flush=True)
    return results


def _result(
    kind: str, n: int, num_proc: int, start: str, check: str, measured: dict[str, Any]
) -> dict[str, Any]:
    image_check = check if kind == "vl" else "-"
    return {
        "kind": kind,
        "rows_written": n,
        "num_proc": num_proc,
        "start": start,
        "image_check": image_check,
        **measured,
    }


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['kind']:>4} {r['rows_written']:>7,} rows  num_proc {r['num_proc']}  {r['start']:<6}  "
        f"images {r.get('image_check', '-'):<6}  "
        f"start-up {r['startup_s']:6.1f} s  index {r['index_s']:6.1f} s  "
        f"peak PSS {r['peak_pss_mb']:7.0f} MB  peak RSS {r['peak_rss_mb']:6.0f} MB"
    )


def _find(
    results: list[dict[str, Any]], kind: str, n: int, num_proc: int, start: str, check: str = "header"
) -> dict[str, Any] | None:
    """The case, with images measured from their headers (the default) unless ``check`` says."""
    want = (kind, n, num_proc, start, check if kind == "vl" else "-")
    for r in results:
        if (r["kind"], r["rows_written"], r["num_proc"], r["start"], r.get("image_check", "-")) == want:
            return r
    return None


def check_targets(
    results: list[dict[str, Any]], text: Sequence[int], vl: Sequence[int], procs: Sequence[int]
) -> list[dict[str, Any]]:
    """Each target with the measured figure and whether it is met (None: not measured)."""
    targets: list[dict[str, Any]] = []
    one, most = min(procs), max(procs)
    if len(text) >= 2:
        lo, hi = (
            _find(results, "text", min(text), one, "first"),
            _find(results, "text", max(text), one, "first"),
        )
        if lo and hi:
            # one process (num_proc 1): its peak RSS is the tree's; PSS would move with whatever
            # other processes map the same libraries
            growth = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / ((max(text) - min(text)) / 100_000)
            targets.append(
                {
                    "target": "text: peak RSS growth <= 50 MB per 100k rows (num_proc 1)",
                    "value": f"{growth:.1f} MB per 100k",
                    "met": growth <= 50,
                }
            )
    if len(vl) >= 2:
        lo, hi = _find(results, "vl", min(vl), one, "first"), _find(results, "vl", max(vl), one, "first")
        if lo and hi:
            diff = hi["peak_rss_mb"] - lo["peak_rss_mb"]
            targets.append(
                {
                    "target": f"vl: peak RSS within 200 MB from {min(vl):,} to {max(vl):,} rows (num_proc 1)",
                    "value": f"{diff:+.0f} MB",
                    "met": abs(diff) <= 200,
                }
            )
    for kind, sizes in (("text", text), ("vl", vl)):
        if not sizes or one == most:
            continue
        n = max(sizes)
        a, b = _find(results, kind, n, one, "first"), _find(results, kind, n, most, "first")
        if a and b:
            ratio = a["index_s"] / b["index_s"]
            targets.append(
                {
                    "target": f"{kind} {n:,} rows: pre-pass >= 1.6x faster with {most} processes than {one}",
                    "value": f"{ratio:.2f}x",
                    "met": ratio >= 1.6,
                }
            )
        c = _find(results, kind, n, most, "second")
        if b and c:
            ratio = b["index_s"] / c["index_s"]
            whole = b["startup_s"] / c["startup_s"]
            targets.append(
                {
                    "target": f"{kind} {n:,} rows: second start >= 5x faster (cache)",
                    "value": f"{ratio:.1f}x (build_datasets); {whole:.1f}x with imports, processor",
                    "met": ratio >= 5,
                }
            )
    for n in sorted({r["rows_written"] for r in results if r.get("image_check") == "decode"}):
        for procs_ in sorted({one, most}):
            a, b = (
                _find(results, "vl", n, procs_, "first", "decode"),
                _find(results, "vl", n, procs_, "first"),
            )
            if a and b:
                targets.append(
                    {
                        "target": f"(no target) vl {n:,} rows, {procs_} process(es): pre-pass with "
                        f"image_check header vs decode",
                        "value": f"{a['index_s'] / b['index_s']:.1f}x faster",
                        "met": None,
                    }
                )
    return targets


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Data loader: start-up time and peak memory",
        "",
        f"{report['machine']}; {report['note']}",
        "",
        "Parallel ceiling (pure-Python work in {} forked processes vs one, before / after the cases): "
        "{:.2f}x / {:.2f}x.".format(
            max(r["num_proc"] for r in report["results"]), *report["parallel_ceiling"]
        ),
        "",
        "| kind | rows | image_check | num_proc | start | start-up (s) | build_datasets (s) "
        "| peak PSS, tree (MB) | peak RSS, main (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['kind']} | {r['rows_written']:,} | {r.get('image_check', '-')} | {r['num_proc']} | "
            f"{r['start']} | "
            f"{r['startup_s']:.1f} | {r['index_s']:.2f} | {r['peak_pss_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    met = {True: "yes", False: "no", None: "-"}
    lines += [f"| {t['target']} | {t['value']} | {met[t['met']]} |" for t in report["targets"]]
    return "\n".join(lines) + "\n"


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_ceiling(processes: int, n: int = 10_000_000) -> float:
    """How much faster ``processes`` forked processes run pure-Python work than one, on this
    machine now: the ceiling of the pre-pass speed-up (below ``processes`` when the cores are shared)."""
    import multiprocessing

    start = time.perf_counter()
    for _ in range(processes):
        _burn(n)
    serial = time.perf_counter() - start
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        start = time.perf_counter()
        pool.map(_burn, [n] * processes)
        parallel = time.perf_counter() - start
    return serial / parallel


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--text-rows", default="1000,10000,100000")
    parser.add_argument("--vl-rows", default="400,4000,20000")
    parser.add_argument("--vl-decode-rows", default="4000", help="VL sizes also run with image_check decode")
    parser.add_argument("--num-proc", default="1,2")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--work", type=Path, help="folder for the generated data (default: a temporary one)")
    parser.add_argument(
        "--note", default="", help="a note written with the results (e.g. the machine's load)"
    )
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(_run_case(json.loads(args.case))))
        return 0
    from coordexp.launch.vl_support import missing_vl_dependency

    text, vl, procs = _sizes(args.text_rows), _sizes(args.vl_rows), _sizes(args.num_proc)
    missing = missing_vl_dependency() if vl else None
    if missing:
        print(f"VL cases skipped: {missing}")
        vl = []
    work = args.work or Path(tempfile.mkdtemp(prefix="coordexp-bench-data-"))
    ceiling_before = parallel_ceiling(max(procs)) if max(procs) > 1 else 1.0
    try:
        results = run_cases(work, "text", text, procs) if text else []
        results += run_cases(work, "vl", vl, procs, _sizes(args.vl_decode_rows)) if vl else []
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {
        "machine": machine(),
        "note": args.note or "no note",
        "results": results,
        "targets": check_targets(results, text, vl, procs),
        "vl_skipped": missing,
        # measured before and after the cases: a pre-pass speed-up cannot exceed it
        "parallel_ceiling": [ceiling_before, parallel_ceiling(max(procs)) if max(procs) > 1 else 1.0],
    }
    print("parallel ceiling before / after: {:.2f}x / {:.2f}x".format(*report["parallel_ceiling"]))
    for t in report["targets"]:
        print(
            f"{ {True: 'MET    ', False: 'NOT MET', None: '       '}[t['met']] } {t['target']}: {t['value']}"
        )
    write_report(report, args.json, args.markdown, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
