"""Building blocks of the hardening tests: stand-in trainer steps, a collator over real demo-tokenizer
samples, and the observation of what one run of a case wrote and warned.

Everything runs on the real components (collator, enrichers, guards, pipeline, monitor) with the
stand-in trainer and toy LM of ``tests/components/stage1_fixtures.py``.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from coordexp.contracts import check_metric_key
from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.coord_tokens.payload import serialize_payload
from coordexp.generated import metric_keys as K
from coordexp.generated.metric_catalog import METRIC_SPECS
from coordexp.rows.collator import DatasetMetricsCollator, build_dataset_metrics_collator
from coordexp.swift_seam.assembly import build_trainer_cls
from tests.components.stage1_fixtures import (
    PAYLOADS,
    PROMPT,
    SUFFIX,
    BatchSpec,
    StandInTrainer,
    ToyLM,
    custom_with,
    make_batch,
    tokenizer,
)

__all__ = [
    "BASE_CE_KEYS",
    "COORD_KEYS",
    "COORD_MONITOR_KEYS",
    "RUNTIME_KEYS",
    "TYPED_KEYS",
    "LogitsLM",
    "Observed",
    "PaddingCollator",
    "Recorder",
    "assert_metrics_valid",
    "coord_ids",
    "custom",
    "make_batch",
    "make_collator",
    "raw_samples",
    "recording",
    "run_steps",
    "stage1_trainer",
]

RUNTIME_KEYS = frozenset({K.LEARNING_RATE, K.ACCUM_GRAD_STEPS, K.ACCUM_CURRENT_GRAD_STEPS})
COORD_KEYS = frozenset(k for k in METRIC_SPECS if k.startswith(("coord_diag/", "coord_softce_w1/")))
BASE_CE_KEYS = frozenset(k for k in METRIC_SPECS if k.startswith("base_ce/"))
COORD_MONITOR_KEYS = frozenset(k for k in METRIC_SPECS if k.startswith("coord_monitor/"))
TYPED_KEYS = frozenset(
    {f"{t}_token_{m}" for t in ("desc", "format", "coord") for m in ("frac", "acc", "acc_top5")}
    | {
        K.COORD_MONITOR_FLIP_FORMAT_TO_COORD,
        K.COORD_MONITOR_FLIP_DESC_TO_COORD,
        K.COORD_MONITOR_COORD_VOCAB_MASS_AT_GT_FORMAT,
        K.COORD_MONITOR_COORD_VOCAB_MASS_AT_GT_DESC,
    }
)
_NOISE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def coord_ids() -> torch.Tensor:
    return torch.tensor(get_coord_token_ids(tokenizer()))


def custom(coord_on: bool, **sections: dict[str, Any]) -> dict[str, Any]:
    """The full Stage-1 ``custom:`` block of the fixtures, with sections updated."""
    block = custom_with(coord_on)
    for name, values in sections.items():
        block.setdefault(name, {}).update(values)
    return block


# ---------------------------------------------------------------- what a run wrote and warned


@dataclass
class Observed:
    """What one case run left behind: metrics written, the last batch, losses, monitor events."""

    logged: dict[str, list[float]] = field(default_factory=dict)
    batch: dict[str, Any] | None = None
    losses: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class Recorder:
    """Python warnings and coordexp log records (WARNING and above) seen during a block."""

    warnings: list[warnings.WarningMessage] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)

    def messages(self) -> list[str]:
        return [str(w.message) for w in self.warnings if not issubclass(w.category, _NOISE)] + [
            r.getMessage() for r in self.records
        ]

    def repeated(self) -> dict[str, int]:
        """Messages (digits and shapes normalised away) that were emitted more than once."""
        counts = Counter(re.sub(r"[-+0-9.e]+", "#", m) for m in self.messages())
        return {m: n for m, n in counts.items() if n > 1}

    def count(self, fragment: str) -> tuple[int, int]:
        """How many Python warnings and how many log records mention ``fragment``."""
        warned = sum(fragment in str(w.message) for w in self.warnings if not issubclass(w.category, _NOISE))
        return warned, sum(fragment in r.getMessage() for r in self.records)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


@contextmanager
def recording() -> Iterator[Recorder]:
    rec = Recorder()
    logger = logging.getLogger("coordexp")
    handler = _ListHandler(rec.records)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield rec
            rec.warnings.extend(caught)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


_UNIT_IN_01 = frozenset({"fraction", "probability", "flag"})
_UNIT_COUNT = frozenset({"tokens", "samples", "steps", "tokens/sample"})


def assert_metrics_valid(logged: Mapping[str, list[float]], labels: tuple[str, ...] = ()) -> None:
    """Every written value is a declared key, finite and inside its declared range (the strict guard,
    which allows 1e-5 of float slack), and, independently of the guard: fractions, probabilities and
    flags in [0, 1], counts >= 0 (1e-6 slack)."""
    for key, values in logged.items():
        unit = METRIC_SPECS[key].unit if key in METRIC_SPECS else None
        for value in values:
            assert math.isfinite(value), (key, value)
            assert check_metric_key(key, value, dataset_labels=labels, mode="strict"), key
            if unit in _UNIT_IN_01:
                assert -1e-6 <= value <= 1.0 + 1e-6, (key, value)
            elif unit in _UNIT_COUNT:
                assert value >= 0.0, (key, value)


# ---------------------------------------------------------------- stand-in trainer steps


def stage1_trainer(
    custom_block: Mapping[str, Any] | None,
    tmp_path: str | Path,
    *,
    model: nn.Module | None = None,
    base: type = StandInTrainer,
    source_files: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> tuple[Any, nn.Module]:
    torch.manual_seed(0)
    model = model if model is not None else ToyLM(len(tokenizer()))
    cls = build_trainer_cls(base, dict(custom_block or {}), instability_source_files=source_files)
    return cls(model, output_dir=str(tmp_path), **kwargs), model


def run_steps(
    trainer: Any,
    model: nn.Module,
    repeat: int,
    *,
    spec: BatchSpec | None = None,
    mutate: Callable[[dict[str, Any]], None] | None = None,
    batch_fn: Callable[[], dict[str, Any]] | None = None,
) -> Observed:
    """``repeat`` training steps of fresh (mutated) fixture batches through ``trainer.compute_loss``."""
    obs = Observed()
    for _ in range(repeat):
        batch = (
            batch_fn()
            if batch_fn is not None
            else make_batch(spec or BatchSpec(packed=False, with_types=True))
        )
        if mutate is not None:
            mutate(batch)
        loss = trainer.compute_loss(model, batch)
        obs.losses.append(float(loss.detach()))
        obs.batch = batch
    obs.logged = trainer.logged("train")
    return obs


class LogitsLM(nn.Module):
    """A model whose logits are a given tensor (a parameter, so gradients flow), with HF-style CE."""

    def __init__(self, logits: torch.Tensor, loss_override: float | None = None) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.loss_override = loss_override

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **_: Any
    ) -> CausalLMOutput:
        logits = self.logits[: input_ids.shape[0], : input_ids.shape[1]]
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
            if self.loss_override is not None:
                loss = loss * 0 + self.loss_override
        return CausalLMOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------- collator over demo samples


def raw_samples(datasets: tuple[str, ...] = ("lvis", "coco", "lvis")) -> list[dict[str, Any]]:
    """Encoded samples the way the training data builder hands them to the collator."""
    tok = tokenizer()
    prompt = tok.encode(PROMPT, add_special_tokens=False)
    out = []
    for i, (payload, dataset) in enumerate(zip(PAYLOADS, datasets, strict=False)):
        answer = tok.encode(serialize_payload(payload) + SUFFIX, add_special_tokens=False)
        out.append(
            {
                "input_ids": prompt + answer,
                "labels": [-100] * len(prompt) + answer,
                "length": len(prompt) + len(answer),
                "assistant_payload": payload,
                "dataset": dataset,
                "base_idx": i,
                "sample_id": f"{dataset}-{i}",
            }
        )
    return out


class PaddingCollator:
    """A base collator: one row per sample (or per pack, joined), right-padded; optional truncation."""

    def __init__(self, max_length: int | None = None) -> None:
        self.max_length = max_length

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        rows = []
        for item in items:
            samples = item if isinstance(item, list) else [item]
            ids = [t for s in samples for t in s["input_ids"]]
            labels = [t for s in samples for t in s["labels"]]
            if self.max_length is not None:
                ids, labels = ids[: self.max_length], labels[: self.max_length]
            rows.append((ids, labels))
        width = max(len(ids) for ids, _ in rows)
        pad = tokenizer().pad_token_id
        input_ids = torch.full((len(rows), width), pad)
        labels_t = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, labels) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels_t[r, : len(labels)] = torch.tensor(labels)
            mask[r, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels_t, "attention_mask": mask}


def make_collator(
    *, max_length: int | None = None, suffix: list[Any] | None = None, extra_enrichers: tuple[Any, ...] = ()
) -> DatasetMetricsCollator:
    """The Stage-1 metrics collator with token types (lvis, coco) and instability meta on."""
    template = SimpleNamespace(
        tokenizer=tokenizer(), template_meta=SimpleNamespace(suffix=[SUFFIX] if suffix is None else suffix)
    )
    return build_dataset_metrics_collator(
        template,
        base_collator=PaddingCollator(max_length),
        token_type_cfg={"enabled": True, "include": ["lvis", "coco"]},
        instability_monitor_cfg={"enabled": True},
        extra_enrichers=extra_enrichers,
    )
