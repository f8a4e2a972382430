"""``logits_to_keep``: per-token extras stay aligned with the labels ms-swift cuts.

ms-swift cuts ``labels`` in ``_prepare_inputs`` before ``compute_loss`` (int form: the last ``k``
positions; bool-mask form, one packed row only: the supervised positions plus a leading -100), and the
model returns logits for the kept positions only. ``token_types`` must be cut the same way
(``coordexp.components.extras_alignment.cut_like_labels``), or the typed metrics would type the
wrong tokens. Two checks:

- a property test of ``cut_like_labels`` against an independent simulation of both cuts, with
  types that encode their own position, so a misalignment by one shows;
- end to end through the Stage-1 hook: a cut step logs exactly the values of the uncut step (the toy
  LM's logits at a position depend only on that position's token, so the values must agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from coordexp.components.extras_alignment import cut_like_labels
from coordexp.contracts.stash import get_stashed_batch_extras
from coordexp.generated.batch_extras import TOKEN_TYPES_KEY
from tests.components.stage1_fixtures import BatchSpec, StandInTrainer, ToyLM, make_batch, tokenizer
from tests.hardening.support import TYPED_KEYS, custom, stage1_trainer


def simulate_cut(labels: Tensor) -> tuple[Tensor, Any, Tensor]:
    """Our own restatement of ms-swift's cut: (cut labels, logits_to_keep, kept original positions).

    Kept positions are -1 for the padded leading position of the bool-mask form.
    """
    seq = labels.shape[-1]
    supervised = labels != -100
    if labels.shape[0] == 1:
        mask = supervised[0]
        positions = torch.arange(seq)[mask]
        cut = torch.cat([torch.full((1, 1), -100), labels[:, mask]], dim=-1)
        keep = torch.cat([mask[1:], torch.ones(1, dtype=torch.bool)])
        return cut, keep, torch.cat([torch.tensor([-1]), positions])
    first = int(supervised.int().argmax(-1).min())
    k = seq - first + 1
    return labels[:, -k:], k, torch.arange(seq - k, seq)


@st.composite
def labelled_rows(draw: st.DrawFn) -> Tensor:
    rows = draw(st.integers(1, 3))
    seq = draw(st.integers(2, 40))
    prompt = draw(st.integers(1, seq - 1))  # position 0 is never supervised (it is a prompt token)
    labels = torch.full((rows, seq), -100)
    for r in range(rows):
        start = draw(st.integers(prompt, seq - 1))
        sup = draw(st.lists(st.booleans(), min_size=seq - start, max_size=seq - start))
        sup[0] = True
        for j, on in enumerate(sup):
            if on:
                labels[r, start + j] = draw(st.integers(0, 50))
    return labels


@settings(max_examples=80, deadline=None)
@given(labels=labelled_rows(), multirow_int=st.booleans())
def test_cut_like_labels_matches_the_framework_cut(labels: Tensor, multirow_int: bool) -> None:
    if multirow_int and labels.shape[0] == 1:
        labels = labels.repeat(2, 1)
    rows, seq = labels.shape
    types = torch.arange(seq).repeat(rows, 1)  # each position's type is its own index
    cut, keep, positions = simulate_cut(labels)
    out = cut_like_labels(types, labels, cut, keep)
    assert out is not None and out.shape == cut.shape
    expected = positions.repeat(rows, 1)
    # Wherever a cut label is supervised (the only places a type is read), its type comes from the
    # same original position. (An unsupervised position may keep any type: a cut that changes
    # nothing, e.g. only position 0 unsupervised, returns the types as they are.)
    sup = cut != -100
    assert torch.equal(out[sup], expected[sup]), (out, expected)
    assert torch.equal(cut[sup], labels[:, positions.clamp(min=0)][sup])


def test_cut_like_labels_unknown_cut_is_none() -> None:
    labels = torch.tensor([[-100, 5, 6, -100, 7], [-100, -100, 8, 9, 10]])
    types = torch.ones_like(labels)
    mask_cut = labels[:, 1:]
    # a bool mask over two rows is not a cut the framework makes: no guess, no types
    assert cut_like_labels(types, labels, mask_cut, torch.ones(5, dtype=torch.bool)) is None
    # the int form cannot keep more positions than the types have
    assert cut_like_labels(types[:, :2], None, labels[:, -3:], 3) is None
    # already aligned: returned as is
    assert cut_like_labels(types, labels, labels, None) is types


class CuttingTrainer(StandInTrainer):
    """The stand-in trainer plus the framework's label cut in ``_prepare_inputs``."""

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        cut, keep, _ = simulate_cut(inputs["labels"])
        inputs["labels"], inputs["logits_to_keep"] = cut, keep
        return inputs


class KeepLM(ToyLM):
    """The toy LM, returning logits (and its CE) only for the kept positions."""

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None, logits_to_keep: Any = None, **kwargs: Any
    ) -> Any:
        out = super().forward(input_ids, **kwargs)
        logits = out.logits
        if isinstance(logits_to_keep, int):
            logits = logits[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, Tensor):
            logits = logits[:, logits_to_keep]
        out.logits = logits
        if labels is not None:
            out.loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return out


@pytest.mark.parametrize("packed", [False, True], ids=["int", "bool_mask"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_cut_step_logs_what_the_uncut_step_logs(packed: bool, coord_on: bool, tmp_path: Path) -> None:
    spec = BatchSpec(packed=packed, with_types=True)
    ref, ref_model = stage1_trainer(custom(coord_on), tmp_path, model=KeepLM(len(tokenizer())))
    ref_loss = ref.compute_loss(ref_model, make_batch(spec))

    trainer, model = stage1_trainer(
        custom(coord_on), tmp_path, model=KeepLM(len(tokenizer())), base=CuttingTrainer
    )
    batch = make_batch(spec)
    full_types = batch[TOKEN_TYPES_KEY].clone()
    prepared = trainer._prepare_inputs(batch)
    expected_keep = int if not packed else Tensor
    assert isinstance(prepared["logits_to_keep"], expected_keep)
    extras = get_stashed_batch_extras(trainer)
    assert extras is not None and extras.token_types is not None
    assert extras.token_types.shape == prepared["labels"].shape != full_types.shape
    loss = trainer.compute_loss(model, prepared)

    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    logged, want = trainer.logged(), ref.logged()
    assert TYPED_KEYS <= logged.keys()
    assert logged.keys() == want.keys()
    for key, values in want.items():
        assert logged[key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
