"""The cost of one detection evaluation per image on CPU, generation against scoring.

    python -m benchmarks.bench_detection_eval [--rows 16] [--max-new-tokens 64,256] [--batch-size 4]
        [--json OUT.json] [--markdown OUT.md]

On the text demo model (a tiny Qwen3; ``--kind vl`` for the tiny Qwen3-VL with its 640x480 images),
the first ``--rows`` val rows: the time of :func:`coordexp.detection.generate.generate_answers`
(ms-swift's inference engine, greedy, the demo's untrained model, so most answers run to
``max_new_tokens``), then of :func:`coordexp.detection.metrics.detection_metrics` on those answers
(``metrics: both``, constant and ``coord_logprob`` scores), and, to see scoring of real boxes,
of the same scoring on the rows' own answers. Figures per image; the generation's per token too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report_files import machine, write_report


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(kind: str, rows: int, max_new_tokens: Sequence[int], batch_size: int) -> dict[str, Any]:
    import swift
    import torch

    from coordexp.detection.evaluation import DetectionEvaluator, evaluation_rows
    from coordexp.detection.generate import generate_answers
    from coordexp.detection.metrics import EvalSample, detection_metrics
    from coordexp.launch import demo_config
    from coordexp.launch.config import DataSection
    from coordexp.rows.data import answer_texts
    from coordexp.rows.datasets import build_datasets

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = Path(tempfile.mkdtemp(prefix="coordexp-bench-det-"))
    cfg = demo_config(work, kind=kind)  # type: ignore[arg-type]
    model, processor = swift.get_model_processor(cfg.model.path, model_type=cfg.model.model_type)
    template = swift.get_template(
        processor, template_type=cfg.model.template, max_length=cfg.model.max_length
    )
    template.set_mode("train")
    if getattr(template, "use_model", False):
        template.model = model
    data = DataSection.model_validate(
        {"train": cfg.data.val, "val": cfg.data.val, "cache_dir": str(work / "cache")}
    )
    _, val = build_datasets(template, data, packing_length=512, output_dir=work / "run")
    eval_rows = evaluation_rows(val, rows)
    pairs = [(k, r.row) for k, r in enumerate(eval_rows)]
    results = []
    for tokens in max_new_tokens:
        settings = _cfg("constant", batch_size=batch_size, max_new_tokens=tokens)
        generate_answers(model, template, pairs[:batch_size], settings)  # warm-up
        start = time.perf_counter()
        answers = generate_answers(model, template, pairs, settings)
        gen_s = time.perf_counter() - start
        generated = sum(len(a.token_ids) for a in answers)
        scoring = {}
        for mode in ("constant", "coord_logprob"):
            evaluator = DetectionEvaluator(_cfg(mode), eval_rows, work / "run")  # its _sample: token spans
            start = time.perf_counter()
            samples = [evaluator._sample(r, a, template) for r, a in zip(eval_rows, answers, strict=True)]
            detection_metrics(samples, evaluator.cfg)
            scoring[mode] = (time.perf_counter() - start) / len(eval_rows)
        truth = [EvalSample(r.gt, r.width, r.height, answer_texts(r.row)[-1]) for r in eval_rows]
        start = time.perf_counter()
        perfect = detection_metrics(truth, _cfg("constant"))
        truth_s = (time.perf_counter() - start) / len(eval_rows)
        results.append(
            {
                "max_new_tokens": tokens,
                "rows": len(eval_rows),
                "generated_tokens": generated,
                "generation_s_per_image": gen_s / len(eval_rows),
                "generation_ms_per_token": 1000 * gen_s / max(generated, 1),
                "scoring_s_per_image_constant": scoring["constant"],
                "scoring_s_per_image_coord_logprob": scoring["coord_logprob"],
                "scoring_s_per_image_ground_truth_answers": truth_s,
                "ground_truth_answers_bbox_AP": perfect.metrics["det_bbox_AP"],
                "gt_boxes": sum(len(r.gt) for r in eval_rows),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return {"kind": kind, "batch_size": batch_size, "results": results}


def _cfg(mode: str, **values: Any) -> Any:
    from coordexp.config import EvalDetectionConfig

    return EvalDetectionConfig.from_mapping(
        {"enabled": True, "metrics": "both", "score_mode": mode, **values}
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Detection evaluation: cost per image on CPU",
        "",
        f"{report['machine']}; demo model {report['kind']}; batch size {report['batch_size']}; "
        f"{report['note']}",
        "",
        "| max_new_tokens | rows | tokens generated | generation s/image | ms/token | scoring s/image "
        "(constant) | scoring s/image (coord_logprob) | scoring s/image (the rows' own answers) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['max_new_tokens']} | {r['rows']} | {r['generated_tokens']} | "
            f"{r['generation_s_per_image']:.3f} | {r['generation_ms_per_token']:.1f} | "
            f"{r['scoring_s_per_image_constant']:.4f} | {r['scoring_s_per_image_coord_logprob']:.4f} | "
            f"{r['scoring_s_per_image_ground_truth_answers']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="text", choices=["text", "vl"])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max-new-tokens", default="64,256")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--note", default="no note")
    args = parser.parse_args(argv)
    report = run(args.kind, args.rows, _sizes(args.max_new_tokens), args.batch_size)
    report["machine"] = machine()
    report["note"] = args.note
    write_report(report, args.json, args.markdown, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
