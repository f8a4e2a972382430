"""A stand-in trainer (the attributes of semantics section 9), a toy LM and real token batches."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from coordexp.coord_tokens.payload import serialize_payload
from coordexp.demo.tokenizer import build_demo_tokenizer
from coordexp.generated.batch_extras import (
    BOX_PAIRS_KEY,
    BOX_SLOTS_KEY,
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
    BoxPair,
    BoxSlot,
)
from coordexp.rows.box_slots import sample_box_codes
from coordexp.rows.token_types import compute_token_types, tail_special_ids


@functools.cache
def tokenizer() -> Any:
    return build_demo_tokenizer()


class MeanMetric:
    """The part of ms-swift's MeanMetric the components use."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def update(self, value: float) -> None:
        assert isinstance(value, float), f"reporter must push host floats, got {type(value)}"
        self.values.append(value)


class ToyLM(nn.Module):
    """Embedding + linear head; HF-style CE over shifted labels (mean over supervised tokens)."""

    def __init__(self, vocab: int, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab, hidden)
        self.head = nn.Linear(hidden, vocab)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, hidden, generator=gen))
            self.head.weight.copy_(torch.randn(vocab, hidden, generator=gen) * 0.5)
            self.head.bias.zero_()
        self.seen_kwargs: list[set[str]] = []

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any
    ) -> CausalLMOutput:
        self.seen_kwargs.append(set(kwargs) | {"input_ids"} | ({"labels"} if labels is not None else set()))
        logits = self.head(self.embed(input_ids))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return CausalLMOutput(loss=loss, logits=logits)


class StandInTrainer:
    """What a Stage-1 mixin may rely on (semantics section 9), with swift's loss rescaling."""

    def __init__(
        self,
        model: nn.Module,
        *,
        output_dir: str = ".",
        grad_accum: int = 1,
        coord_soft_ce_w1_cfg: Any = None,
        token_type_metrics_cfg: Any = None,
        instability_monitor_cfg: Any = None,
        aggregation: str = "per_step_mean",
    ) -> None:
        # These tests read each step's own value (``MeanMetric.values``): per_step_mean writes
        # exactly those; the exact aggregation has its own tests (tests/components/test_aggregation.py).
        self.metrics_cfg = {"aggregation": aggregation}
        if coord_soft_ce_w1_cfg is not None:
            self.coord_soft_ce_w1_cfg = coord_soft_ce_w1_cfg
        if token_type_metrics_cfg is not None:
            self.token_type_metrics_cfg = token_type_metrics_cfg
        if instability_monitor_cfg is not None:
            self.instability_monitor_cfg = instability_monitor_cfg
        self.model = model
        self.template = SimpleNamespace(tokenizer=tokenizer())
        self.args = SimpleNamespace(
            gradient_accumulation_steps=grad_accum,
            learning_rate=1e-3,
            output_dir=output_dir,
            average_tokens_across_devices=False,
        )
        self.current_gradient_accumulation_steps = grad_accum
        self.custom_metrics: dict[str, defaultdict[str, MeanMetric]] = {
            "train": defaultdict(MeanMetric),
            "eval": defaultdict(MeanMetric),
        }
        self.state = SimpleNamespace(global_step=0, epoch=0.0)
        self.control = SimpleNamespace(should_training_stop=False, should_epoch_stop=False)
        self.model_accepts_loss_kwargs = True
        self.compute_loss_func = None
        super().__init__()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        outputs = model(**inputs)
        loss = outputs.loss
        if num_items_in_batch is not None:  # ms-swift's compute_sft_loss rescaling
            loss = loss * ((inputs["labels"][:, 1:] != -100).sum() / num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def logged(self, mode: str = "train") -> dict[str, list[float]]:
        return {k: m.values for k, m in self.custom_metrics[mode].items()}


class SwiftLikeTrainer(StandInTrainer):
    """The stand-in with ms-swift 4.6's ``compute_loss_func`` seam (``Seq2SeqTrainer``): the constructor
    asks ``create_loss_and_eval_metric(args)`` for it (``SwiftMixin.__init__``); ``compute_loss`` pops
    the labels when it is set, runs the model on the rest (logits only) and hands outputs and labels to
    it, then scales by the process count under ``average_tokens_across_devices``."""

    def __init__(self, model: nn.Module, *, args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        for name, value in (args or {}).items():
            setattr(self.args, name, value)
        self.compute_loss_func = self.create_loss_and_eval_metric(self.args).get("compute_loss_func")

    def create_loss_and_eval_metric(self, args: Any) -> dict[str, Any]:
        return {}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        func = self.compute_loss_func
        if func is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = func(outputs, labels, num_items_in_batch=num_items_in_batch, loss_scale=None, trainer=self)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * 1  # one process
        return (loss, outputs) if return_outputs else loss


PAYLOADS = [
    {
        "objects": [
            {"desc": "red car", "bbox_2d": ["<|coord_12|>", "<|coord_40|>", "<|coord_300|>", "<|coord_512|>"]}
        ]
    },
    {
        "objects": [
            {"desc": "dog", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_998|>", "<|coord_999|>"]},
            {
                "desc": "small cat",
                "bbox_2d": ["<|coord_100|>", "<|coord_150|>", "<|coord_200|>", "<|coord_250|>"],
                "poly": ["<|coord_100|>", "<|coord_150|>", "<|coord_200|>", "<|coord_150|>"],
            },
        ]
    },
    {
        "objects": [
            {"desc": "tree", "bbox_2d": ["<|coord_500|>", "<|coord_501|>", "<|coord_600|>", "<|coord_700|>"]}
        ]
    },
]
PROMPT = "<|im_start|>user\nDetect the objects.<|im_end|>\n<|im_start|>assistant\n"
SUFFIX = "<|im_end|>\n"


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    types: list[int]
    dataset: str
    box_slots: list[int] = field(default_factory=list)
    box_pairs: list[int] = field(default_factory=list)


@dataclass
class BatchSpec:
    packed: bool
    with_types: bool
    datasets: list[str] = field(default_factory=lambda: ["lvis", "coco", "lvis"])
    with_boxes: bool = False
    """attach the box extras (``box_slots`` / ``box_pairs``) as coordexp's collator does"""
    payloads: list[dict[str, Any]] | None = None
    """the samples' payloads (None: :data:`PAYLOADS`)"""


def encode(payload: dict[str, Any], dataset: str) -> Sample:
    tok = tokenizer()
    prompt = tok.encode(PROMPT, add_special_tokens=False)
    answer = tok.encode(serialize_payload(payload) + SUFFIX, add_special_tokens=False)
    ids = prompt + answer
    labels = [-100] * len(prompt) + answer
    suffix_ids = tok.encode(SUFFIX, add_special_tokens=False)
    types = compute_token_types(
        tokenizer=tok, payload=payload, labels=torch.tensor(labels), suffix_tokens=suffix_ids
    )
    assert types is not None, "fixture payload must align"
    slots, links, problem = sample_box_codes(
        tokenizer=tok,
        labels=torch.tensor(labels),
        alternatives=[[serialize_payload(payload)]],
        suffix=suffix_ids,
        specials=tail_special_ids(tok),
    )
    assert problem is None, problem
    return Sample(ids, labels, types.tolist(), dataset, slots.tolist(), links.tolist())


def make_batch(spec: BatchSpec) -> dict[str, Any]:
    payloads = PAYLOADS if spec.payloads is None else spec.payloads
    samples = [encode(p, d) for p, d in zip(payloads, spec.datasets, strict=False)]
    pad = tokenizer().pad_token_id
    if spec.packed:
        ids = [t for s in samples for t in s.input_ids]
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([[t for s in samples for t in s.labels]]),
            "position_ids": torch.tensor([[i for s in samples for i in range(len(s.input_ids))]]),
            PACK_NUM_SAMPLES_KEY: torch.tensor([len(samples)]),
            DATASET_LABELS_KEY: ["mixed" if len({s.dataset for s in samples}) > 1 else samples[0].dataset],
            DATASET_SEGMENTS_KEY: [len(ids)],
        }
        types = [t for s in samples for t in s.types]
        if spec.with_types:
            batch[TOKEN_TYPES_KEY] = torch.tensor([types])
        if spec.with_boxes:
            batch[BOX_SLOTS_KEY] = torch.tensor([[t for s in samples for t in s.box_slots]])
            batch[BOX_PAIRS_KEY] = torch.tensor([[t for s in samples for t in s.box_pairs]])
        return batch
    width = max(len(s.input_ids) for s in samples)
    rows = len(samples)
    input_ids = torch.full((rows, width), pad)
    labels = torch.full((rows, width), -100)
    mask = torch.zeros((rows, width), dtype=torch.long)
    types_t = torch.full((rows, width), -1)
    slots_t = torch.full((rows, width), int(BoxSlot.NONE))
    links_t = torch.full((rows, width), int(BoxPair.NONE))
    for r, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[r, :n] = torch.tensor(s.input_ids)
        labels[r, :n] = torch.tensor(s.labels)
        mask[r, :n] = 1
        types_t[r, :n] = torch.tensor(s.types)
        slots_t[r, :n] = torch.tensor(s.box_slots)
        links_t[r, :n] = torch.tensor(s.box_pairs)
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": mask,
        PACK_NUM_SAMPLES_KEY: torch.ones(rows, dtype=torch.long),
        DATASET_LABELS_KEY: [s.dataset for s in samples],
        DATASET_SEGMENTS_KEY: [len(s.input_ids) for s in samples],
    }
    if spec.with_types:
        batch[TOKEN_TYPES_KEY] = types_t
    if spec.with_boxes:
        batch[BOX_SLOTS_KEY], batch[BOX_PAIRS_KEY] = slots_t, links_t
    return batch


FULL_CUSTOM = {
    "coord_soft_ce_w1": {"enabled": True, "gate_weight": 1.0, "ce_weight": 0.5},
    "token_type_metrics": {
        "enabled": True,
        "include": ["lvis", "coco"],
        "log_top5": True,
        "coord_monitor_mass": True,
    },
    "instability_monitor": {"enabled": True},
}


def custom_with(coord_on: bool) -> dict[str, Any]:
    custom = {k: dict(v) for k, v in FULL_CUSTOM.items()}
    custom["coord_soft_ce_w1"]["enabled"] = coord_on
    return custom
