"""The training YAML: model, data, trainer arguments and the ``custom:`` Stage-1 sections.

YAML-first: every setting lives in the file, there are no CLI flags besides its path. Unknown keys
and bad values raise :class:`coordexp.config.ConfigError` naming the full key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coordexp.config import ConfigError, Stage1CustomConfig, load_custom_config
from coordexp.config.schema import format_validation_error

Layout = Literal["padded", "padding_free", "packing"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    path: str = Field(description="Local checkpoint folder (weights, config and tokenizer).")
    model_type: str = Field("qwen3", description="ms-swift model type.")
    template: str = Field("qwen3_nothinking", description="ms-swift template type.")
    max_length: int = Field(1024, gt=0, description="Longest encoded sample; longer ones are dropped.")
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


class TrainConfig(_Strict):
    model: ModelSection
    data: DataSection
    training: dict[str, Any] = Field(
        default_factory=dict, description="ms-swift Seq2SeqTrainingArguments keyword arguments."
    )
    custom: dict[str, Any] = Field(default_factory=dict, description="The Stage-1 custom.* sections.")
    seed: int = 42

    def stage1(self) -> Stage1CustomConfig:
        return load_custom_config(self.custom)


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
    training = raw.get("training")
    if isinstance(training, dict) and isinstance(training.get("output_dir"), str):
        training["output_dir"] = fix(training["output_dir"])
    return raw


def parse_config(raw: Mapping[str, Any], *, base_dir: Path | None = None) -> TrainConfig:
    data = dict(raw)
    if base_dir is not None:
        data = _resolve_paths(data, base_dir)
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "config").replace("config.", "")) from None
    cfg.stage1()  # validates custom.* with key paths
    return cfg


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
    return parse_config(raw, base_dir=path.parent.resolve())


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
