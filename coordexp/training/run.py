"""The training entry: load through ms-swift's APIs, compose the Stage-1 trainer, train, evaluate.

``python -m coordexp train [CONFIG.yaml]``; without a config it runs :func:`demo_config` on the
embedded default (a tiny Qwen3, tokenizer and dataset built offline and deterministically).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordexp.config import Stage1CustomConfig
from coordexp.contracts import set_default_mode
from coordexp.training.config import TrainConfig, dump_config, parse_config

CONFIG_FILENAME = "coordexp_config.yaml"
DEMO_ROOT = Path("coordexp_demo")


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    train_metrics: dict[str, Any]
    eval_metrics: dict[str, Any]


def demo_config(root: Path = DEMO_ROOT, *, seed: int = 0) -> TrainConfig:
    """Every Stage-1 feature on, on the embedded default; a few minutes on 2 CPU cores."""
    from coordexp.demo import build_demo_assets

    root = root.resolve()
    assets = build_demo_assets(root / "assets", seed=seed)
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
        },
        "training": {
            "output_dir": str(root / "run"),
            "max_steps": 24,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "learning_rate": 3e-3,
            "warmup_steps": 2,
            "logging_steps": 2,
            "eval_strategy": "steps",
            "eval_steps": 8,
            "save_strategy": "steps",
            "save_steps": 24,
            "save_total_limit": 1,
        },
        "custom": {
            "token_type_metrics": {
                "enabled": True,
                "include": ["lvis", "coco"],
                "log_top5": True,
                "coord_monitor_mass": True,
            },
            "coord_soft_ce_w1": {
                "enabled": True,
                "gate_weight": 1.0,
                "soft_ce_weight": 1.0,
                "w1_weight": 1.0,
                "ce_weight": 0.0,
            },
            "instability_monitor": {"enabled": True},
            "contracts": {"mode": "warn"},
        },
        "seed": seed,
    }
    return parse_config(raw)


# Defaults that make a run work offline on CPU; the YAML's training section overrides them.
def _training_defaults(cfg: TrainConfig) -> dict[str, Any]:
    import torch

    defaults: dict[str, Any] = {
        "check_model": False,  # else ms-swift contacts its hub from the constructor
        "gradient_checkpointing": False,
        "gradient_accumulation_steps": 1,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "use_cpu": not torch.cuda.is_available(),
        "report_to": ["tensorboard"] if _has_tensorboard() else [],
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "disable_tqdm": False,
    }
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

    from coordexp.metrics.dataset_metrics import build_trainer_cls
    from coordexp.training.data import build_dataset, source_files_by_label

    stage1: Stage1CustomConfig = cfg.stage1()
    set_default_mode(stage1.contracts.mode if stage1.contracts is not None else "warn")
    random.seed(cfg.seed)

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
    packing_length = cfg.data.packing_length or cfg.model.max_length

    def dataset(files: list[str], split: str) -> Any:
        return build_dataset(
            template,
            files,
            layout=layout,
            packing_length=packing_length,
            max_samples=cfg.data.max_samples,
            split=split,
        )

    train_ds = dataset(cfg.data.train, "train")
    eval_ds = dataset(cfg.data.val, "val") if cfg.data.val else None

    args_kwargs = {**_training_defaults(cfg), **cfg.training}
    if layout == "packing":
        # A packed row already holds several samples; ms-swift packs one row per micro-batch.
        args_kwargs["per_device_train_batch_size"] = 1
        args_kwargs["per_device_eval_batch_size"] = 1
    args = Seq2SeqTrainingArguments(**args_kwargs)
    trainer_cls = build_trainer_cls(
        Seq2SeqTrainer, stage1, instability_source_files=source_files_by_label(cfg.data.train)
    )
    return trainer_cls(
        model=model, args=args, template=template, train_dataset=train_ds, eval_dataset=eval_ds
    )


def train(cfg: TrainConfig) -> RunResult:
    trainer = build_trainer(cfg)
    output_dir = Path(trainer.args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / CONFIG_FILENAME).write_text(dump_config(cfg), encoding="utf-8")
    print(
        f"[coordexp] training -> {output_dir} (layout {cfg.data.layout}; "
        f"components: {', '.join(sorted(type(trainer).stage1_components()))})"
    )
    result = trainer.train()
    eval_metrics: dict[str, Any] = {}
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
    trainer.save_model(str(output_dir / "final"))
    trainer.save_state()
    print(
        f"[coordexp] done: train loss {result.training_loss:.4f}"
        + (f", eval loss {eval_metrics.get('eval_loss', float('nan')):.4f}" if eval_metrics else "")
    )
    print(f"[coordexp] next: python -m coordexp check-logs {output_dir}")
    print(f"[coordexp]       python -m coordexp report {output_dir}")
    return RunResult(output_dir, dict(result.metrics), eval_metrics)
