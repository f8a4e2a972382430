"""Answers of the live model to val rows, through ms-swift's own inference engine.

``TransformersEngine`` over the training model and a shallow copy of the training template (the
engine switches its template to inference mode; the copy keeps the training template as it is):
the same chat template and system prompt as training, images included for Qwen3-VL, batched with
left padding, HF ``generate`` underneath. Greedy unless ``temperature > 0``.

Per answer it keeps the generated token ids (``return_details``) and each token's log-prob under
the model's distribution at that step (ms-swift's ``logprobs``: a log-softmax of the step's logits,
before logits processors such as the repetition penalty), and decodes the text itself with special
tokens kept, end-of-turn and padding removed, so coord tokens survive whatever the tokenizer marks
special.

The global RNG states (Python, numpy, torch, CUDA) are restored afterwards and the model is put
back in the mode it was in, so training continues exactly as it would have without the evaluation
(sampling draws from the RNG; greedy decoding does not).
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coordexp.generated.models.config import EvalDetectionConfig
from coordexp.rows.data import MEDIA_FIELDS


@dataclass(frozen=True)
class Generated:
    """One val row's answer: its text, the generated ids and each id's log-prob."""

    index: int  # the row's position in the evaluated slice
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]


def prompt_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's request: its messages before the last assistant turn, and its media."""
    messages = list(row["messages"])
    while messages and messages[-1].get("role") == "assistant":
        messages.pop()
    request: dict[str, Any] = {"messages": messages}
    for media in MEDIA_FIELDS:
        if row.get(media):
            request[media] = row[media] if isinstance(row[media], list) else [row[media]]
    return request


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore Python's, numpy's, torch's and CUDA's global RNG states on exit."""
    import numpy as np
    import torch

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _stop_ids(tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    for name in ("<|im_end|>", "<|endoftext|>"):
        token = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ids.add(token)
    return {i for i in ids if i is not None}


def generate_answers(
    model: Any,
    template: Any,
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    cfg: EvalDetectionConfig,
    *,
    progress: bool = False,
) -> list[Generated]:
    """The model's answers to ``rows`` (``(index, row)`` pairs, media paths absolute), in order,
    generated as ``cfg`` (``custom.eval_detection``) says: ``batch_size``, ``max_new_tokens``,
    ``temperature``, ``top_p``, ``repetition_penalty``. An engine error raises (the caller stops
    the run on every rank)."""
    from swift.infer_engine import InferRequest, RequestConfig, TransformersEngine

    engine = TransformersEngine(model, template=copy.copy(template), max_batch_size=cfg.batch_size)
    request_config = RequestConfig(
        max_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        logprobs=True,
        return_details=True,
    )
    requests = [InferRequest(**prompt_of(row)) for _, row in rows]
    was_training = bool(getattr(model, "training", False))
    try:
        with preserved_random_state():
            responses = engine.infer(requests, request_config, use_tqdm=progress)
    finally:
        model.train(was_training)
    tokenizer = template.tokenizer
    stop = _stop_ids(tokenizer)
    out: list[Generated] = []
    for (index, _), response in zip(rows, responses, strict=True):
        if isinstance(response, Exception):
            raise response
        choice = response.choices[0]
        ids = list(choice.token_ids or [])
        logprobs = [float(c["logprob"]) for c in (choice.logprobs or {}).get("content", [])]
        while ids and ids[-1] in stop:  # the end of turn and any padding after it
            ids.pop()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        out.append(Generated(index, text, tuple(ids), tuple(logprobs[: len(ids)])))
    return out
