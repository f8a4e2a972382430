"""Loss composition, label use, accumulation, failure semantics and the sync budget of one step."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from coordexp.components import CoordObjectiveError
from coordexp.coord_tokens.codec import get_coord_token_ids
from coordexp.functional import SyncCounter
from coordexp.generated import metric_keys as K
from coordexp.swift_seam.assembly import build_trainer_cls
from tests.components.stage1_fixtures import (
    BatchSpec,
    StandInTrainer,
    ToyLM,
    custom_with,
    make_batch,
    tokenizer,
)


def _trainer(custom: dict[str, Any], tmp_path: Path, **kwargs: Any) -> tuple[Any, ToyLM]:
    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    trainer = build_trainer_cls(StandInTrainer, custom)(model, output_dir=str(tmp_path), **kwargs)
    return trainer, model


def _reference_loss(
    model: ToyLM, batch: dict[str, Any], cfg: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain, slow reference: base CE over non-coord targets + the weighted coord terms."""
    ids = torch.tensor(get_coord_token_ids(tokenizer()))
    logits = model(batch["input_ids"]).logits[:, :-1].reshape(-1, model.head.out_features).float()
    targets = batch["labels"][:, 1:].reshape(-1)
    sup = targets != -100
    is_coord = torch.isin(targets, ids) & sup
    base = F.cross_entropy(logits[sup & ~is_coord], targets[sup & ~is_coord])
    z = logits[is_coord][:, ids] / cfg.get("temperature", 1.0)
    t = torch.searchsorted(ids, targets[is_coord])
    k = torch.arange(1000, dtype=torch.float32)
    q = torch.exp(-0.5 * ((k[None] - t[:, None]) / cfg.get("target_sigma", 2.0)) ** 2)
    q = q / q.sum(-1, keepdim=True)
    logp = torch.log_softmax(z, -1)
    p = logp.exp()
    soft = -(q * logp).sum(-1).mean()
    w1 = (p.cumsum(-1) - q.cumsum(-1)).abs().sum(-1).mean() / 1000
    ce = -logp.gather(-1, t[:, None]).mean()
    full = logits[is_coord] / cfg.get("temperature", 1.0)
    gate = (torch.logsumexp(full, -1) - torch.logsumexp(z, -1)).clamp(min=0).mean()
    coord = (
        cfg["soft_ce_weight"] * soft
        + cfg["w1_weight"] * w1
        + cfg["ce_weight"] * ce
        + cfg["gate_weight"] * gate
    )
    return base + coord, {
        "base": base.item(),
        "soft": soft.item(),
        "w1": w1.item(),
        "ce": ce.item(),
        "gate": gate.item(),
        "n": float(is_coord.sum()),
    }


@pytest.mark.parametrize("packed", [False, True])
def test_loss_is_masked_base_ce_plus_coord_loss(packed: bool, tmp_path: Path) -> None:
    custom = custom_with(True)
    custom["coord_soft_ce_w1"].update(temperature=1.5, target_sigma=3.0)
    trainer, model = _trainer(custom, tmp_path)
    batch = make_batch(BatchSpec(packed=packed, with_types=True))
    expected, parts = _reference_loss(
        model,
        {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()},
        {
            "soft_ce_weight": 1.0,
            "w1_weight": 1.0,
            "ce_weight": 0.5,
            "gate_weight": 1.0,
            "temperature": 1.5,
            "target_sigma": 3.0,
        },
    )
    loss = trainer.compute_loss(model, batch)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    logged = {k: v[0] for k, v in trainer.logged().items()}
    assert logged[K.BASE_CE_LOSS] == pytest.approx(parts["base"], abs=1e-5)
    assert logged[K.COORD_DIAG_SOFT_CE] == pytest.approx(parts["soft"], abs=1e-5)
    assert logged[K.COORD_DIAG_W1] == pytest.approx(parts["w1"], abs=1e-5)
    assert logged[K.COORD_DIAG_CE] == pytest.approx(0.5 * parts["ce"], abs=1e-5)
    assert logged[K.COORD_DIAG_GATE] == pytest.approx(parts["gate"], abs=1e-5)
    assert logged[K.COORD_DIAG_COORD_TOKENS] == parts["n"]
    assert logged[K.COORD_SOFTCE_W1_LOSS] == logged[K.COORD_DIAG_LOSS]
    assert logged[K.PACK_NUM_SAMPLES] == 3.0
    assert logged[K.COORD_DIAG_LOSS_PER_SAMPLE] == pytest.approx(logged[K.COORD_DIAG_LOSS] * parts["n"] / 3)
    assert logged[K.STAGE1_TOTAL_LOSS_PER_SAMPLE_EST] == pytest.approx(
        logged[K.BASE_CE_LOSS_PER_SAMPLE] + logged[K.COORD_DIAG_LOSS_PER_SAMPLE]
    )
    loss.backward()
    ref_model = ToyLM(len(tokenizer()))
    ref_model.load_state_dict(model.state_dict())
    ref, _ = _reference_loss(
        ref_model,
        make_batch(BatchSpec(packed=packed, with_types=True)),
        {
            "soft_ce_weight": 1.0,
            "w1_weight": 1.0,
            "ce_weight": 0.5,
            "gate_weight": 1.0,
            "temperature": 1.5,
            "target_sigma": 3.0,
        },
    )
    ref.backward()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_accuracy_uses_original_labels_while_base_ce_uses_masked(tmp_path: Path) -> None:
    trainer, model = _trainer(custom_with(True), tmp_path)
    batch = make_batch(BatchSpec(packed=False, with_types=True))
    labels = batch["labels"].clone()
    trainer.compute_loss(model, batch)
    # The model saw masked labels: no coord target reached its CE.
    ids = set(get_coord_token_ids(tokenizer()))
    assert not any(int(t) in ids for t in batch["labels"].reshape(-1))
    with torch.no_grad():
        logits = model(batch["input_ids"]).logits[:, :-1]
    targets = labels[:, 1:]
    sup = targets != -100
    coord = sup & torch.isin(targets, torch.tensor(sorted(ids)))
    acc = ((logits.argmax(-1) == targets) & coord).sum() / coord.sum()
    assert trainer.logged()[K.COORD_TOKEN_ACC][0] == pytest.approx(acc.item(), abs=1e-6)
    assert trainer.logged()[K.COORD_TOKEN_FRAC][0] > 0


def test_grad_accumulation_divides_once_and_only_with_num_items(tmp_path: Path) -> None:
    custom = custom_with(True)
    losses = {}
    for accum, num_items in ((1, None), (4, None), (4, torch.tensor(123))):
        trainer, model = _trainer(custom, tmp_path, grad_accum=accum)
        losses[(accum, num_items is not None)] = trainer.compute_loss(
            model, make_batch(BatchSpec(packed=False, with_types=True)), num_items_in_batch=num_items
        )
    # Without num_items the Trainer itself divides: the component must not.
    torch.testing.assert_close(losses[(4, False)], losses[(1, False)])
    # With num_items (model accepts loss kwargs) the Trainer does not divide: the component does, once.
    torch.testing.assert_close(losses[(4, True)], losses[(1, False)] / 4)


def test_no_coord_tokens_in_batch_means_zero_coord_loss_and_no_coord_diag(tmp_path: Path) -> None:
    trainer, model = _trainer(custom_with(True), tmp_path)
    batch = make_batch(BatchSpec(packed=False, with_types=False))
    ids = torch.tensor(get_coord_token_ids(tokenizer()))
    batch["labels"][torch.isin(batch["labels"], ids)] = -100
    expected = model(batch["input_ids"], labels=batch["labels"]).loss
    loss = trainer.compute_loss(model, batch)
    torch.testing.assert_close(loss, expected)
    logged = trainer.logged()
    assert not any(k.startswith("coord_diag/") or k.startswith("coord_softce_w1/") for k in logged)
    assert K.BASE_CE_LOSS in logged and K.PACK_NUM_SAMPLES in logged


def test_empty_supervision_emits_nothing_nan(tmp_path: Path) -> None:
    trainer, model = _trainer(custom_with(False), tmp_path)
    batch = make_batch(BatchSpec(packed=False, with_types=True))
    batch["labels"][:] = -100
    batch["token_types"][:] = -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.compute_loss(model, batch)
    logged = trainer.logged()
    assert set(logged) == {K.LEARNING_RATE, K.ACCUM_GRAD_STEPS, K.ACCUM_CURRENT_GRAD_STEPS}
    assert all(math.isfinite(v[0]) for v in logged.values())


def test_nan_logits_never_write_nan(tmp_path: Path) -> None:
    trainer, model = _trainer(custom_with(False), tmp_path)
    with torch.no_grad():
        model.head.bias[5] = float("nan")
        model.head.bias[7] = float("inf")
    trainer.compute_loss(model, make_batch(BatchSpec(packed=False, with_types=True)))
    assert all(math.isfinite(v) for vals in trainer.logged().values() for v in vals)


def test_enabled_coord_loss_without_coord_tokens_fails_before_any_step(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")

    class NoCoordTrainer(StandInTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.template.tokenizer = plain

    cls = build_trainer_cls(NoCoordTrainer, custom_with(True))
    with pytest.raises(CoordObjectiveError, match=r"custom\.coord_soft_ce_w1\.enabled.*coord"):
        cls(ToyLM(10), output_dir=str(tmp_path))
    # Loss off: the run goes on, coord diagnostics are skipped with a warning.
    with pytest.warns(RuntimeWarning, match="coord tokens unavailable"):
        build_trainer_cls(NoCoordTrainer, custom_with(False))(ToyLM(10), output_dir=str(tmp_path))


def test_a_diagnostic_that_raises_warns_once_and_is_skipped_later(tmp_path: Path, monkeypatch: Any) -> None:
    trainer, model = _trainer(custom_with(False), tmp_path)
    pipeline = trainer.stage1_pipeline()
    calls = {"n": 0}

    def boom(ctx: Any) -> None:
        calls["n"] += 1
        raise RuntimeError("diagnostic bug")

    monkeypatch.setattr(pipeline.token_metrics, "report", boom)
    with pytest.warns(RuntimeWarning, match="token_metrics") as record:
        for _ in range(3):
            loss = trainer.compute_loss(model, make_batch(BatchSpec(packed=False, with_types=True)))
            assert torch.isfinite(loss)
    assert calls["n"] == 1
    assert len([w for w in record if "token_metrics" in str(w.message)]) == 1
    assert K.LEARNING_RATE in trainer.logged() and K.TEXT_TOKEN_ACC not in trainer.logged()


def test_failure_inside_enabled_coord_loss_raises(tmp_path: Path, monkeypatch: Any) -> None:
    trainer, model = _trainer(custom_with(True), tmp_path)
    import coordexp.components.coord_loss as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(module, "coord_loss", broken)
    with pytest.raises(CoordObjectiveError, match="refusing to train on"):
        trainer.compute_loss(model, make_batch(BatchSpec(packed=False, with_types=True)))


def test_extras_are_stashed_for_the_step(tmp_path: Path) -> None:
    from coordexp.contracts.stash import get_stashed_batch_extras

    trainer, model = _trainer(custom_with(True), tmp_path)
    batch = make_batch(BatchSpec(packed=True, with_types=True, with_boxes=True))
    trainer.compute_loss(model, batch)
    extras = get_stashed_batch_extras(trainer)
    assert extras is not None and extras.dataset_labels == ["mixed"] and extras.token_types is not None
    assert "token_types" not in batch


@pytest.mark.parametrize("packed", [False, True])
def test_full_stack_step_has_at_most_two_syncs(packed: bool, tmp_path: Path) -> None:
    trainer, model = _trainer(custom_with(True), tmp_path)
    batch = make_batch(BatchSpec(packed=packed, with_types=True))
    with SyncCounter(count_host_copies=True) as counter:
        loss = trainer.compute_loss(model, batch)
        loss.backward()
    assert counter.count <= 2, counter.ops
    assert set(trainer.logged()) and len(trainer.logged()) == 49


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("seam", [False, True], ids=["two_pass", "one_pass_seam"])
def test_the_objective_terms_add_no_host_sync(packed: bool, seam: bool, tmp_path: Path) -> None:
    """Text gate, bbox_geo, bbox_size_aux and the adjacent repulsion on: the step has exactly the syncs
    of the plain step."""
    from tests.components.stage1_fixtures import SwiftLikeTrainer

    all_on = _all_terms()
    counts = []
    for custom in (custom_with(True), all_on):
        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        base = SwiftLikeTrainer if seam else StandInTrainer
        trainer = build_trainer_cls(base, custom)(model, output_dir=str(tmp_path))
        batch = make_batch(BatchSpec(packed=packed, with_types=True, with_boxes=True))
        with SyncCounter(count_host_copies=True) as counter:
            loss = trainer.compute_loss(model, batch)
            loss.backward()
        counts.append(counter.count)
    assert counts[1] == counts[0] <= 2


@pytest.mark.parametrize("packed", [False, True])
def test_the_grad_monitor_adds_no_host_sync(packed: bool, tmp_path: Path) -> None:
    """custom.grad_monitor on (every term on, a monitored step): the step's syncs are the plain step's;
    its Gram entries ride the one device->host transfer."""
    from tests.components.stage1_fixtures import SwiftLikeTrainer

    monitored = _all_terms()
    monitored["grad_monitor"] = {"enabled": True, "interval": 1}
    counts, logged = [], []
    for custom in (_all_terms(), monitored):
        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        trainer = build_trainer_cls(SwiftLikeTrainer, custom)(model, output_dir=str(tmp_path))
        batch = make_batch(BatchSpec(packed=packed, with_types=True, with_boxes=True))
        with SyncCounter(count_host_copies=True) as counter:
            loss = trainer.compute_loss(model, batch)
            loss.backward()
        counts.append(counter.count)
        logged.append(set(trainer.logged()))
    assert counts[1] == counts[0] <= 2
    assert {key for key in logged[1] - logged[0]} == {key for key in logged[1] if key.startswith("gradmon/")}
    assert {"gradmon/neg_cosine_pair_frac", "gradmon/grad_norm/adjacent_repulsion"} <= logged[1]


def _all_terms() -> dict[str, Any]:
    custom = custom_with(True)
    custom["coord_soft_ce_w1"]["text_gate_weight"] = 0.2
    custom["coord_soft_ce_w1"]["adjacent_repulsion_weight"] = 0.5
    custom["coord_soft_ce_w1"]["adjacent_repulsion_filter_mode"] = "global"
    custom["bbox_geo"] = {"enabled": True, "smoothl1_weight": 0.5, "ciou_weight": 1.0}
    custom["bbox_size_aux"] = {
        "enabled": True,
        "log_wh_weight": 0.05,
        "oversize_penalty_weight": 0.1,
        "oversize_area_frac_threshold": 0.2,
        "oversize_log_w_threshold": None,
        "oversize_log_h_threshold": None,
        "eps": 1e-6,
    }
    return custom


@pytest.mark.parametrize("seam", [False, True], ids=["two_pass", "one_pass_seam"])
def test_every_term_weighs_its_weight_for_any_accumulation(seam: bool, tmp_path: Path) -> None:
    """Issue 21's deliberate difference: with G = 4 every term (box terms included) is divided by G
    with the rest of the loss, so a window of G micro-steps weighs each term by its weight (the
    reference adds its box terms after the division: G times their weight)."""
    from tests.components.stage1_fixtures import SwiftLikeTrainer

    base = SwiftLikeTrainer if seam else StandInTrainer
    losses = {}
    for accum, num_items in ((1, None), (4, torch.tensor(123))):
        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        trainer = build_trainer_cls(base, _all_terms())(model, output_dir=str(tmp_path), grad_accum=accum)
        batch = make_batch(BatchSpec(packed=True, with_types=True, with_boxes=True))
        losses[accum] = trainer.compute_loss(model, batch, num_items_in_batch=num_items)
        logged = trainer.logged()
        assert {"loss/geo/bbox_geo", "loss/geo/bbox_size_aux", "coord_diag/text_gate"} <= set(logged)
        assert logged["coord_diag/adjacent_repulsion_applied_count"] == [1.0]
    torch.testing.assert_close(losses[4], losses[1] / 4)


def test_the_grad_monitor_reads_the_pass_s_loss_for_any_accumulation(tmp_path: Path) -> None:
    """With G = 4 the step's loss is divided by G; the monitor's values are those of the pass's own
    loss (documented), so they equal G = 1's."""
    from tests.components.stage1_fixtures import SwiftLikeTrainer

    custom = _all_terms()
    custom["grad_monitor"] = {"enabled": True, "interval": 1}
    logged = {}
    for accum, num_items in ((1, None), (4, torch.tensor(123))):
        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        trainer = build_trainer_cls(SwiftLikeTrainer, custom)(
            model, output_dir=str(tmp_path), grad_accum=accum
        )
        trainer.compute_loss(
            model,
            make_batch(BatchSpec(packed=True, with_types=True, with_boxes=True)),
            num_items_in_batch=num_items,
        )
        logged[accum] = {k: v for k, v in trainer.logged().items() if k.startswith("gradmon/")}
    assert "gradmon/grad_norm/bbox_size_aux" in logged[1]
    assert set(logged[4]) == set(logged[1])
    for key, values in logged[1].items():
        assert logged[4][key] == pytest.approx(values, rel=1e-6, abs=1e-7), key
