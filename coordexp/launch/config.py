"""The training YAML: model, data, trainer arguments and the ``custom:`` Stage-1 sections.

YAML-first: every setting lives in the file, there are no CLI flags besides its path. Unknown keys
and bad values raise :class:`coordexp.config.ConfigError` naming the full key path, before anything
is loaded: the ``training:`` section is checked against ms-swift's trainer arguments
(:mod:`coordexp.launch.arguments`) and the model folder and data files must exist and be readable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from coordexp.answers import AnswerFormat
from coordexp.config import ConfigError, Stage1CustomConfig, load_custom_config
from coordexp.config.loading import format_validation_error, resolve_custom_paths
from coordexp.contracts.catalog import conditions_from_config, keys_written_under
from coordexp.generated.metric_catalog import EVAL_ONLY_KEYS
from coordexp.launch.arguments import validate_training_arguments
from coordexp.launch.engines import fsdp_requested, fsdp_setup_errors
from coordexp.rows.image_lengths import ImageCheck
from coordexp.run_folder.resume import names_a_folder, resume_setting_errors

Layout = Literal["padded", "padding_free", "packing"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    path: str = Field(description="Local checkpoint folder (weights, config and tokenizer).")
    model_type: str = Field("qwen3", description="ms-swift model type.")
    template: str = Field("qwen3_nothinking", description="ms-swift template type.")
    max_length: int = Field(1024, gt=0, description="Longest encoded sample; longer rows are refused.")
    attn_impl: str = Field("sdpa", description="Attention implementation.")
    torch_dtype: str | None = Field(None, description="e.g. bfloat16; None keeps the checkpoint's.")


class DataSection(_Strict):
    train: list[str] = Field(min_length=1, description="JSONL files of training rows.")
    val: list[str] = Field(default_factory=list, description="JSONL files of evaluation rows.")
    layout: Layout = Field("padded", description="padded, padding_free or packing.")
    packing_length: int | None = Field(
        None, gt=0, description="Tokens per pack (packing); default max_length."
    )
    max_samples: int | None = Field(None, gt=0, description="Use at most this many rows per split.")
    max_refused_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of a split's rows that may be refused (listed with file:line); above it the "
        "run stops. 0: any refused row stops the run.",
    )
    answer_format: AnswerFormat = Field(
        "auto",
        description="How assistant answers are read for token types: json (any valid JSON answer), "
        "coordjson (strict CoordJSON) or auto (per row: valid JSON as JSON, else CoordJSON).",
    )
    num_proc: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)),
        ge=1,
        description="Processes of the pre-pass that refuses and measures rows; default the visible cores.",
    )
    image_check: ImageCheck = Field(
        "header",
        description="How the pre-pass checks a row's images: header (size and, for PNG, checksums "
        "from the file, no pixels decoded; a damaged image stops the run when its batch comes) or "
        "decode (every image decoded and processed as training will; slower, refuses it at start).",
    )
    cache_dir: str | None = Field(
        None,
        description="Folder of the pre-pass cache; default $COORDEXP_CACHE_DIR, else "
        "$XDG_CACHE_HOME/coordexp/row_index (~/.cache/coordexp/row_index).",
    )


class TrainConfig(_Strict):
    model: ModelSection
    data: DataSection
    training: dict[str, Any] = Field(
        default_factory=dict, description="ms-swift Seq2SeqTrainingArguments keyword arguments."
    )
    custom: dict[str, Any] = Field(default_factory=dict, description="The Stage-1 custom.* sections.")
    seed: int = 42
    _stage1: Stage1CustomConfig | None = PrivateAttr(None)

    def stage1(self) -> Stage1CustomConfig:
        """The ``custom:`` block as its models: parsed on the first call (``parse_config`` makes it,
        so a bad section fails at load), the same models after."""
        if self._stage1 is None:
            self._stage1 = load_custom_config(self.custom)
        return self._stage1


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the YAML are relative to the YAML file's folder."""

    def fix(p: str) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str):
        model["path"] = fix(model["path"])
    data = raw.get("data")
    if isinstance(data, dict):
        for split in ("train", "val"):
            if isinstance(data.get(split), list):
                data[split] = [fix(p) if isinstance(p, str) else p for p in data[split]]
            elif isinstance(data.get(split), str):
                data[split] = [fix(data[split])]
        if isinstance(data.get("cache_dir"), str):
            data["cache_dir"] = fix(data["cache_dir"])
    if isinstance(raw.get("custom"), dict):
        resolve_custom_paths(raw["custom"], fix)
    training = raw.get("training")
    if isinstance(training, dict) and isinstance(training.get("output_dir"), str):
        training["output_dir"] = fix(training["output_dir"])
    if isinstance(training, dict) and names_a_folder(training.get("resume_from_checkpoint")):
        training["resume_from_checkpoint"] = fix(training["resume_from_checkpoint"])
    return raw


def parse_config(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> TrainConfig:
    data = dict(raw)
    if base_dir is not None:
        data = _resolve_paths(data, base_dir)
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "config").replace("config.", "")) from None
    cfg.stage1()  # parses custom.* once (errors name the key paths)
    # Everything else a run needs before it loads anything: reported together, one line each.
    errors: list[str] = []
    try:
        cfg.training = validate_training_arguments(cfg.training)  # the coerced values reach the trainer
    except ConfigError as exc:
        errors.append(str(exc))
    errors += input_path_errors(cfg)
    errors += resume_setting_errors(cfg.training)
    errors += fsdp_setup_errors(cfg.training)
    errors += detection_setting_errors(cfg)
    if errors:
        raise ConfigError("\n".join(errors))
    return cfg


def detection_setting_errors(cfg: TrainConfig) -> list[str]:
    """A best-model metric this config never logs (an ``eval_det_*`` key whose evaluation is off);
    ``custom.eval_detection`` without val rows to evaluate."""
    custom = cfg.stage1()
    errors = []
    best = cfg.training.get("metric_for_best_model")
    if isinstance(best, str):
        base = best.removeprefix("eval_")
        if base in EVAL_ONLY_KEYS and base not in keys_written_under(conditions_from_config(custom)):
            errors.append(
                f"training.metric_for_best_model: {best} is not logged with this custom.eval_detection "
                "(enable it, with the metrics and f1ish_iou_thrs that write this key)"
            )
    detection = custom.eval_detection
    if detection is not None and detection.enabled:
        folder = detection.semantic_model
        if folder is not None and not (Path(folder) / "config.json").is_file():
            errors.append(
                f"custom.eval_detection.semantic_model: no config.json in {folder} (a local encoder "
                "folder; nothing is downloaded)"
            )
        if not cfg.data.val:
            errors.append("custom.eval_detection: enabled, but data.val names no rows to evaluate")
        if fsdp_requested(cfg.training) or _zero_stage(cfg.training.get("deepspeed")) == 3:
            errors.append(
                "custom.eval_detection: not supported with FSDP or DeepSpeed ZeRO-3 yet (ranks generating "
                "answers of different lengths over sharded parameters would wait on each other); use "
                "ZeRO-2, DDP or one process"
            )
    return errors


def _zero_stage(deepspeed: Any) -> int | None:
    """``zero_optimization.stage`` of a DeepSpeed config given inline or as a JSON file."""
    import json

    if isinstance(deepspeed, str) and Path(deepspeed).is_file():
        try:
            deepspeed = json.loads(Path(deepspeed).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    if isinstance(deepspeed, Mapping):
        stage = (deepspeed.get("zero_optimization") or {}).get("stage")
        return stage if isinstance(stage, int) else None
    return None


def input_path_errors(cfg: TrainConfig) -> list[str]:
    """The model folder and data files that are missing or unreadable, one line each."""
    errors: list[str] = []
    model = Path(cfg.model.path)
    if not model.is_dir():
        found = "not a folder" if model.exists() else "folder not found"
        errors.append(f"model.path: {found}: {model}")
    elif not (model / "config.json").is_file():
        errors.append(f"model.path: no config.json in {model} (not a checkpoint folder)")
    for split, files in (("train", cfg.data.train), ("val", cfg.data.val)):
        for i, name in enumerate(files):
            problem = _unreadable(Path(name))
            if problem is not None:
                errors.append(f"data.{split}.{i}: {problem}: {name}")
    return errors


def _unreadable(path: Path) -> str | None:
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "not a file"
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return parse_config(raw, base_dir=path.parent.resolve())
    except ConfigError as exc:  # every line names the file: "stage1.yaml: training.x: ..."
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from None


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
