"""The training entry: load through ms-swift's APIs, compose the Stage-1 trainer, train, evaluate.

``python -m coordexp train [CONFIG.yaml]``; without a config it runs :func:`demo_config` on the
embedded default (a tiny Qwen3, tokenizer and dataset built offline and deterministically).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordexp.config import ConfigError, ContractsConfig, Stage1CustomConfig
from coordexp.contracts import set_default_mode
from coordexp.launch.config import TrainConfig, dump_config, parse_config
from coordexp.launch.rank_failure import stop_all_ranks_on_error
from coordexp.run_folder.names import CONFIG_FILE
from coordexp.run_folder.resume import checkpoint_step, resolve_resume_checkpoint, supersede_logs_after

if TYPE_CHECKING:  # the demo builders import torch: only when a demo runs
    from coordexp.demo.build import DemoKind


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any]


# The demo's detection evaluation: a few val rows and short answers keep it to seconds on CPU.
DEMO_DETECTION: dict[str, Any] = {"enabled": True, "limit": 8, "batch_size": 4, "max_new_tokens": 48}


def demo_config(
    root: Path | None = None, *, seed: int = 0, kind: DemoKind = "text", detection: bool = False
) -> TrainConfig:
    """Every Stage-1 feature on, on an embedded default: ``text`` (a tiny Qwen3), ``coordjson`` (the
    same, answered in CoordJSON) or ``vl`` (a tiny Qwen3-VL with generated images); about a minute
    on 2 CPU cores. ``detection``: the detection evaluation too (what ``coordexp train`` runs
    without a config; the tests that build on the demo leave it off unless they test it)."""
    from coordexp.demo.build import DEMO_KINDS, build_demo_assets

    spec = DEMO_KINDS[kind]
    root = (spec.root if root is None else root).resolve()
    assets = build_demo_assets(root / "assets", seed=seed, kind=kind)
    raw = {
        "model": {
            "path": str(assets.model_dir),
            "model_type": assets.model_type,
            "template": assets.template_type,
            "max_length": 512,
        },
        "data": {
            "train": [str(p) for p in assets.train_files],
            "val": [str(p) for p in assets.val_files],
            "layout": "padded",
            "answer_format": spec.answer_format,
        },
        "training": {
            "output_dir": str(root / "run"),
            **spec.schedule,
            "per_device_eval_batch_size": 4,
            "learning_rate": 3e-3,
            "warmup_steps": 2,
            "logging_steps": 2,
            "eval_strategy": "steps",
            "save_strategy": "steps",
            "save_total_limit": 1,
        },
        # Every feature on; every other value is the schema's default (schemas/config.schema.json).
        "custom": {
            "token_type_metrics": {"enabled": True, "include": ["lvis", "coco"]},
            "coord_soft_ce_w1": {"enabled": True},
            "instability_monitor": {"enabled": True},
            "contracts": {},
            **({"eval_detection": dict(DEMO_DETECTION)} if detection else {}),
        },
        "seed": seed,
    }
    return parse_config(raw)


# Defaults that make a run work offline on CPU; the YAML's training section overrides them.
def _training_defaults(cfg: TrainConfig) -> dict[str, Any]:
    import torch

    on_gpu = torch.cuda.is_available()
    defaults: dict[str, Any] = {
        "check_model": False,  # else ms-swift contacts its hub from the constructor
        "gradient_checkpointing": False,
        "gradient_accumulation_steps": 1,
        "remove_unused_columns": False,
        "use_cpu": not on_gpu,
        "report_to": ["tensorboard"] if _has_tensorboard() else [],
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "disable_tqdm": False,
    }
    if not on_gpu:
        # Rows are encoded when a batch asks for them (training.lazy_rows). On a GPU, ms-swift's own
        # default (a DataLoader worker) encodes the next batch while the step runs; on CPU a worker
        # would only take cores from the step, so the training process encodes.
        defaults["dataloader_num_workers"] = 0
    if not cfg.data.val:
        defaults["eval_strategy"] = "no"
    return defaults


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def build_trainer(cfg: TrainConfig) -> Any:
    """Model, template, datasets and the composed trainer, all through ms-swift's own APIs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from swift import Seq2SeqTrainer, Seq2SeqTrainingArguments, get_model_processor, get_template

    from coordexp.launch.engines import check_fsdp_enabled
    from coordexp.launch.vl_support import is_multimodal_model_type, require_vl_dependencies
    from coordexp.rows.datasets import build_datasets
    from coordexp.swift_seam.assembly import build_trainer_cls

    stage1: Stage1CustomConfig = cfg.stage1()
    set_default_mode((stage1.contracts or ContractsConfig()).mode)  # absent: the schema's default
    random.seed(cfg.seed)

    if is_multimodal_model_type(cfg.model.model_type):
        require_vl_dependencies(f"model.model_type {cfg.model.model_type!r}")
    model_kwargs: dict[str, Any] = {"model_type": cfg.model.model_type, "attn_impl": cfg.model.attn_impl}
    if cfg.model.torch_dtype:
        import torch

        model_kwargs["torch_dtype"] = getattr(torch, cfg.model.torch_dtype)
    import torch

    device_map = None if torch.cuda.is_available() else "cpu"
    model, processor = get_model_processor(cfg.model.path, device_map=device_map, **model_kwargs)
    layout = cfg.data.layout
    template = get_template(
        processor,
        template_type=cfg.model.template,
        max_length=cfg.model.max_length,
        padding_free=layout == "padding_free",
    )
    template.set_mode("train")
    if template.use_model:
        # As ms-swift's SFT pipeline does: the Qwen-VL collator computes 3-D rope position ids with
        # the model; without it the template tries to rebuild one from the folder name.
        template.model = model
    supports_padding_free = template.support_padding_free
    if supports_padding_free is None:  # ms-swift's rule: text templates do, multimodal ones do not
        supports_padding_free = not getattr(getattr(model, "model_meta", None), "is_multimodal", False)
    if layout != "padded" and not supports_padding_free:
        raise ConfigError(
            f"data.layout: template {cfg.model.template!r} does not support {layout}; use padded"
        )
    packing_length = cfg.data.packing_length or cfg.model.max_length

    # The arguments first: creating them sets up torch.distributed, which PackingDataset needs to
    # share rank 0's packing with the other ranks (built before it, every other rank packs nothing).
    args_kwargs = {**_training_defaults(cfg), **cfg.training}
    if layout == "packing":
        # A packed row already holds several samples; ms-swift packs one row per micro-batch.
        args_kwargs["per_device_train_batch_size"] = 1
        args_kwargs["per_device_eval_batch_size"] = 1
    args = Seq2SeqTrainingArguments(**args_kwargs)

    # Every row carries its source file and line, so sample dumps need no label -> file mapping.
    # The pre-pass runs once per node; the node's other ranks wait, then read its cache.
    train_ds, eval_ds = build_datasets(
        template,
        cfg.data,
        packing_length=packing_length,
        output_dir=Path(args.output_dir),
        token_types=stage1.token_type_metrics,
        main_process_first=args.main_process_first(local=True, desc="coordexp row index"),
    )
    trainer_cls = build_trainer_cls(Seq2SeqTrainer, stage1)
    trainer = trainer_cls(
        model=model, args=args, template=template, train_dataset=train_ds, eval_dataset=eval_ds
    )
    check_fsdp_enabled(trainer)
    return trainer


def train(cfg: TrainConfig) -> RunResult:
    resume = resolve_resume_checkpoint(cfg.training)  # before anything loads: a bad value is a config error
    # One rank's error stops every rank with that error (not at the process-group timeout).
    with stop_all_ranks_on_error():
        return _train(cfg, resume)


def _train(cfg: TrainConfig, resume: Path | None) -> RunResult:
    trainer = build_trainer(cfg)
    output_dir = Path(trainer.args.output_dir)
    # One writer and one console report per run, not one per rank.
    main_process = bool(trainer.is_world_process_zero())
    say = print if main_process else (lambda *_: None)
    if main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")
    say(
        f"[coordexp] training -> {output_dir} (layout {cfg.data.layout}; "
        f"components: {', '.join(sorted(type(trainer).stage1_components()))})"
    )
    if resume is not None:
        _supersede_logs(trainer, resume, output_dir)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    eval_metrics: dict[str, Any] = {}
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
    trainer.save_model(str(output_dir / "final"))
    trainer.save_state()
    say(
        f"[coordexp] done: train loss {result.training_loss:.4f}"
        + (f", eval loss {eval_metrics.get('eval_loss', float('nan')):.4f}" if eval_metrics else "")
    )
    say(f"[coordexp] next: python -m coordexp check-logs {output_dir}")
    say(f"[coordexp]       python -m coordexp report {output_dir}")
    return RunResult(output_dir, dict(result.metrics), eval_metrics)


def _supersede_logs(trainer: Any, checkpoint: Path, output_dir: Path) -> None:
    """The resumed run's records replace what the killed run logged after its checkpoint."""
    if not trainer.is_world_process_zero():
        return
    monitor = trainer.stage1_pipeline().monitor
    step = checkpoint_step(checkpoint)
    dropped = supersede_logs_after(step, output_dir, monitor.monitor.dump_dir if monitor else None)
    print(f"[coordexp] resuming from {checkpoint} (step {step})")
    for path, count in dropped.items():
        print(f"[coordexp]   superseded {count} record(s) after step {step}: {path}")
