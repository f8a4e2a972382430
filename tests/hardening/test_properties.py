"""Property tests at the stack level (stand-in trainer + every component) and of the functional core.

- Any batch (shapes, masks, packings, pack sizes, token types present or not, logits from tame to
  1e30, NaN and inf): every metric written is a declared key, finite and inside its declared range
  (fractions and accuracies in [0, 1], counts >= 0), in ``strict`` mode, and the step never raises.
- Coord loss terms are finite and >= 0 for any logits; the loss and its gradient are finite.
- W1 is 0 for identical distributions and symmetric.
- Chunked results equal unchunked ones (statistics, loss, gradient).
- Any order of the mixins gives the same keys, values and loss.

Example counts are small on purpose (CI has 2 cores); the whole file runs in well under a minute.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from coordexp.contracts import contracts_mode
from coordexp.functional import (
    CoordLossConfig,
    CoordSlice,
    coord_loss,
    coord_terms,
    gaussian_soft_targets,
    sanitize_logits,
    stage1_stats,
    w1_distance,
)
from coordexp.generated.batch_extras import (
    DATASET_LABELS_KEY,
    DATASET_SEGMENTS_KEY,
    PACK_NUM_SAMPLES_KEY,
    TOKEN_TYPES_KEY,
)
from coordexp.swift_seam.mixins import (
    AggregateTokenTypeMetricsMixin,
    CoordSoftCEW1LossMixin,
    GradAccumLossScaleMixin,
    InstabilityMonitorMixin,
)
from tests.components.stage1_fixtures import BatchSpec, StandInTrainer, ToyLM, make_batch, tokenizer
from tests.hardening.support import LogitsLM, assert_metrics_valid, coord_ids, custom, stage1_trainer

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCALES = (1.0, 30.0, 1e4, 1e6, 1e30, 3e38)  # 3e38 * N(0, 1) overflows float32 to +-inf
LABELS = ("lvis", "coco", "mixed", "default")


# ---------------------------------------------------------------- random stack steps


@dataclass(frozen=True)
class RandomStep:
    batch: dict[str, Any]
    logits: Tensor
    coord_on: bool
    sections: dict[str, dict[str, Any]]


@st.composite
def random_steps(draw: st.DrawFn) -> RandomStep:
    vocab = len(tokenizer())
    coords = coord_ids()
    rows = draw(st.integers(1, 3), label="rows")
    seq = draw(st.integers(2, 14), label="seq")
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1), label="seed"))
    # labels: -100, text ids or coord ids, in any mix (all -100 and all coord included)
    p_ignore, p_coord = draw(st.sampled_from([(0.3, 0.3), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0), (0.6, 0.2)]))
    u = torch.rand((rows, seq), generator=gen)
    text = torch.randint(1, int(coords.min()), (rows, seq), generator=gen)
    coord = coords[torch.randint(0, len(coords), (rows, seq), generator=gen)]
    labels = torch.where(u < p_ignore, -100, torch.where(u < p_ignore + p_coord, coord, text))
    input_ids = torch.randint(0, vocab, (rows, seq), generator=gen)
    lengths = [draw(st.integers(1, seq)) for _ in range(rows)]
    mask = (torch.arange(seq) < torch.tensor(lengths).unsqueeze(-1)).long()
    labels = labels.masked_fill(mask == 0, -100)
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": mask,
        PACK_NUM_SAMPLES_KEY: torch.tensor([draw(st.integers(1, 4)) for _ in range(rows)]),
        DATASET_LABELS_KEY: [draw(st.sampled_from(LABELS)) for _ in range(rows)],
        DATASET_SEGMENTS_KEY: lengths,
    }
    if draw(st.booleans(), label="with_types"):
        types = torch.tensor([1, 2, 3])[torch.randint(0, 3, (rows, seq), generator=gen)]
        batch[TOKEN_TYPES_KEY] = types.masked_fill(labels == -100, -1)
    scale = draw(st.sampled_from(SCALES), label="scale")
    logits = torch.randn((rows, seq, vocab), generator=gen) * scale
    if draw(st.booleans(), label="peaked"):  # the next token gets the top logit: accuracies near 1
        nxt = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
        hit = nxt != -100
        logits[hit, nxt[hit]] = logits.abs().amax().clamp(max=1e30) + 1.0
    for value in draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), max_size=3), label="poison"):
        r, t, v = (int(torch.randint(0, n, (1,), generator=gen)) for n in (rows, seq, vocab))
        logits[r, t, v] = value
    coord_on = draw(st.booleans(), label="coord_on")
    loss_cfg = {
        "temperature": draw(st.sampled_from([0.5, 1.0, 2.0])),
        "gate_weight": draw(st.sampled_from([0.0, 1.0])),
        "ce_weight": draw(st.sampled_from([0.0, 0.5])),
        "target_truncate": draw(st.sampled_from([None, 0, 3])),
    }
    return RandomStep(batch, logits, coord_on, {"coord_soft_ce_w1": loss_cfg})


@settings(FAST, max_examples=120)
@given(step=random_steps(), train=st.booleans())
def test_any_batch_writes_only_finite_in_range_metrics(step: RandomStep, train: bool) -> None:
    with tempfile.TemporaryDirectory() as out, contracts_mode("strict"):
        model = LogitsLM(step.logits)
        model.train(train)
        trainer, _ = stage1_trainer(custom(step.coord_on, **step.sections), out, model=model)
        loss = trainer.compute_loss(model, step.batch)
        logged = trainer.logged("train" if train else "eval")
    labels = tuple(LABELS)
    assert_metrics_valid(logged, labels)
    assert all(len(v) == 1 for v in logged.values())
    assert loss.dim() == 0
    finite_logits = bool(torch.isfinite(step.logits).all()) and float(step.logits.abs().max()) < 1e6
    sup = bool((step.batch["labels"][:, 1:] != -100).any())
    if finite_logits and sup:
        assert torch.isfinite(loss), "tame logits with supervision must give a finite loss"
        loss.backward()
        assert model.logits.grad is not None and torch.isfinite(model.logits.grad).all()


# ---------------------------------------------------------------- the functional core

logit_values = st.one_of(
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([0.0, 1e4, -1e4, 1e30, -1e30, 3e38, math.inf, -math.inf, math.nan]),
)


@st.composite
def coord_configs(draw: st.DrawFn) -> CoordLossConfig:
    return CoordLossConfig(
        ce_weight=draw(st.sampled_from([0.0, 0.5, 1.0])),
        soft_ce_weight=draw(st.sampled_from([0.0, 1.0])),
        w1_weight=draw(st.sampled_from([0.0, 1.0])),
        gate_weight=draw(st.sampled_from([0.0, 1.0])),
        temperature=draw(st.sampled_from([0.1, 0.5, 1.0, 3.0])),
        target_sigma=draw(st.sampled_from([0.5, 2.0, 30.0])),
        target_truncate=draw(st.sampled_from([None, 0, 2])),
    )


@settings(FAST, max_examples=100)
@given(
    k=st.integers(1, 24),
    data=st.data(),
    cfg=coord_configs(),
)
def test_coord_terms_are_finite_and_non_negative(k: int, data: st.DataObject, cfg: CoordLossConfig) -> None:
    n = data.draw(st.integers(1, 6))
    raw = torch.tensor(data.draw(st.lists(logit_values, min_size=n * k, max_size=n * k))).reshape(n, k)
    bins = torch.tensor(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    terms = coord_terms(sanitize_logits(raw.float()), bins, cfg)
    for name in ("soft_ce", "w1", "ce"):
        value = getattr(terms, name)
        assert torch.isfinite(value).all(), (name, value)
        assert (value >= 0).all(), (name, value)
    assert torch.allclose(terms.p.sum(-1), torch.ones(n), atol=1e-5)


def _vocab(n_text: int, k: int, scattered: bool) -> tuple[int, list[int]]:
    vocab = n_text + k
    ids = list(range(n_text, vocab)) if not scattered else list(range(1, 2 * k, 2))
    return max(vocab, 2 * k + 1), ids


@st.composite
def loss_inputs(draw: st.DrawFn) -> tuple[Tensor, Tensor, CoordSlice, CoordLossConfig]:
    k = draw(st.integers(1, 12))
    vocab, ids = _vocab(draw(st.integers(1, 10)), k, draw(st.booleans()))
    n = draw(st.integers(1, 24))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn((n, vocab), generator=gen) * draw(st.sampled_from(SCALES[:4]))
    for value in draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf, 1e30]), max_size=2)):
        logits[
            int(torch.randint(0, n, (1,), generator=gen)), int(torch.randint(0, vocab, (1,), generator=gen))
        ] = value
    kind = torch.randint(0, 3, (n,), generator=gen)
    coord_t = torch.tensor(ids)[torch.randint(0, k, (n,), generator=gen)]
    text_t = torch.tensor([i for i in range(vocab) if i not in set(ids)])[
        torch.randint(0, vocab - k, (n,), generator=gen)
    ]
    targets = torch.where(kind == 0, -100, torch.where(kind == 1, coord_t, text_t))
    return logits, targets, CoordSlice.from_ids(ids), draw(coord_configs())


@settings(FAST, max_examples=100)
@given(inputs=loss_inputs(), base_ce=st.booleans())
def test_coord_loss_is_finite_non_negative_with_finite_gradient(
    inputs: tuple[Tensor, Tensor, CoordSlice, CoordLossConfig], base_ce: bool
) -> None:
    logits, targets, coord, cfg = inputs
    x = logits.clone().requires_grad_(True)
    loss, stats = coord_loss(x, targets, coord, cfg, chunk_size=7)
    assert torch.isfinite(loss) and float(loss.detach()) >= 0.0
    for key in ("soft_ce_sum", "w1_sum", "ce_sum", "gate_sum", "n_coord"):
        assert torch.isfinite(stats[key]) and float(stats[key]) >= 0.0, (key, stats[key])
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if base_ce and bool(torch.isfinite(logits).all()) and float(logits.abs().max()) < 1e6:
        y = logits.clone().requires_grad_(True)
        total, _ = coord_loss(y, targets, coord, cfg, base_ce=True, chunk_size=5)
        assert torch.isfinite(total) and float(total.detach()) >= float(loss.detach()) - 1e-4
        total.backward()
        assert y.grad is not None and torch.isfinite(y.grad).all()


def _distribution(values: Sequence[float]) -> Tensor:
    t = torch.tensor(values, dtype=torch.float32).abs() + 1e-6
    return t / t.sum()


weights = st.lists(st.floats(0, 1e3, width=32), min_size=1, max_size=64)


@settings(FAST, max_examples=100)
@given(a=weights, data=st.data())
def test_w1_is_zero_for_identical_distributions_and_symmetric(a: list[float], data: st.DataObject) -> None:
    b = data.draw(st.lists(st.floats(0, 1e3, width=32), min_size=len(a), max_size=len(a)))
    p, q = _distribution(a), _distribution(b)
    assert float(w1_distance(p, p)) == 0.0
    assert float(w1_distance(p, q)) == float(w1_distance(q, p))
    assert 0.0 <= float(w1_distance(p, q)) <= 1.0
    # the loss term too: logits that ARE the soft target give W1 ~ 0
    k = len(a)
    t = data.draw(st.integers(0, k - 1))
    cfg = CoordLossConfig(target_sigma=data.draw(st.sampled_from([0.5, 2.0, 10.0])), target_truncate=None)
    target = gaussian_soft_targets(torch.tensor([t]), k, cfg.target_sigma, None)
    terms = coord_terms(torch.log(target.clamp(min=1e-30)), torch.tensor([t]), cfg)
    assert float(terms.w1[0]) < 1e-5


@st.composite
def stats_inputs(draw: st.DrawFn) -> tuple[Tensor, Tensor, Tensor | None, CoordSlice, CoordLossConfig, int]:
    logits, targets, coord, cfg = draw(loss_inputs())
    types = None
    if draw(st.booleans()):
        gen = torch.Generator().manual_seed(draw(st.integers(0, 1000)))
        types = torch.tensor([-1, 1, 2, 3])[torch.randint(0, 4, targets.shape, generator=gen)]
    return logits, targets, types, coord, cfg, draw(st.integers(1, logits.shape[0]))


@settings(FAST, max_examples=60)
@given(inputs=stats_inputs(), mass_max=st.sampled_from([0, 1, 3]))
def test_chunked_equals_unchunked(
    inputs: tuple[Tensor, Tensor, Tensor | None, CoordSlice, CoordLossConfig, int], mass_max: int
) -> None:
    logits, targets, types, coord, cfg, chunk = inputs
    kw: dict[str, Any] = {"coord": coord, "types": types, "mass": True, "mass_max_tokens": mass_max}
    whole = stage1_stats(logits, targets, coord_cfg=cfg, base_ce=True, chunk_size=logits.shape[0], **kw)
    parts = stage1_stats(logits, targets, coord_cfg=cfg, base_ce=True, chunk_size=chunk, **kw)
    assert whole.keys() == parts.keys()
    for key in whole:
        torch.testing.assert_close(parts[key], whole[key], rtol=1e-5, atol=1e-4, equal_nan=True, msg=key)

    grads = []
    values = []
    for size in (logits.shape[0], chunk):
        x = logits.clone().requires_grad_(True)
        loss, _ = coord_loss(x, targets, coord, cfg, types=types, chunk_size=size)
        loss.backward()
        values.append(loss.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- mixin order

MIXINS = (
    GradAccumLossScaleMixin,
    CoordSoftCEW1LossMixin,
    AggregateTokenTypeMetricsMixin,
    InstabilityMonitorMixin,
)


def _composed_step(
    order: Sequence[type], custom_block: dict[str, Any], spec: BatchSpec, out: str
) -> tuple[Any, Tensor]:
    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    cls = type("Composed", (*order, StandInTrainer), {})
    trainer = cls(
        model,
        output_dir=out,
        coord_soft_ce_w1_cfg=custom_block["coord_soft_ce_w1"],
        token_type_metrics_cfg=custom_block["token_type_metrics"],
        instability_monitor_cfg=custom_block["instability_monitor"],
    )
    return trainer, trainer.compute_loss(model, make_batch(spec))


@settings(FAST, max_examples=20)
@given(
    order=st.permutations(MIXINS),
    subset=st.integers(1, 4),
    coord_on=st.booleans(),
    packed=st.booleans(),
    with_types=st.booleans(),
)
def test_any_mixin_order_gives_the_same_keys_values_and_loss(
    order: list[type], subset: int, coord_on: bool, packed: bool, with_types: bool
) -> None:
    chosen = order[:subset]
    canonical = [m for m in MIXINS if m in chosen]
    block = custom(coord_on)
    spec = BatchSpec(packed=packed, with_types=with_types)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ref, ref_loss = _composed_step(canonical, block, spec, a)
        got, loss = _composed_step(chosen, block, spec, b)
    assert got.logged().keys() == ref.logged().keys()
    assert got.logged() == ref.logged()
    assert torch.equal(loss, ref_loss)
    assert_metrics_valid(got.logged(), ("lvis", "coco", "mixed"))
