"""The bad-input matrix: every malformed input we know of, with its documented outcome.

One table (``CASES``): each case has an id, the layer it hits (collator, guards, metrics, loss,
monitor, config), a one-line description of the input, the expected outcome and a ``run`` that feeds
the input through the real code. There are three outcomes (docs/RELIABILITY.md, "Failure semantics"):

- ``Raises(error, fragment)``: objective-changing code or set-up refuses with a clear error. It is
  checked in ``warn`` mode (the training default), so it never depends on the guard mode.
- ``SkipsWarnsOnce(...)``: a diagnostic skips what it cannot use and training goes on. The input is
  fed ``REPEAT`` times to the same objects in ``strict`` mode: nothing raises, no warning or log line
  repeats, every metric written is a declared key with a finite in-range value, the keys that need
  the broken input are absent and the ones that do not are still written.
- ``Guarded(key, rule)``: the contract guard drops the offending extra or metric write in ``warn``
  mode (one ``ContractWarning`` for ``REPEAT`` inputs, the rest of the batch or write untouched) and
  raises ``ContractViolation`` naming the key and rule in ``strict`` mode.

``test_doc_table_matches_cases`` keeps the table in docs/RELIABILITY.md equal to ``CASES``.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, get_args
from unittest import mock

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutput

from coordexp.components import CoordObjectiveError
from coordexp.config import ConfigError
from coordexp.contracts import ContractViolation, ContractWarning, check_batch_extras, contracts_mode
from coordexp.generated import metric_keys as K
from coordexp.generated.batch_extras import (
    BATCH_EXTRAS_KEYS,
    BOX_PAIRS_KEY,
    BOX_SLOTS_KEY,
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    INSTABILITY_META_JSON_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
)
from coordexp.launch.config import load_config, parse_config
from coordexp.launch.rank_failure import RankFailedError
from coordexp.monitor import InstabilityMonitor, StepObservation
from coordexp.monitor.events import read_events
from coordexp.reporting import MetricReporter
from coordexp.rows.enrichers import DatasetMetaEnricher, InstabilityMetaEnricher
from coordexp.rows.refused import DataError
from coordexp.swift_seam.loss_func import Stage1OptionError
from tests.components.stage1_fixtures import (
    BatchSpec,
    MeanMetric,
    StandInTrainer,
    SwiftLikeTrainer,
    ToyLM,
    tokenizer,
)
from tests.data import support as data_support
from tests.hardening.support import (
    BASE_CE_KEYS,
    COORD_KEYS,
    COORD_MONITOR_KEYS,
    RUNTIME_KEYS,
    TYPED_KEYS,
    Observed,
    assert_metrics_valid,
    coord_ids,
    custom,
    make_batch,
    make_collator,
    raw_samples,
    recording,
    run_steps,
    stage1_trainer,
)

REPEAT = 3
DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
Layer = Literal[
    "collator", "guards", "metrics", "loss", "monitor", "config", "data", "cli", "training", "ranks"
]


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Raises:
    error: type[BaseException]
    fragment: str

    def describe(self) -> str:
        return f"raises `{self.error.__name__}` with `{self.fragment}`"


@dataclass(frozen=True)
class SkipsWarnsOnce:
    absent: frozenset[str] = frozenset()
    """keys that need the broken input: never written"""
    present: frozenset[str] = frozenset()
    """keys that do not: still written (the step went on)"""
    warns: str | None = None
    """fragment of the one warning the input causes (None: skipped silently)"""

    def describe(self) -> str:
        return (
            f"skips + warns at most once (`{self.warns}`)"
            if self.warns
            else "skips + warns at most once (silent)"
        )


@dataclass(frozen=True)
class Guarded:
    key: str
    rule: str

    def describe(self) -> str:
        return f"dropped by guard in warn mode / `ContractViolation` `[{self.rule}]` in strict"


@dataclass(frozen=True)
class Dumped:
    """The sample dumps hold the rows of their own batch, found at the file:line they were loaded
    from (checked inside ``run``), with no "not dumped" warning."""

    def describe(self) -> str:
        return "dumps the batch's own rows (found by file:line)"


@dataclass(frozen=True)
class Exits:
    """A command-line user error: the exit code, and ONE line on stderr holding ``fragment`` (no
    traceback). The case's ``run`` calls the CLI and raises ``SystemExit`` with its return code."""

    code: int
    fragment: str

    def describe(self) -> str:
        return f"exits {self.code} with one line `{self.fragment}`"


Outcome = Raises | SkipsWarnsOnce | Guarded | Dumped | Exits


@dataclass(frozen=True)
class H:
    """What a case run gets: a scratch folder and how many times to feed the input."""

    tmp_path: Path
    repeat: int


@dataclass(frozen=True)
class Case:
    id: str
    layer: Layer
    input: str
    outcome: Outcome
    run: Callable[[H], Observed]
    check: Callable[[Observed], None] | None = None


# ---------------------------------------------------------------- small builders


def _meta_json(rows: int = 3) -> str:
    """A valid instability_meta_json for ``rows`` padded rows, as the enricher writes it."""
    enricher = InstabilityMetaEnricher()
    samples = (raw_samples() * 2)[:rows]
    return json.dumps([enricher.row_meta([s]) for s in samples], sort_keys=True, ensure_ascii=True)


def _full_batch() -> dict[str, Any]:
    batch = make_batch(BatchSpec(packed=False, with_types=True, with_boxes=True))
    batch[INSTABILITY_META_JSON_KEY] = _meta_json(3)
    return batch


def _extra_case(
    case_id: str, input_: str, key: str, rule: str, mutate: Callable[[dict[str, Any]], None]
) -> Case:
    def run(h: H) -> Observed:
        obs = Observed()
        for _ in range(h.repeat):
            batch = _full_batch()
            mutate(batch)
            check_batch_extras(batch)
            obs.batch = batch
        return obs

    return Case(case_id, "guards", input_, Guarded(key, rule), run)


def _metric_case(case_id: str, input_: str, key: str, value: object, rule: str) -> Case:
    def run(h: H) -> Observed:
        trainer = SimpleNamespace(custom_metrics={"train": defaultdict(MeanMetric)})
        reporter = MetricReporter()
        for _ in range(h.repeat):
            reporter.write(trainer, "train", {key: value, K.TOKEN_ACC_TOP5: 0.5}, ("lvis", "coco"))  # type: ignore[dict-item]
        return Observed(logged={k: m.values for k, m in trainer.custom_metrics["train"].items()})

    return Case(case_id, "metrics", input_, Guarded(key, rule), run)


def _config_case(case_id: str, input_: str, fragment: str, mutate: Callable[[dict[str, Any]], None]) -> Case:
    def run(h: H) -> Observed:
        raw: dict[str, Any] = {"model": {"path": "/models/m"}, "data": {"train": ["train.jsonl"]}}
        mutate(raw)
        parse_config(copy.deepcopy(raw))
        return Observed()

    return Case(case_id, "config", input_, Raises(ConfigError, fragment), run)


def _yaml_case(case_id: str, input_: str, fragment: str, text: str | None) -> Case:
    def run(h: H) -> Observed:
        path = h.tmp_path / "stage1.yaml"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        load_config(path)
        return Observed()

    return Case(case_id, "config", input_, Raises(ConfigError, fragment), run)


def _data_dump_case(case_id: str, input_: str, **scenario: Any) -> Case:
    def run(h: H) -> Observed:
        data_support.dump_scenario(h.tmp_path, **scenario)
        return Observed()

    return Case(case_id, "data", input_, Dumped(), run)


def _data_refused_case(
    case_id: str,
    input_: str,
    fragment: str,
    bad: Callable[[], dict[int, dict[str, Any]]],
    max_refused_fraction: float = 0.0,
) -> Case:
    def run(h: H) -> Observed:
        data_support.refused_scenario(h.tmp_path, "rows", bad(), max_refused_fraction=max_refused_fraction)
        return Observed()

    return Case(case_id, "data", input_, Raises(DataError, fragment), run)


def _data_untyped_case(case_id: str, input_: str, answer: str, fragment: str) -> Case:
    """A CoordJSON answer the grammar refuses, as the only row of a dataset with token types on:
    listed in coordexp_untyped_rows.jsonl, and the run stops (no train row of lvis can be typed)."""

    def run(h: H) -> Observed:
        data_support.untyped_scenario(h.tmp_path, "rows", [answer])
        return Observed()

    return Case(case_id, "data", input_, Raises(DataError, f"rows.jsonl:1: no token types: {fragment}"), run)


_BOX = "[<|coord_1|>, <|coord_2|>, <|coord_30|>, <|coord_40|>]"


def _changed_after_pre_pass(h: H) -> Observed:
    """Index 3 rows, then overwrite line 2 with as many bytes of garbage, then read row 2."""
    path = data_support.Written().write(h.tmp_path / "rows.jsonl", data_support.demo_rows(3))
    train, _ = data_support.encode_splits([path], output_dir=h.tmp_path / "run")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = "x" * len(lines[1])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train[1]
    return Observed()


def _unwritable_cache_dir(h: H) -> Observed:
    blocker = h.tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    path = data_support.Written().write(h.tmp_path / "rows.jsonl", data_support.demo_rows(3))
    data_support.encode_splits([path], output_dir=h.tmp_path / "run", cache_dir=blocker / "cache")
    return Observed()


def _write_set_up(
    folder: Path, training: str = "", *, train: str = "train.jsonl", model: str = "model"
) -> Path:
    """A training YAML whose model folder and train file exist (nothing here loads them)."""
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "config.json").write_text("{}", encoding="utf-8")
    (folder / "train.jsonl").write_text('{"messages": []}\n', encoding="utf-8")
    path = folder / "stage1.yaml"
    lines = [f"model: {{path: {model}}}", f"data: {{train: [{train}]}}", "training:", "  output_dir: out"]
    path.write_text("\n".join([*lines, *(f"  {x}" for x in training.splitlines())]) + "\n", encoding="utf-8")
    return path


def _set_up_case(case_id: str, input_: str, fragment: str, **yaml: str) -> Case:
    def run(h: H) -> Observed:
        load_config(_write_set_up(h.tmp_path, **yaml))
        return Observed()

    return Case(case_id, "config", input_, Raises(ConfigError, fragment), run)


def _cli_case(case_id: str, input_: str, code: int, fragment: str, argv: Callable[[Path], list[str]]) -> Case:
    def run(h: H) -> Observed:
        from coordexp.cli.main import main

        raise SystemExit(main(argv(h.tmp_path)))

    return Case(case_id, "cli", input_, Exits(code, fragment), run)


def _empty_log_run(folder: Path) -> list[str]:
    (folder / "run").mkdir()
    (folder / "run" / "logging.jsonl").write_text("", encoding="utf-8")
    return ["check-logs", str(folder / "run")]


def _bad_train_config(folder: Path) -> list[str]:
    return ["train", str(_write_set_up(folder, "learnig_rate: 0.001"))]


def _suffix_unknown_attribute(h: H) -> Observed:
    from coordexp.rows.token_types import compute_token_types

    labels = torch.tensor([1, 2])
    compute_token_types(
        tokenizer=tokenizer(), payload={"objects": []}, labels=labels, suffix_tokens=[["no_such_id"]]
    )
    return Observed()


def _step_case(
    case_id: str,
    input_: str,
    outcome: Outcome,
    *,
    coord_on: bool,
    mutate: Callable[[dict[str, Any]], None] | None = None,
    model: Callable[[], torch.nn.Module] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    spec: BatchSpec | None = None,
    check: Callable[[Observed], None] | None = None,
    layer: Layer = "loss",
) -> Case:
    """A case fed through stand-in trainer steps with every Stage-1 component on."""

    def run(h: H) -> Observed:
        trainer, lm = stage1_trainer(
            custom(coord_on, **(sections or {})), h.tmp_path, model=model() if model else None
        )
        obs = run_steps(trainer, lm, h.repeat, spec=spec, mutate=mutate)
        events = h.tmp_path / "instability_dumps" / "events.jsonl"
        obs.events = read_events(events) if events.exists() else []
        obs.files = sorted(p.name for p in (h.tmp_path / "instability_dumps").glob("step_*"))
        return obs

    return Case(case_id, layer, input_, outcome, run, check)


# ---------------------------------------------------------------- models with broken outputs


def _lm_with_bias(index: int, value: float) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        with torch.no_grad():
            model.head.bias[index] = value
        return model

    return build


class _LossTimes(ToyLM):
    """Finite logits, but the loss the model reports is multiplied by ``factor`` (NaN, inf)."""

    factor = float("nan")

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        out = super().forward(input_ids, labels=labels, **kwargs)
        if out.loss is not None:
            out.loss = out.loss * self.factor
        return out


class _InfLoss(_LossTimes):
    factor = float("inf")


class _NoLogits(ToyLM):
    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        out = super().forward(input_ids, labels=labels, **kwargs)
        return CausalLMOutput(loss=out.loss, logits=None)


class _ShortLogits(ToyLM):
    """Returns logits for one position fewer than the labels (a misaligned cut)."""

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        out = super().forward(input_ids, labels=labels, **kwargs)
        return CausalLMOutput(loss=out.loss, logits=out.logits[:, :-1])


class _SmallVocabLogits(ToyLM):
    """The model's logits stop one id short of the tokenizer's last coord token."""

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        out = super().forward(input_ids, labels=labels, **kwargs)
        return CausalLMOutput(loss=out.loss, logits=out.logits[..., : int(coord_ids().max())])


def _toy(cls: type[ToyLM]) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return cls(len(tokenizer()))

    return build


# ---------------------------------------------------------------- batch mutations


def _strip_coord_labels(batch: dict[str, Any]) -> None:
    batch["labels"] = batch["labels"].masked_fill(torch.isin(batch["labels"], coord_ids()), -100)


def _ignore_all_labels(batch: dict[str, Any]) -> None:
    batch["labels"].fill_(-100)
    if TOKEN_TYPES_KEY in batch:
        batch[TOKEN_TYPES_KEY].fill_(-1)


def _setter(key: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(batch: dict[str, Any]) -> None:
        batch[key] = value(batch)

    return mutate


def _set_meta(text: str | object) -> Callable[[dict[str, Any]], None]:
    return _setter(INSTABILITY_META_JSON_KEY, lambda b: text)


# ---------------------------------------------------------------- collator runs


def _collate_and_step(
    h: H,
    raw: list[Any],
    *,
    collator_kwargs: dict[str, Any] | None = None,
    base: Callable[[list[Any]], dict[str, Any]] | None = None,
    token_types: bool = True,
) -> Observed:
    """Collate ``raw`` ``repeat`` times with one collator and train a step on each batch."""
    collator = make_collator(**(collator_kwargs or {}))
    if base is not None:
        collator.base_collator = base
    if not token_types:
        collator.enrichers = tuple(e for e in collator.enrichers if e.name != "token_types")
    trainer, model = stage1_trainer(custom(False), h.tmp_path)
    obs = Observed()
    for _ in range(h.repeat):
        batch = collator(copy.deepcopy(raw))
        obs.batch = dict(batch)
        trainer.compute_loss(model, batch)
    obs.logged = trainer.logged("train")
    return obs


class _Writes:
    """An optional enricher that declares ``emits`` but writes ``writes``."""

    optional = True

    def __init__(self, emits: frozenset[str], writes: str, name: str = "rogue") -> None:
        self.name, self.emits, self.writes = name, emits, writes

    def __call__(self, batch: dict[str, Any], raw: list[Any]) -> None:
        batch[self.writes] = torch.full_like(batch["labels"], 3)


def _collator_extra_case(case_id: str, input_: str, key: str, rule: str, enricher: Any, types: bool) -> Case:
    def run(h: H) -> Observed:
        obs = Observed()
        collator = make_collator(extra_enrichers=(enricher,))
        if not types:
            collator.enrichers = tuple(e for e in collator.enrichers if e.name != "token_types")
        for _ in range(h.repeat):
            obs.batch = collator(raw_samples())
        return obs

    return Case(case_id, "collator", input_, Guarded(key, rule), run)


def _raises_on_build(enrichers: tuple[Any, ...]) -> Callable[[H], Observed]:
    def run(h: H) -> Observed:
        make_collator(extra_enrichers=enrichers)
        return Observed()

    return run


def _mismatched_payload() -> list[dict[str, Any]]:
    raw = raw_samples()
    payload = copy.deepcopy(raw[1]["assistant_payload"])
    payload["objects"][0]["desc"] = "a different description"
    raw[1]["assistant_payload"] = payload
    return raw


def _without_payload() -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "assistant_payload"} for s in raw_samples()]


def _check_types_row_ignored(row: int | None) -> Callable[[Observed], None]:
    def check(obs: Observed) -> None:
        assert obs.batch is not None
        types = obs.batch[TOKEN_TYPES_KEY]
        rows = range(types.shape[0]) if row is None else [row]
        assert all(bool((types[r] == -1).all()) for r in rows), "a misaligned row must be all IGNORE"
        if row is not None:
            assert any(bool((types[r] != -1).any()) for r in range(types.shape[0]) if r != row)

    return check


# ---------------------------------------------------------------- loss-specific runs


def _plain_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")


class _NoCoordTrainer(StandInTrainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.template.tokenizer = _plain_tokenizer()


def _no_coord_tokenizer(coord_on: bool) -> Callable[[H], Observed]:
    def run(h: H) -> Observed:
        trainer, model = stage1_trainer(custom(coord_on), h.tmp_path, model=ToyLM(10), base=_NoCoordTrainer)

        def batch() -> dict[str, Any]:
            ids = torch.randint(0, 10, (2, 12), generator=torch.Generator().manual_seed(1))
            return {"input_ids": ids, "labels": ids.masked_fill(torch.arange(12) < 4, -100)}

        return run_steps(trainer, model, h.repeat, batch_fn=batch)

    return run


def _kernel_fails(h: H) -> Observed:
    trainer, model = stage1_trainer(custom(True), h.tmp_path)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("kernel exploded")

    with mock.patch("coordexp.components.coord_loss.coord_loss", broken):
        return run_steps(trainer, model, h.repeat)


def _diagnostic_raises(h: H) -> Observed:
    trainer, model = stage1_trainer(custom(True), h.tmp_path)
    pipeline = trainer.stage1_pipeline()

    def boom(ctx: Any) -> None:
        raise RuntimeError("diagnostic bug")

    pipeline.token_metrics.report = boom
    return run_steps(trainer, model, h.repeat)


def _monitor_direct(h: H) -> Observed:
    monitor = InstabilityMonitor({"enabled": True}, output_dir=h.tmp_path)
    for step in range(h.repeat):
        monitor.observe(StepObservation(mode="train", global_step=step, loss="oops"))  # type: ignore[arg-type]
    return Observed()


def _monitor_bad_settings(h: H) -> Observed:
    InstabilityMonitor({"enabled": True, "ema_decay": 2.0}, output_dir=h.tmp_path)
    return Observed()


def _events_check(meta: object, count: int = REPEAT) -> Callable[[Observed], None]:
    def check(obs: Observed) -> None:
        assert len(obs.events) == count, obs.events
        assert all(e["instability_meta_json"] == meta for e in obs.events)
        assert obs.files == []  # no sample dump from a meta that cannot be read

    return check


def _unwritable_dump_dir(h: H) -> Observed:
    blocker = h.tmp_path / "not_a_dir"
    blocker.write_text("a file where the dump folder should be")
    sections = {"instability_monitor": {"dump_dir": str(blocker / "dumps"), "guard": {"max_abs_logit": 1e-3}}}
    trainer, model = stage1_trainer(custom(True, **sections), h.tmp_path)
    return run_steps(trainer, model, h.repeat)


_OVERFLOW = {"instability_monitor": {"dump_samples": True, "guard": {"max_abs_logit": 1e-3}}}
_MONITOR_EVERY_STEP = {"instability_monitor": {"guard": {"max_abs_logit": 1e-3}}}
_NONFINITE_BASE = frozenset({K.BASE_CE_LOSS, K.BASE_CE_LOSS_PER_SAMPLE, K.STAGE1_TOTAL_LOSS_PER_SAMPLE_EST})
_TOKEN_KEYS = frozenset({K.TOKEN_ACC_TOP5, K.TEXT_TOKEN_ACC}) | TYPED_KEYS | COORD_MONITOR_KEYS


def _losses_zero(obs: Observed) -> None:
    assert obs.losses == [0.0] * REPEAT, obs.losses


def _nan_loss_event(obs: Observed) -> None:
    assert obs.events and all(e["loss"] == "nan" and e["loss_finite"] is False for e in obs.events)
    assert all("nonfinite_loss" in e["reasons"] for e in obs.events)


def _pack_fallback(obs: Observed) -> None:
    assert obs.logged[K.PACK_NUM_SAMPLES] == [3.0] * REPEAT


# ---------------------------------------------------------------- the matrix


def _refused_option_case(case_id: str, input_: str, fragment: str, **options: Any) -> Case:
    """A training option the one-pass Stage-1 loss cannot honour: refused while the trainer is built
    (ms-swift's ``create_loss_and_eval_metric``), before any step."""

    def run(h: H) -> Observed:
        stage1_trainer(custom(False), h.tmp_path, base=SwiftLikeTrainer, args=options)
        return Observed()

    return Case(case_id, "loss", input_, Raises(Stage1OptionError, fragment), run)


_NO_LOGITS = custom(False, stage1_pass={"materialize_logits": False})


def _no_logits_trainer(h: H, block: dict[str, Any], **options: Any) -> Observed:
    stage1_trainer(block, h.tmp_path, base=SwiftLikeTrainer, args=options)
    return Observed()


def _no_logits_step(h: H) -> Observed:
    trainer, model = stage1_trainer(_NO_LOGITS, h.tmp_path, base=SwiftLikeTrainer)  # ToyLM: no head getter
    trainer.compute_loss(model, _full_batch())
    return Observed()


# ---------------------------------------------------------------- resume and ranks


def _train_resuming(h: H, resume_from_checkpoint: object) -> Observed:
    """``coordexp.launch.train`` with a resume setting and nothing loadable: the resume value must
    be judged first (a run that ignored it would fail later, on the missing model)."""
    from coordexp.launch import train
    from coordexp.launch.config import DataSection, ModelSection, TrainConfig

    (h.tmp_path / "run").mkdir(exist_ok=True)
    cfg = TrainConfig(
        model=ModelSection(path=str(h.tmp_path / "no_model")),
        data=DataSection(train=[str(h.tmp_path / "no_data.jsonl")]),
        training={"output_dir": str(h.tmp_path / "run"), "resume_from_checkpoint": resume_from_checkpoint},
    )
    train(cfg)
    return Observed()


def _resume_with_unreadable_monitor_state(h: H) -> Observed:
    """A resume whose checkpoint holds an unreadable monitor state (``trainer_state.json`` edited)."""
    from transformers import TrainerControl, TrainerState

    every_step = {"guard": {"enabled": False, "max_abs_logit": 1e-3}}  # an event (with its EMA) per step
    trainer, lm = stage1_trainer(custom(True, instability_monitor=every_step), h.tmp_path)
    callback = trainer.stage1_pipeline().monitor.state_callback()
    saved = {"args": {}, "attributes": {"monitor_state": {"ranks": "not a list"}}}
    state = TrainerState(global_step=3, stateful_callbacks={type(callback).__name__: saved})
    callback.on_train_begin(trainer.args, state, TrainerControl())
    obs = run_steps(trainer, lm, h.repeat)
    obs.events = read_events(h.tmp_path / "instability_dumps" / "events.jsonl")
    return obs


_RANKS_TIMEOUT_S = 120


def _failure_on_rank_1(h: H, failure: str, own: str) -> Observed:
    """Two real gloo ranks (``rank_failure_worker.py``), rank 1 fails with ``own``; re-raises the
    exception rank 0 ended with."""
    import pickle
    import time

    import torch.multiprocessing as mp

    from tests.hardening import rank_failure_worker as worker

    assert worker.PG_TIMEOUT_S > _RANKS_TIMEOUT_S  # ending in time cannot be the group timeout
    ctx = mp.start_processes(
        worker.worker,
        args=(str(h.tmp_path / "init"), str(h.tmp_path), failure),
        nprocs=worker.WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + _RANKS_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"rank 0 still waits for the failed rank 1 after {_RANKS_TIMEOUT_S} s")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
    ended = (h.tmp_path / "rank1.txt").read_text(encoding="utf-8")
    assert ended.startswith(own), ended
    raise pickle.loads((h.tmp_path / "rank0.pkl").read_bytes())


CASES: tuple[Case, ...] = (
    # -- collator: enrichers are best-effort, their output is guarded ------------------------
    Case(
        "collator-optional-enricher-fails",
        "collator",
        "token-types enricher raises on every batch (template suffix names a missing tokenizer attribute)",
        SkipsWarnsOnce(
            absent=TYPED_KEYS, present=RUNTIME_KEYS | {K.TEXT_TOKEN_ACC}, warns="optional batch enricher"
        ),
        lambda h: _collate_and_step(h, raw_samples(), collator_kwargs={"suffix": [["no_such_attribute"]]}),
        lambda obs: _assert_absent(obs.batch, TOKEN_TYPES_KEY),
    ),
    Case(
        "collator-rows-unmatchable",
        "collator",
        "base collator returns fewer rows than samples (rows cannot be matched to samples)",
        SkipsWarnsOnce(absent=TYPED_KEYS, present=RUNTIME_KEYS, warns="'instability_meta' failed"),
        lambda h: _collate_and_step(
            h, raw_samples(), base=lambda items: make_collator().base_collator(items[:2])
        ),
        lambda obs: _assert_labels(obs, ["default", "default"]),
    ),
    Case(
        "collator-packed-types-misaligned",
        "collator",
        "packed row truncated by the base collator: per-sample types no longer add up to the row",
        SkipsWarnsOnce(absent=TYPED_KEYS, present=RUNTIME_KEYS | {K.TEXT_TOKEN_ACC}),
        lambda h: _collate_and_step(h, [raw_samples()], collator_kwargs={"max_length": 150}),
        _check_types_row_ignored(None),
    ),
    Case(
        "collator-payload-mismatch",
        "collator",
        "one sample's assistant_payload does not re-serialise to its supervised label ids",
        SkipsWarnsOnce(present=TYPED_KEYS | RUNTIME_KEYS, warns="gets no token types"),
        lambda h: _collate_and_step(h, _mismatched_payload()),
        _check_types_row_ignored(1),
    ),
    Case(
        "collator-no-payload",
        "collator",
        "no sample carries assistant_payload (source fields dropped by remove_unused_columns)",
        SkipsWarnsOnce(
            absent=TYPED_KEYS, present=RUNTIME_KEYS | {K.TEXT_TOKEN_ACC}, warns="no sample carries"
        ),
        lambda h: _collate_and_step(h, _without_payload()),
        _check_types_row_ignored(None),
    ),
    _collator_extra_case(
        "collator-undeclared-extra",
        "an enricher adds `foo_extra`, a key the batch-extras contract does not declare",
        "foo_extra",
        "undeclared_extra",
        _Writes(frozenset(), "foo_extra"),
        types=True,
    ),
    _collator_extra_case(
        "collator-extra-not-in-emits",
        "an enricher writes `token_types` without declaring it in its `emits`",
        TOKEN_TYPES_KEY,
        "undeclared_by_enricher",
        _Writes(frozenset(), TOKEN_TYPES_KEY),
        types=False,
    ),
    Case(
        "collator-enricher-declares-unknown-extra",
        "collator",
        "an enricher declares `emits = {'foo_extra'}` (wiring error, at build time)",
        Raises(ContractViolation, "declares extras the batch-extras contract does not"),
        _raises_on_build((_Writes(frozenset({"foo_extra"}), "foo_extra"),)),
    ),
    Case(
        "collator-two-enrichers-same-extra",
        "collator",
        "two enrichers emit the same extra (wiring error, at build time)",
        Raises(ValueError, "emits keys another enricher already emits"),
        _raises_on_build((DatasetMetaEnricher(),)),
    ),
    # -- guards: every declared extra with a wrong type, dtype, shape, length or value --------
    _extra_case(
        "guards-dataset-labels-not-a-list",
        "`dataset_labels` is a str",
        DATASET_LABELS_KEY,
        "type",
        _setter(DATASET_LABELS_KEY, lambda b: "lvis"),
    ),
    _extra_case(
        "guards-dataset-labels-item-not-str",
        "`dataset_labels` holds an int",
        DATASET_LABELS_KEY,
        "item_type",
        _setter(DATASET_LABELS_KEY, lambda b: ["lvis", 3, "coco"]),
    ),
    _extra_case(
        "guards-dataset-labels-wrong-length",
        "`dataset_labels` has 1 entry for 3 rows",
        DATASET_LABELS_KEY,
        "length",
        _setter(DATASET_LABELS_KEY, lambda b: ["lvis"]),
    ),
    _extra_case(
        "guards-dataset-segments-item-not-int",
        "`dataset_segments` holds floats",
        DATASET_SEGMENTS_KEY,
        "item_type",
        _setter(DATASET_SEGMENTS_KEY, lambda b: [10.0, 12.0, 9.0]),
    ),
    _extra_case(
        "guards-dataset-segments-bool-item",
        "`dataset_segments` holds a bool",
        DATASET_SEGMENTS_KEY,
        "item_type",
        _setter(DATASET_SEGMENTS_KEY, lambda b: [True, 12, 9]),
    ),
    _extra_case(
        "guards-dataset-segments-negative",
        "`dataset_segments` holds a negative length",
        DATASET_SEGMENTS_KEY,
        "values",
        _setter(DATASET_SEGMENTS_KEY, lambda b: [-1, 12, 9]),
    ),
    _extra_case(
        "guards-dataset-segments-wrong-length",
        "`dataset_segments` has 2 entries for 3 rows",
        DATASET_SEGMENTS_KEY,
        "length",
        _setter(DATASET_SEGMENTS_KEY, lambda b: [10, 12]),
    ),
    _extra_case(
        "guards-pack-num-samples-not-a-tensor",
        "`pack_num_samples` is a list",
        PACK_NUM_SAMPLES_KEY,
        "type",
        _setter(PACK_NUM_SAMPLES_KEY, lambda b: [1, 1, 1]),
    ),
    _extra_case(
        "guards-pack-num-samples-wrong-dtype",
        "`pack_num_samples` is float32",
        PACK_NUM_SAMPLES_KEY,
        "dtype",
        _setter(PACK_NUM_SAMPLES_KEY, lambda b: torch.ones(3)),
    ),
    _extra_case(
        "guards-pack-num-samples-wrong-shape",
        "`pack_num_samples` is 2-D `[1, batch]`",
        PACK_NUM_SAMPLES_KEY,
        "shape",
        _setter(PACK_NUM_SAMPLES_KEY, lambda b: torch.ones((1, 3), dtype=torch.long)),
    ),
    _extra_case(
        "guards-pack-num-samples-rows-mismatch",
        "`pack_num_samples` has 2 entries for 3 rows",
        PACK_NUM_SAMPLES_KEY,
        "shape",
        _setter(PACK_NUM_SAMPLES_KEY, lambda b: torch.ones(2, dtype=torch.long)),
    ),
    _extra_case(
        "guards-token-types-not-a-tensor",
        "`token_types` is a nested list",
        TOKEN_TYPES_KEY,
        "type",
        _setter(TOKEN_TYPES_KEY, lambda b: b[TOKEN_TYPES_KEY].tolist()),
    ),
    _extra_case(
        "guards-token-types-wrong-dtype",
        "`token_types` is int32",
        TOKEN_TYPES_KEY,
        "dtype",
        _setter(TOKEN_TYPES_KEY, lambda b: b[TOKEN_TYPES_KEY].to(torch.int32)),
    ),
    _extra_case(
        "guards-token-types-wrong-shape",
        "`token_types` is one position shorter than `labels`",
        TOKEN_TYPES_KEY,
        "shape",
        _setter(TOKEN_TYPES_KEY, lambda b: b[TOKEN_TYPES_KEY][:, :-1]),
    ),
    _extra_case(
        "guards-token-types-invalid-value",
        "`token_types` holds 7 (not IGNORE/DESC/COORD/FORMAT)",
        TOKEN_TYPES_KEY,
        "values",
        _setter(TOKEN_TYPES_KEY, lambda b: b[TOKEN_TYPES_KEY].masked_fill(b["labels"] != -100, 7)),
    ),
    _extra_case(
        "guards-box-slots-wrong-dtype",
        "`box_slots` is float32",
        BOX_SLOTS_KEY,
        "dtype",
        _setter(BOX_SLOTS_KEY, lambda b: b[BOX_SLOTS_KEY].float()),
    ),
    _extra_case(
        "guards-box-slots-wrong-shape",
        "`box_slots` is one position shorter than `labels`",
        BOX_SLOTS_KEY,
        "shape",
        _setter(BOX_SLOTS_KEY, lambda b: b[BOX_SLOTS_KEY][:, :-1]),
    ),
    _extra_case(
        "guards-box-slots-invalid-value",
        "`box_slots` holds 4 (not UNREAD/NONE/X1/Y1/X2/Y2)",
        BOX_SLOTS_KEY,
        "values",
        _setter(BOX_SLOTS_KEY, lambda b: b[BOX_SLOTS_KEY].masked_fill(b[BOX_SLOTS_KEY] == 3, 4)),
    ),
    _extra_case(
        "guards-box-pairs-wrong-shape",
        "`box_pairs` has 2 rows for 3",
        BOX_PAIRS_KEY,
        "shape",
        _setter(BOX_PAIRS_KEY, lambda b: b[BOX_PAIRS_KEY][:2]),
    ),
    _extra_case(
        "guards-box-pairs-invalid-value",
        "`box_pairs` holds 3 (not NONE/FIRST/OTHER_DESC/SAME_DESC)",
        BOX_PAIRS_KEY,
        "values",
        _setter(BOX_PAIRS_KEY, lambda b: b[BOX_PAIRS_KEY].masked_fill(b[BOX_PAIRS_KEY] == 0, 3)),
    ),
    _extra_case(
        "guards-meta-json-not-a-string",
        "`instability_meta_json` is a parsed list, not JSON text",
        INSTABILITY_META_JSON_KEY,
        "type",
        _setter(INSTABILITY_META_JSON_KEY, lambda b: json.loads(_meta_json(3))),
    ),
    _extra_case(
        "guards-meta-json-malformed",
        "`instability_meta_json` is `[{` (not JSON)",
        INSTABILITY_META_JSON_KEY,
        "json",
        _set_meta("[{"),
    ),
    _extra_case(
        "guards-meta-json-truncated",
        "`instability_meta_json` cut in the middle",
        INSTABILITY_META_JSON_KEY,
        "json",
        _setter(INSTABILITY_META_JSON_KEY, lambda b: _meta_json(3)[: len(_meta_json(3)) // 2]),
    ),
    _extra_case(
        "guards-meta-json-schema-mismatch",
        "`instability_meta_json` rows lack `samples`",
        INSTABILITY_META_JSON_KEY,
        "json_schema",
        _set_meta('[{"num_samples": 1, "total_length": 3}]'),
    ),
    _extra_case(
        "guards-meta-json-rows-mismatch",
        "`instability_meta_json` has 2 entries for 3 rows",
        INSTABILITY_META_JSON_KEY,
        "length",
        _setter(INSTABILITY_META_JSON_KEY, lambda b: _meta_json(2)),
    ),
    # -- metrics: the reporter's catalog guard -----------------------------------------------
    _metric_case(
        "metrics-per-dataset-prefix",
        "write `lvis/token_acc` (dataset label as a path segment)",
        "lvis/token_acc",
        0.5,
        "per_dataset_bucket",
    ),
    _metric_case(
        "metrics-per-dataset-suffix",
        "write `token_acc_coco` (dataset label as a suffix)",
        "token_acc_coco",
        0.5,
        "per_dataset_bucket",
    ),
    _metric_case(
        "metrics-undeclared-key",
        "write `my/new_metric` (not in the catalog)",
        "my/new_metric",
        0.5,
        "undeclared",
    ),
    _metric_case(
        "metrics-eval-prefixed-write",
        "write `eval_coord_diag/loss` (ms-swift adds `eval_`)",
        "eval_coord_diag/loss",
        0.5,
        "eval_prefix",
    ),
    _metric_case(
        "metrics-framework-key", "write `loss` (owned by the framework)", "loss", 0.5, "framework_owned"
    ),
    _metric_case(
        "metrics-nan-value", "write NaN to `coord_diag/loss`", K.COORD_DIAG_LOSS, float("nan"), "non_finite"
    ),
    _metric_case(
        "metrics-inf-value", "write +inf to `coord_diag/w1`", K.COORD_DIAG_W1, float("inf"), "non_finite"
    ),
    _metric_case(
        "metrics-fraction-above-one", "write 1.5 to `desc_token_frac`", K.DESC_TOKEN_FRAC, 1.5, "out_of_range"
    ),
    _metric_case(
        "metrics-negative-count",
        "write -1 to `coord_diag/coord_tokens`",
        K.COORD_DIAG_COORD_TOKENS,
        -1.0,
        "out_of_range",
    ),
    _metric_case(
        "metrics-not-a-number",
        "write the string `'abc'` to `text_token_acc`",
        K.TEXT_TOKEN_ACC,
        "abc",
        "not_a_number",
    ),
    Case(
        "metrics-diagnostic-raises",
        "metrics",
        "the token-metrics diagnostic raises on every step",
        SkipsWarnsOnce(
            absent=frozenset({K.TOKEN_ACC_TOP5, K.TEXT_TOKEN_ACC}) | TYPED_KEYS,
            present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.BASE_CE_LOSS},
            warns="diagnostic 'token_metrics' failed",
        ),
        _diagnostic_raises,
    ),
    # -- loss: the coord objective fails fast, its diagnostics never write NaN -----------------
    _step_case(
        "loss-nan-logits-coord-on",
        "a NaN column in every logit row, coord loss on",
        SkipsWarnsOnce(absent=_NONFINITE_BASE, present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=True,
        model=_lm_with_bias(5, float("nan")),
    ),
    _step_case(
        "loss-nan-logits-coord-off",
        "a NaN column in every logit row, coord loss off (diagnostics only)",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=False,
        model=_lm_with_bias(5, float("nan")),
    ),
    _step_case(
        "loss-inf-logits-coord-on",
        "a +inf column in every logit row, coord loss on",
        SkipsWarnsOnce(absent=_NONFINITE_BASE, present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=True,
        model=_lm_with_bias(7, float("inf")),
    ),
    _step_case(
        "loss-inf-logits-coord-off",
        "a +inf column in every logit row, coord loss off",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=False,
        model=_lm_with_bias(7, float("inf")),
    ),
    _step_case(
        "loss-nan-loss",
        "the model's loss is NaN (finite logits), coord loss on",
        SkipsWarnsOnce(
            absent=_NONFINITE_BASE,
            present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.BASE_CE_NONCOORD_TOKENS},
            warns="nonfinite_loss",
        ),
        coord_on=True,
        model=_toy(_LossTimes),
        check=_nan_loss_event,
    ),
    _step_case(
        "loss-inf-loss",
        "the model's loss is +inf (finite logits), coord loss on",
        SkipsWarnsOnce(
            absent=_NONFINITE_BASE, present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS}, warns="nonfinite_loss"
        ),
        coord_on=True,
        model=_toy(_InfLoss),
    ),
    _step_case(
        "loss-nan-loss-guarded",
        "the model's loss is NaN with `instability_monitor.guard.enabled`",
        SkipsWarnsOnce(absent=_NONFINITE_BASE, present=RUNTIME_KEYS, warns="nonfinite_loss"),
        coord_on=True,
        model=_toy(_LossTimes),
        sections={"instability_monitor": {"guard": {"enabled": True}}},
        check=_losses_zero,
    ),
    _step_case(
        "loss-labels-all-ignored-coord-on",
        "every label is -100, coord loss on",
        SkipsWarnsOnce(
            absent=COORD_KEYS | BASE_CE_KEYS | _TOKEN_KEYS, present=RUNTIME_KEYS | {K.PACK_NUM_SAMPLES}
        ),
        coord_on=True,
        mutate=_ignore_all_labels,
    ),
    _step_case(
        "loss-labels-all-ignored-coord-off",
        "every label is -100, coord loss off",
        SkipsWarnsOnce(absent=COORD_KEYS | _TOKEN_KEYS | {K.PACK_NUM_SAMPLES}, present=RUNTIME_KEYS),
        coord_on=False,
        mutate=_ignore_all_labels,
    ),
    _step_case(
        "loss-no-coord-tokens-coord-on",
        "a batch without coord targets, coord loss on",
        SkipsWarnsOnce(absent=COORD_KEYS, present=RUNTIME_KEYS | BASE_CE_KEYS | {K.PACK_NUM_SAMPLES}),
        coord_on=True,
        mutate=_strip_coord_labels,
        spec=BatchSpec(packed=False, with_types=False),
    ),
    _step_case(
        "loss-no-coord-tokens-coord-off",
        "a batch without coord targets, coord loss off",
        SkipsWarnsOnce(absent=COORD_KEYS, present=RUNTIME_KEYS | {K.TEXT_TOKEN_ACC}),
        coord_on=False,
        mutate=_strip_coord_labels,
        spec=BatchSpec(packed=False, with_types=False),
    ),
    _step_case(
        "loss-coord-ids-beyond-vocab-coord-on",
        "coord ids beyond the logits' vocabulary (tokenizer and embedding disagree), coord loss on",
        Raises(CoordObjectiveError, "beyond the logits' vocabulary"),
        coord_on=True,
        model=_toy(_SmallVocabLogits),
    ),
    _step_case(
        "loss-coord-ids-beyond-vocab-coord-off",
        "coord ids beyond the logits' vocabulary, coord loss off",
        SkipsWarnsOnce(
            absent=COORD_KEYS | COORD_MONITOR_KEYS,
            present=RUNTIME_KEYS | {K.TEXT_TOKEN_ACC},
            warns="beyond the logits' vocabulary",
        ),
        coord_on=False,
        model=_toy(_SmallVocabLogits),
    ),
    Case(
        "loss-tokenizer-without-coord-tokens-coord-on",
        "loss",
        "the tokenizer has no coord tokens, coord loss on (fails when the trainer is built)",
        Raises(CoordObjectiveError, "coord vocabulary is unusable"),
        _no_coord_tokenizer(True),
    ),
    Case(
        "loss-tokenizer-without-coord-tokens-coord-off",
        "loss",
        "the tokenizer has no coord tokens, coord loss off",
        SkipsWarnsOnce(
            absent=COORD_KEYS | COORD_MONITOR_KEYS,
            present=RUNTIME_KEYS | {K.TEXT_TOKEN_ACC},
            warns="coord tokens unavailable",
        ),
        _no_coord_tokenizer(False),
    ),
    _step_case(
        "loss-no-labels-coord-on",
        "a batch without `labels`, coord loss on",
        Raises(CoordObjectiveError, "the batch has no labels"),
        coord_on=True,
        mutate=lambda b: b.pop("labels"),
    ),
    _step_case(
        "loss-no-logits-coord-on",
        "the model returns no logits, coord loss on",
        Raises(CoordObjectiveError, "the model returned no logits"),
        coord_on=True,
        model=_toy(_NoLogits),
    ),
    _step_case(
        "loss-logits-labels-misaligned-coord-on",
        "logits one position shorter than the labels, coord loss on",
        Raises(CoordObjectiveError, "do not line up with labels"),
        coord_on=True,
        model=_toy(_ShortLogits),
    ),
    _step_case(
        "loss-logits-labels-misaligned-coord-off",
        "logits one position shorter than the labels, coord loss off",
        SkipsWarnsOnce(
            absent=COORD_KEYS | _TOKEN_KEYS, present=RUNTIME_KEYS, warns="do not line up with labels"
        ),
        coord_on=False,
        model=_toy(_ShortLogits),
    ),
    Case(
        "loss-coord-kernel-fails",
        "loss",
        "the coord loss kernel raises, coord loss on",
        Raises(CoordObjectiveError, "refusing to train on without it"),
        _kernel_fails,
    ),
    _step_case(
        "loss-token-types-wrong-dtype-unguarded",
        "float `token_types` reach the trainer (guard off / custom collator), coord loss on",
        SkipsWarnsOnce(absent=TYPED_KEYS, present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=True,
        mutate=_setter(TOKEN_TYPES_KEY, lambda b: b[TOKEN_TYPES_KEY].float()),
    ),
    _step_case(
        "loss-token-types-misaligned-unguarded",
        "`token_types` shorter than `labels` reach the trainer (a cut that cannot be reproduced)",
        SkipsWarnsOnce(absent=TYPED_KEYS, present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=True,
        mutate=_setter(TOKEN_TYPES_KEY, lambda b: b[TOKEN_TYPES_KEY][:, 2:]),
    ),
    _step_case(
        "loss-pack-num-samples-not-a-tensor-unguarded",
        "`pack_num_samples` as a list reaches the trainer; per-sample keys fall back to the row count",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.PACK_NUM_SAMPLES, K.COORD_DIAG_LOSS_PER_SAMPLE}),
        coord_on=True,
        mutate=_setter(PACK_NUM_SAMPLES_KEY, lambda b: [1, 1, 1]),
        check=_pack_fallback,
    ),
    _step_case(
        "loss-pack-num-samples-nan-unguarded",
        "float `pack_num_samples` holding NaN reaches the trainer",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.PACK_NUM_SAMPLES, K.BASE_CE_LOSS_PER_SAMPLE}),
        coord_on=True,
        mutate=_setter(PACK_NUM_SAMPLES_KEY, lambda b: torch.full((3,), float("nan"))),
        check=_pack_fallback,
    ),
    _step_case(
        "loss-dataset-labels-not-a-list-unguarded",
        "`dataset_labels` as an int reaches the trainer",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS, K.TEXT_TOKEN_ACC}),
        coord_on=True,
        mutate=_setter(DATASET_LABELS_KEY, lambda b: 5),
    ),
    # -- monitor: never raises, records what it can --------------------------------------------
    _step_case(
        "monitor-meta-json-malformed",
        "`instability_meta_json` is `[{` at an instability event with `dump_samples` on",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS}, warns="sample dump failed"),
        coord_on=True,
        mutate=_set_meta("[{"),
        sections=_OVERFLOW,
        check=_events_check("[{"),
        layer="monitor",
    ),
    _step_case(
        "monitor-meta-json-truncated",
        "`instability_meta_json` cut in the middle at an instability event with `dump_samples` on",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS}, warns="sample dump failed"),
        coord_on=True,
        mutate=_set_meta(_meta_json(3)[:100]),
        sections=_OVERFLOW,
        check=_events_check(_meta_json(3)[:100]),
        layer="monitor",
    ),
    _step_case(
        "monitor-meta-json-not-a-string",
        "`instability_meta_json` is a dict at an instability event",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS}, warns="instability_meta_json is a dict"),
        coord_on=True,
        mutate=_set_meta({"rows": 3}),
        sections=_MONITOR_EVERY_STEP,
        check=_events_check(None),
        layer="monitor",
    ),
    Case(
        "monitor-dump-dir-unwritable",
        "monitor",
        "`instability_monitor.dump_dir` lies under a regular file: events.jsonl cannot be written",
        SkipsWarnsOnce(present=RUNTIME_KEYS | {K.COORD_DIAG_LOSS}, warns="cannot append"),
        _unwritable_dump_dir,
    ),
    Case(
        "monitor-unreadable-observation",
        "monitor",
        "a step observation whose loss is the string `'oops'`",
        SkipsWarnsOnce(warns="unreadable observation skipped"),
        _monitor_direct,
    ),
    Case(
        "monitor-invalid-settings",
        "monitor",
        "the monitor built directly with `ema_decay: 2.0` (bypassing the YAML loader)",
        Raises(ValueError, "ema_decay must be < 1"),
        _monitor_bad_settings,
    ),
    # -- config: the training YAML names the key path of every error ----------------------------
    _config_case(
        "config-temperature-zero",
        "`custom.coord_soft_ce_w1.temperature: 0`",
        "custom.coord_soft_ce_w1.temperature: must be > 0",
        lambda r: r.update(custom={"coord_soft_ce_w1": {"temperature": 0}}),
    ),
    _config_case(
        "config-unknown-layout",
        "`data.layout: ragged`",
        "data.layout: must be one of 'padded', 'padding_free' or 'packing'",
        lambda r: r["data"].update(layout="ragged"),
    ),
    _config_case(
        "config-unknown-answer-format",
        "`data.answer_format: yaml`",
        "data.answer_format: must be one of 'auto', 'json' or 'coordjson'",
        lambda r: r["data"].update(answer_format="yaml"),
    ),
    _config_case(
        "config-model-path-missing",
        "`model:` without `path`",
        "model.path: Field required",
        lambda r: r["model"].clear(),
    ),
    _config_case(
        "config-unknown-top-level-key",
        "a top-level `trainer:` section",
        "trainer: unknown key",
        lambda r: r.update(trainer={}),
    ),
    _config_case(
        "config-unknown-custom-key",
        "`custom.coord_soft_ce_w1.tempreature` (typo)",
        "custom.coord_soft_ce_w1.tempreature: unknown key",
        lambda r: r.update(custom={"coord_soft_ce_w1": {"tempreature": 1.0}}),
    ),
    _config_case(
        "config-unknown-custom-section",
        "a `custom.foo:` section",
        "custom.foo: unknown key",
        lambda r: r.update(custom={"foo": {}}),
    ),
    _config_case(
        "config-contracts-mode-invalid",
        "`custom.contracts.mode: loud`",
        "custom.contracts.mode: must be one of 'strict', 'warn' or 'off'",
        lambda r: r.update(custom={"contracts": {"mode": "loud"}}),
    ),
    _config_case(
        "config-ema-decay-one",
        "`custom.instability_monitor.ema_decay: 1.0`",
        "custom.instability_monitor.ema_decay: must be < 1",
        lambda r: r.update(custom={"instability_monitor": {"ema_decay": 1.0}}),
    ),
    _config_case(
        "config-nested-guard-bound",
        "`custom.instability_monitor.guard.max_abs_logit: -1`",
        "custom.instability_monitor.guard.max_abs_logit: must be > 0",
        lambda r: r.update(custom={"instability_monitor": {"guard": {"max_abs_logit": -1}}}),
    ),
    _config_case(
        "config-bool-not-bool",
        "`custom.token_type_metrics.enabled: 'yes please'`",
        "custom.token_type_metrics.enabled: must be a boolean",
        lambda r: r.update(custom={"token_type_metrics": {"enabled": "yes please"}}),
    ),
    _config_case(
        "config-list-not-list",
        "`custom.token_type_metrics.include: lvis` (a string)",
        "custom.token_type_metrics.include: must be a list",
        lambda r: r.update(custom={"token_type_metrics": {"include": "lvis"}}),
    ),
    _config_case(
        "config-unknown-early-stop-reason",
        "`custom.instability_monitor.early_stop.on_reasons: [bogus]`",
        "custom.instability_monitor.early_stop.on_reasons.0: must be one of",
        lambda r: r.update(custom={"instability_monitor": {"early_stop": {"on_reasons": ["bogus"]}}}),
    ),
    _config_case(
        "config-coord-loss-all-weights-zero",
        "`custom.coord_soft_ce_w1` enabled with every weight 0",
        "custom.coord_soft_ce_w1: enabled with every weight 0",
        lambda r: r.update(
            custom={
                "coord_soft_ce_w1": {"enabled": True, "soft_ce_weight": 0, "w1_weight": 0, "gate_weight": 0}
            }
        ),
    ),
    _config_case(
        "config-custom-not-a-mapping",
        "`custom: [1]`",
        "custom: must be a mapping",
        lambda r: r.update(custom=[1]),
    ),
    _config_case(
        "config-max-length-zero",
        "`model.max_length: 0`",
        "model.max_length: must be > 0",
        lambda r: r["model"].update(max_length=0),
    ),
    _config_case(
        "config-no-train-files",
        "`data.train: []`",
        "data.train: List should have at least 1 item",
        lambda r: r["data"].update(train=[]),
    ),
    _yaml_case(
        "config-yaml-syntax-error", "a YAML file with a syntax error", "not valid YAML", "model: [unclosed\n"
    ),
    _yaml_case(
        "config-yaml-top-level-list",
        "a YAML file whose top level is a list",
        "the top level must be a mapping",
        "- model\n- data\n",
    ),
    _yaml_case("config-yaml-missing-file", "a config path that does not exist", "no such config file", None),
    # -- data: dumps find each row where it was loaded; refused rows are named by file:line ---------
    _data_dump_case(
        "data-dump-uppercase-label",
        'rows labelled `"dataset": "LVIS"` (upper case)',
        train={"lvis_upper": lambda r: r.update(dataset="LVIS")},
    ),
    _data_dump_case(
        "data-dump-metadata-label",
        "rows labelled through `metadata.dataset` (no top-level `dataset`)",
        train={"meta_label": data_support.label_via_metadata("coco")},
    ),
    _data_dump_case(
        "data-dump-label-in-two-files",
        "one dataset label spread over two train files",
        train={"part_a": lambda r: r.update(dataset="o365"), "part_b": lambda r: r.update(dataset="o365")},
    ),
    _data_dump_case(
        "data-dump-user-base-idx",
        "rows whose own `base_idx` disagrees with their position, in a file with blank lines",
        train={"reversed": lambda r: r.update(base_idx=5 - r["base_idx"])},
        blank_before=(0, 3),
    ),
    _data_dump_case(
        "data-dump-eval-split",
        "eval batches, with train and eval files sharing the label `lvis`",
        train={"train_lvis": None},
        val={"val_lvis": None},
    ),
    _data_refused_case(
        "data-refused-row",
        "a train row the template refuses (longer than `max_length`), default tolerance",
        "rows.jsonl:3: MaxLengthError",
        lambda: {2: data_support.too_long_row()},
    ),
    _data_refused_case(
        "data-zero-supervised-row",
        "a row with a user turn only (nothing supervised)",
        "rows.jsonl:2: nothing supervised",
        lambda: {1: data_support.user_turn_only_row()},
    ),
    _data_refused_case(
        "data-coord-token-out-of-range",
        "an answer with the coord token of bin 1555 (outside the 1000 bins)",
        "rows.jsonl:4: assistant text has a coord token outside the 1000 bins",
        lambda: {3: data_support.out_of_range_coord_row()},
    ),
    _data_refused_case(
        "data-missing-image",
        "a row whose `images` names a file that does not exist beside its JSONL file",
        "rows.jsonl:2: images: media file not found: 'images/missing.png' (relative paths resolve against",
        lambda: {1: {**data_support.demo_rows(1)[0], "images": ["images/missing.png"]}},
    ),
    _data_refused_case(
        "data-refused-over-tolerance",
        "2 of 5 rows refused with `data.max_refused_fraction: 0.25`",
        "(2 of 5 train rows refused, data.max_refused_fraction is 0.25;",
        lambda: {1: data_support.user_turn_only_row(), 4: data_support.too_long_row()},
        max_refused_fraction=0.25,
    ),
    # -- data: answers the CoordJSON grammar refuses get no token types (listed, file:line) ------
    _data_untyped_case(
        "data-untyped-bare-coord-outside-geometry",
        "a CoordJSON answer with a bare coord token in the objects array, outside any geometry array",
        '{"objects": [{"desc": "cat", "bbox_2d": ' + _BOX + "}, <|coord_5|>]}",
        "not a JSON or CoordJSON answer: parse_failed: expected a record or ']' in the objects array",
    ),
    _data_untyped_case(
        "data-untyped-nested-geometry",
        "a CoordJSON `bbox_2d` written as nested pairs `[[x1, y1], [x2, y2]]`",
        '{"objects": [{"desc": "cat", "bbox_2d": [[<|coord_1|>, <|coord_2|>], [<|coord_3|>, <|coord_4|>]]}]}',
        "not a JSON or CoordJSON answer: objects[0]: wrong_arity: bbox_2d[0] is not a coord token",
    ),
    _data_untyped_case(
        "data-untyped-wrong-element-count",
        "a CoordJSON `bbox_2d` with 3 elements",
        '{"objects": [{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>]}]}',
        "not a JSON or CoordJSON answer: objects[0]: wrong_arity: bbox_2d has 3 elements, not 4",
    ),
    _data_untyped_case(
        "data-untyped-unterminated-record",
        "a CoordJSON answer cut inside its last record",
        '{"objects": [{"desc": "cat", "bbox_2d": ' + _BOX + '}, {"desc": "dog", "bbox_2d": [<|coord_1|>',
        "not a JSON or CoordJSON answer: objects[1]: dropped_incomplete_tail: the record is not closed",
    ),
    _data_untyped_case(
        "data-untyped-desc-with-newline",
        "a CoordJSON desc holding a newline (`\\n`)",
        '{"objects": [{"desc": "red\\ncat", "bbox_2d": ' + _BOX + "}]}",
        "not a JSON or CoordJSON answer: objects[0]: bad_desc: desc 'red\\ncat' holds a newline",
    ),
    Case(
        "data-row-changed-after-pre-pass",
        "data",
        "line 2 overwritten (same length, not JSON) after the pre-pass indexed it, then read by a batch",
        Raises(
            DataError,
            "rows.jsonl:2: not valid JSON (Expecting value) (it passed the pre-pass: the data changed",
        ),
        _changed_after_pre_pass,
    ),
    Case(
        "data-cache-dir-unwritable",
        "data",
        "`data.cache_dir` below a regular file (the pre-pass cache cannot be written)",
        Raises(DataError, "data.cache_dir: cannot write the row index cache in"),
        _unwritable_cache_dir,
    ),
    # -- set-up: the training section, model folder and data files, checked before any load -----
    _set_up_case(
        "config-training-unknown-key",
        "`training.learnig_rate: 0.001` (typo)",
        "stage1.yaml: training.learnig_rate: unknown key (did you mean 'learning_rate'?)",
        training="learnig_rate: 0.001",
    ),
    _set_up_case(
        "config-training-wrong-type",
        "`training.max_steps: four`",
        "stage1.yaml: training.max_steps: must be an integer (got 'four')",
        training="max_steps: four",
    ),
    _set_up_case(
        "config-training-negative-learning-rate",
        "`training.learning_rate: -1e-3` (YAML reads the string `'-1e-3'`; coerced, then bounded)",
        "stage1.yaml: training.learning_rate: must be >= 0 (got -0.001)",
        training="learning_rate: -1e-3",
    ),
    _set_up_case(
        "config-training-bad-choice",
        "`training.eval_strategy: step`",
        "training.eval_strategy: must be one of 'no', 'steps', 'epoch' (got 'step'; did you mean 'steps'?)",
        training="eval_strategy: step",
    ),
    _set_up_case(
        "config-data-file-missing",
        "`data.train` names a file that does not exist",
        "stage1.yaml: data.train.0: file not found:",
        train="missing.jsonl",
    ),
    _set_up_case(
        "config-training-fsdp-without-gpus",
        "`training.fsdp: true` on CPU (accelerate would drop FSDP and train plain DDP)",
        "stage1.yaml: training.fsdp: FSDP needs",
        training="fsdp: true",
    ),
    _set_up_case(
        "config-model-folder-missing",
        "`model.path` names a folder that does not exist",
        "stage1.yaml: model.path: folder not found:",
        model="no_such_model",
    ),
    Case(
        "collator-suffix-unknown-attribute",
        "collator",
        "`suffix_tokens=[['no_such_id']]` (text, id lists and attribute names like 'eos_token_id' are taken)",
        Raises(ValueError, "template suffix names 'no_such_id', which the tokenizer does not define"),
        _suffix_unknown_attribute,
    ),
    _cli_case(
        "cli-unknown-command",
        "`coordexp trian`",
        2,
        "coordexp: unknown command 'trian' (did you mean 'train'?)",
        lambda folder: ["trian"],
    ),
    _cli_case(
        "cli-check-logs-empty-log",
        "`coordexp check-logs RUN` on a run whose `logging.jsonl` is empty",
        2,
        "logging.jsonl is empty",
        _empty_log_run,
    ),
    _cli_case(
        "cli-train-set-up-error",
        "`coordexp train stage1.yaml` with a set-up error (nothing is written to `output_dir`)",
        2,
        "stage1.yaml: training.learnig_rate: unknown key",
        _bad_train_config,
    ),
    _refused_option_case(
        "loss-user-loss-type",
        "`training.loss_type: cross_entropy` with a Stage-1 feature on",
        "training.loss_type='cross_entropy': the Stage-1 loss is ms-swift's compute_loss_func",
        loss_type="cross_entropy",
    ),
    _refused_option_case(
        "loss-label-smoothing",
        "`training.label_smoothing_factor: 0.1` with a Stage-1 feature on",
        "training.label_smoothing_factor=0.1: the Stage-1 base CE is unsmoothed",
        label_smoothing_factor=0.1,
    ),
    _refused_option_case(
        "loss-dft",
        "`training.enable_dft_loss: true` with a Stage-1 feature on",
        "training.enable_dft_loss=true: DFT reweights the per-token CE",
        enable_dft_loss=True,
    ),
    _refused_option_case(
        "loss-channel-loss",
        "`training.enable_channel_loss: true` with a Stage-1 feature on",
        "training.enable_channel_loss=true: per-channel losses need per-token losses",
        enable_channel_loss=True,
    ),
    _refused_option_case(
        "loss-liger-kernel",
        "`training.use_liger_kernel: true` with a Stage-1 feature on",
        "training.use_liger_kernel=true: Liger's fused linear CE returns no logits",
        use_liger_kernel=True,
    ),
    _refused_option_case(
        "loss-sequence-parallel",
        "`training.sequence_parallel_size: 2` with a Stage-1 feature on",
        "training.sequence_parallel_size=2: sequence parallel shards the logits",
        sequence_parallel_size=2,
    ),
    # -- training: resume (honoured; before, ignored: the run restarted at step 1 over the old logs)
    Case(
        "training-resume-no-checkpoint",
        "training",
        "`training.resume_from_checkpoint: true` and `output_dir` holds no `checkpoint-<step>`",
        Raises(ConfigError, "training.resume_from_checkpoint: true, but"),
        lambda h: _train_resuming(h, True),
    ),
    Case(
        "training-resume-not-a-checkpoint",
        "training",
        "`training.resume_from_checkpoint` names a folder without `trainer_state.json`",
        Raises(ConfigError, "is not a checkpoint folder (no trainer_state.json)"),
        lambda h: _train_resuming(h, str(h.tmp_path)),
    ),
    Case(
        "monitor-resume-state-unreadable",
        "monitor",
        "resume whose checkpoint holds an unreadable instability-monitor state (the EMA is saved with "
        "every checkpoint and restored on resume; before, it was never saved)",
        SkipsWarnsOnce(present=RUNTIME_KEYS, warns="ignoring unreadable state"),
        _resume_with_unreadable_monitor_state,
        lambda obs: _assert_no_baseline(obs),
    ),
    # -- ranks: one rank's error ends every rank with that error -------------------------------
    Case(
        "ranks-strict-violation-one-rank",
        "ranks",
        "strict `ContractViolation` on rank 1 only while rank 0 waits in a collective (2 gloo ranks, "
        "group timeout 600 s; before, rank 0 waited until the timeout)",
        Raises(
            RankFailedError,
            "rank 0 stopped because another rank failed: rank 1: ContractViolation: contract violation "
            "[undeclared_extra]",
        ),
        lambda h: _failure_on_rank_1(h, "contract", "ContractViolation: contract violation [undeclared"),
    ),
    Case(
        "ranks-coord-objective-error-one-rank",
        "ranks",
        "`CoordObjectiveError` in rank 1's `compute_loss` only (a batch without labels, coord loss on) while "
        "rank 0 waits in a collective (2 gloo ranks, group timeout 600 s)",
        Raises(
            RankFailedError,
            "rank 0 stopped because another rank failed: rank 1: CoordObjectiveError: "
            "custom.coord_soft_ce_w1.enabled is true but the batch has no labels",
        ),
        lambda h: _failure_on_rank_1(h, "coord", "CoordObjectiveError: "),
    ),
    _config_case(
        "config-metrics-aggregation-invalid",
        "`custom.metrics.aggregation: weighted`",
        "custom.metrics.aggregation: must be one of 'exact' or 'per_step_mean'",
        lambda r: r.update(custom={"metrics": {"aggregation": "weighted"}}),
    ),
    # -- loss: custom.stage1_pass.materialize_logits: false (refused when the trainer is built)
    Case(
        "loss-no-logits-without-a-pass",
        "loss",
        "`custom.stage1_pass.materialize_logits: false` and no Stage-1 feature that reads the logits",
        Raises(
            Stage1OptionError,
            "custom.stage1_pass.materialize_logits=false: no Stage-1 feature reads the logits",
        ),
        lambda h: _no_logits_trainer(h, {"stage1_pass": {"materialize_logits": False}}),
    ),
    Case(
        "loss-no-logits-fsdp",
        "loss",
        "`custom.stage1_pass.materialize_logits: false` with `training.fsdp: full_shard`",
        Raises(
            Stage1OptionError,
            "custom.stage1_pass.materialize_logits=false with FSDP: the head weight is sharded",
        ),
        lambda h: _no_logits_trainer(h, _NO_LOGITS, fsdp="full_shard"),
    ),
    Case(
        "loss-no-logits-acc-strategy-seq",
        "loss",
        "`custom.stage1_pass.materialize_logits: false` with `training.acc_strategy: seq`",
        Raises(
            Stage1OptionError,
            "custom.stage1_pass.materialize_logits=false with training.acc_strategy=seq",
        ),
        lambda h: _no_logits_trainer(h, _NO_LOGITS, acc_strategy="seq"),
    ),
    Case(
        "loss-no-logits-head-not-linear",
        "loss",
        "`custom.stage1_pass.materialize_logits: false` and a model whose `get_output_embeddings()` is not "
        "a plain `nn.Linear` (refused at the first step)",
        Raises(Stage1OptionError, "custom.stage1_pass.materialize_logits=false with output head NoneType"),
        lambda h: _no_logits_step(h),
    ),
)


def _assert_no_baseline(obs: Observed) -> None:
    """The unreadable state left no EMA: the first train step is judged without a baseline."""
    train_events = [e for e in obs.events if e["mode"] == "train"]
    assert train_events and train_events[0]["ema"] is None


def _assert_absent(batch: dict[str, Any] | None, key: str) -> None:
    assert batch is not None and key not in batch, f"{key} must be dropped"


def _assert_labels(obs: Observed, labels: list[str]) -> None:
    assert obs.batch is not None
    assert obs.batch[DATASET_LABELS_KEY] == labels
    assert INSTABILITY_META_JSON_KEY not in obs.batch


# ---------------------------------------------------------------- the harness


def _check_raises(case: Case, outcome: Raises, h: H) -> None:
    with contracts_mode("warn"), pytest.raises(outcome.error, match=re.escape(outcome.fragment)):
        case.run(h)


def _check_skips(case: Case, outcome: SkipsWarnsOnce, h: H) -> None:
    with contracts_mode("strict"), recording() as rec:
        obs = case.run(h)
    assert not rec.repeated(), f"a warning repeated: {rec.repeated()}"
    if outcome.warns is not None:
        # one event: one Python warning and/or one log line (BestEffort reports on both channels)
        warned, logged = rec.count(outcome.warns)
        assert max(warned, logged) == 1, rec.messages()
    assert_metrics_valid(obs.logged, ("lvis", "coco", "mixed"))
    assert all(len(v) == h.repeat for v in obs.logged.values()), "every step must write the same keys"
    assert not (outcome.absent & obs.logged.keys()), sorted(outcome.absent & obs.logged.keys())
    assert outcome.present <= obs.logged.keys(), sorted(outcome.present - obs.logged.keys())
    if case.check is not None:
        case.check(obs)


def _check_dumped(case: Case, h: H) -> None:
    with contracts_mode("strict"), recording() as rec:
        case.run(h)
    assert not [m for m in rec.messages() if "not dumped" in m], rec.messages()


def _check_exits(case: Case, outcome: Exits, h: H) -> None:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out), pytest.raises(SystemExit) as info:
        case.run(h)
    assert info.value.code == outcome.code, (info.value.code, err.getvalue())
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and outcome.fragment in lines[0], lines
    assert "Traceback" not in err.getvalue() + out.getvalue()
    assert not (h.tmp_path / "out").exists(), "a failed start must write nothing to output_dir"


def _check_guarded(case: Case, outcome: Guarded, h: H) -> None:
    with contracts_mode("strict"), pytest.raises(ContractViolation) as info:
        case.run(H(h.tmp_path / "strict", 1))
    assert (info.value.key, info.value.rule) == (outcome.key, outcome.rule), str(info.value)
    (h.tmp_path / "warn").mkdir()
    with contracts_mode("warn"), recording() as rec:
        obs = case.run(H(h.tmp_path / "warn", h.repeat))
    contract = [w for w in rec.warnings if issubclass(w.category, ContractWarning)]
    assert len(contract) == 1, [str(w.message) for w in contract]
    assert f"[{outcome.rule}]" in str(contract[0].message) and repr(outcome.key) in str(contract[0].message)
    if obs.batch is not None:
        assert outcome.key not in obs.batch, "warn mode must drop the offending extra"
        if case.layer == "guards":  # the other extras of the batch are untouched
            assert set(BATCH_EXTRAS_KEYS) - {outcome.key} <= obs.batch.keys()
    else:
        assert outcome.key not in obs.logged, "warn mode must drop the offending write"
        assert obs.logged[K.TOKEN_ACC_TOP5] == [0.5] * h.repeat  # the rest of the write went through


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    (tmp_path / "strict").mkdir()
    h = H(tmp_path, REPEAT)
    if isinstance(case.outcome, Raises):
        _check_raises(case, case.outcome, h)
    elif isinstance(case.outcome, SkipsWarnsOnce):
        _check_skips(case, case.outcome, h)
    elif isinstance(case.outcome, Dumped):
        _check_dumped(case, h)
    elif isinstance(case.outcome, Exits):
        _check_exits(case, case.outcome, h)
    else:
        _check_guarded(case, case.outcome, h)


def test_matrix_shape() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 30
    assert {c.layer for c in CASES} == set(get_args(Layer))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)
    # every declared extra is covered by the guard cases, with each kind of rule its spec allows
    guarded = {c.outcome.key for c in CASES if isinstance(c.outcome, Guarded) and c.layer == "guards"}
    assert guarded == set(BATCH_EXTRAS_KEYS)


# ---------------------------------------------------------------- the doc table

_COLUMNS = ("id", "layer", "input", "outcome", "test")


def doc_rows() -> dict[str, dict[str, str]]:
    """The rows of the matrix table in docs/RELIABILITY.md (between its markers), by case id."""
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index("<!-- BEGIN MATRIX"), text.index("<!-- END MATRIX")
    rows: dict[str, dict[str, str]] = {}
    for line in text[start:end].splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().removeprefix("|").removesuffix("|").split(" | ")]
        assert len(cells) == len(_COLUMNS), f"a matrix row needs {len(_COLUMNS)} cells: {line}"
        row = dict(zip(_COLUMNS, cells, strict=True))
        case_id = row["id"].strip("`")
        assert case_id not in rows, f"duplicate doc row {case_id}"
        rows[case_id] = row
    return rows


def doc_row(case: Case) -> str:
    """The doc table row of ``case`` (how the table in docs/RELIABILITY.md is written)."""
    test = f"`test_bad_input[{case.id}]`"
    return f"| `{case.id}` | {case.layer} | {case.input} | {case.outcome.describe()} | {test} |"


def test_doc_table_matches_cases() -> None:
    rows = doc_rows()
    ids = [c.id for c in CASES]
    assert sorted(rows) == sorted(ids), {
        "missing from the doc": sorted(set(ids) - set(rows)),
        "not a case": sorted(set(rows) - set(ids)),
    }
    for case in CASES:
        assert f"| {' | '.join(rows[case.id][c] for c in _COLUMNS)} |" == doc_row(case), case.id
