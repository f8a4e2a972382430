"""The 2x2x2 feature matrix: emitted keys equal exactly the reference set of each cell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from coordexp.contracts import check_metric_key
from coordexp.swift_seam.assembly import build_trainer_cls
from coordexp.swift_seam.mixins import (
    AggregateTokenTypeMetricsMixin,
    CoordSoftCEW1LossMixin,
    GradAccumLossScaleMixin,
    InstabilityMonitorMixin,
)
from tests.components.stage1_fixtures import (
    BatchSpec,
    StandInTrainer,
    SwiftLikeTrainer,
    ToyLM,
    custom_with,
    make_batch,
    tokenizer,
)

# Reference sets, typed out from shared/reference/stage1-metric-keys.md (not read from the catalog).
RUNTIME = {"learning_rate", "accum/grad_steps", "accum/current_grad_steps"}
BASE_CE = {
    "base_ce/loss",
    "base_ce/noncoord_tokens",
    "base_ce/noncoord_tokens_per_sample",
    "base_ce/loss_per_sample",
}
COORD_DIAG_NO_CE = {
    "coord_diag/enabled",
    "coord_diag/loss",
    "coord_diag/soft_ce",
    "coord_diag/w1",
    "coord_diag/gate",
    "coord_diag/coord_vocab_mass",
    "coord_diag/coord_tokens",
    "coord_diag/acc_top5",
    "coord_diag/p_gt_mean",
    "coord_diag/margin_mean",
    "coord_diag/expected_bin_mae",
    "coord_diag/expected_bin_abs_err_p90",
    "coord_diag/w1_to_delta",
    "coord_diag/coord_tokens_per_sample",
    "coord_diag/loss_per_sample",
}
ALIASES = {f"coord_softce_w1/{t}" for t in ("loss", "soft_ce", "w1", "ce", "gate")}
COORD_ON_ONLY = BASE_CE | ALIASES | {"coord_diag/ce", "pack/num_samples", "stage1/total_loss_per_sample_est"}
TOKEN_ALWAYS = {
    "token_acc_top5",
    "text_token_acc",
    "coord_monitor/flip_coord_to_noncoord",
    "coord_monitor/flip_text_to_coord",
    "coord_monitor/coord_vocab_mass_at_gt_coord",
    "coord_monitor/coord_vocab_mass_at_gt_text",
}
TYPED = {f"{t}_token_{m}" for t in ("desc", "format", "coord") for m in ("frac", "acc", "acc_top5")} | {
    "coord_monitor/flip_format_to_coord",
    "coord_monitor/flip_desc_to_coord",
    "coord_monitor/coord_vocab_mass_at_gt_format",
    "coord_monitor/coord_vocab_mass_at_gt_desc",
}
ALL_49 = RUNTIME | COORD_DIAG_NO_CE | COORD_ON_ONLY | TOKEN_ALWAYS | TYPED
EXPECTED = {
    (True, True): ALL_49,
    (False, True): ALL_49 - COORD_ON_ONLY,
    (True, False): ALL_49 - TYPED,
    (False, False): ALL_49 - COORD_ON_ONLY - TYPED,
}


def test_reference_cell_sizes() -> None:
    assert [len(EXPECTED[c]) for c in [(True, True), (False, True), (True, False), (False, False)]] == [
        49,
        37,
        36,
        24,
    ]


def run_step(
    custom: dict[str, Any],
    spec: BatchSpec,
    tmp_path: Path,
    *,
    mixins: tuple[type, ...] | None = None,
    train: bool = True,
    base: type[StandInTrainer] = StandInTrainer,
) -> tuple[StandInTrainer, torch.Tensor, ToyLM]:
    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    model.train(train)
    if mixins is None:
        cls = build_trainer_cls(base, custom)
    else:
        cls = type("Composed", (*mixins, base), {})
    trainer = cls(
        model,
        output_dir=str(tmp_path),
        coord_soft_ce_w1_cfg=custom.get("coord_soft_ce_w1"),
        token_type_metrics_cfg=custom.get("token_type_metrics"),
        instability_monitor_cfg=custom.get("instability_monitor"),
    )
    loss = trainer.compute_loss(model, make_batch(spec))
    return trainer, loss, model


BASES = pytest.mark.parametrize("base", [StandInTrainer, SwiftLikeTrainer], ids=["two_pass", "one_pass_seam"])


@BASES
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_cell_emits_exactly_the_reference_keys(
    coord_on: bool, with_types: bool, packed: bool, base: type[StandInTrainer], tmp_path: Path
) -> None:
    trainer, loss, model = run_step(
        custom_with(coord_on), BatchSpec(packed=packed, with_types=with_types), tmp_path, base=base
    )
    if base is SwiftLikeTrainer:  # the seam: logits only, the labels never reach the model
        assert trainer.compute_loss_func is not None
        assert all("labels" not in seen for seen in model.seen_kwargs)
    logged = trainer.logged("train")
    assert set(logged) == EXPECTED[(coord_on, with_types)]
    labels = ["lvis", "coco", "mixed"]
    for key, values in logged.items():
        assert len(values) == 1
        assert math.isfinite(values[0]), key
        assert check_metric_key(key, values[0], dataset_labels=labels, mode="strict")
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Extras never reach the model.
    assert all(
        not (
            seen
            & {
                "token_types",
                "pack_num_samples",
                "dataset_labels",
                "dataset_segments",
                "instability_meta_json",
            }
        )
        for seen in model.seen_kwargs
    )


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize("coord_on", [True, False], ids=["coord_on", "coord_off"])
def test_one_pass_seam_equals_two_pass(
    coord_on: bool, with_types: bool, packed: bool, tmp_path: Path
) -> None:
    spec = BatchSpec(packed=packed, with_types=with_types)
    ref_trainer, ref_loss, ref_model = run_step(custom_with(coord_on), spec, tmp_path)
    trainer, loss, model = run_step(custom_with(coord_on), spec, tmp_path, base=SwiftLikeTrainer)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref_loss.backward()
    for (name, p), ref in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=1e-5, atol=1e-6, msg=name)
    logged, ref_logged = trainer.logged(), ref_trainer.logged()
    assert set(logged) == set(ref_logged)
    for key, values in logged.items():
        assert values == pytest.approx(ref_logged[key], rel=1e-5, abs=1e-6), key


@BASES
def test_eval_mode_writes_eval_metrics(base: type[StandInTrainer], tmp_path: Path) -> None:
    trainer, _, _ = run_step(
        custom_with(True), BatchSpec(packed=False, with_types=True), tmp_path, train=False, base=base
    )
    assert set(trainer.logged("eval")) == ALL_49
    assert trainer.logged("train") == {}


MIXINS = (
    GradAccumLossScaleMixin,
    InstabilityMonitorMixin,
    AggregateTokenTypeMetricsMixin,
    CoordSoftCEW1LossMixin,
)


@BASES
@pytest.mark.parametrize(
    "order", [MIXINS, tuple(reversed(MIXINS)), (MIXINS[2], MIXINS[0], MIXINS[3], MIXINS[1])]
)
def test_mixin_order_changes_neither_keys_nor_loss(
    order: tuple[type, ...], base: type[StandInTrainer], tmp_path: Path
) -> None:
    spec = BatchSpec(packed=True, with_types=True)
    ref_trainer, ref_loss, _ = run_step(custom_with(True), spec, tmp_path, mixins=MIXINS, base=base)
    trainer, loss, _ = run_step(custom_with(True), spec, tmp_path, mixins=order, base=base)
    assert set(trainer.logged()) == set(ref_trainer.logged()) == ALL_49
    assert torch.equal(loss, ref_loss)
    assert trainer.logged() == ref_trainer.logged()


def test_subset_without_coord_mixin_has_no_coord_keys(tmp_path: Path) -> None:
    spec = BatchSpec(packed=False, with_types=True)
    trainer, _, _ = run_step(
        custom_with(True), spec, tmp_path, mixins=(AggregateTokenTypeMetricsMixin, GradAccumLossScaleMixin)
    )
    assert set(trainer.logged()) == RUNTIME | TOKEN_ALWAYS | TYPED


# -- the catalog decides: keys written and components built, cell by cell --------------------------------
def _variant(coord: str, tokens: str, monitor: bool) -> dict[str, Any]:
    """A ``custom:`` block: coord section absent/diag/on/on_nogate, token metrics off/on/plain, monitor."""
    custom = custom_with(coord.startswith("on"))
    if coord == "absent":
        del custom["coord_soft_ce_w1"]
    elif coord == "on_nogate":
        custom["coord_soft_ce_w1"]["gate_weight"] = 0.0
    if tokens == "off":
        custom["token_type_metrics"]["enabled"] = False
    elif tokens == "plain":  # on, without top-5 and coord-vocab mass
        custom["token_type_metrics"].update(log_top5=False, coord_monitor_mass=False)
    custom["instability_monitor"]["enabled"] = monitor
    return custom


CATALOG_CELLS = [
    (coord, tokens, monitor)
    for coord in ("absent", "diag", "on", "on_nogate")
    for tokens in ("off", "on", "plain")
    for monitor in (True, False)
]


@BASES
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize(("coord", "tokens", "monitor"), CATALOG_CELLS)
def test_catalog_decides_keys_and_components(
    coord: str, tokens: str, monitor: bool, with_types: bool, base: type[StandInTrainer], tmp_path: Path
) -> None:
    from coordexp.components.needs import components_for
    from coordexp.config import load_custom_config
    from coordexp.contracts.catalog import TOKEN_TYPE_CONDITIONS, conditions_from_config, keys_written_under

    custom = _variant(coord, tokens, monitor)
    trainer, _, _ = run_step(custom, BatchSpec(packed=False, with_types=with_types), tmp_path, base=base)
    conditions = conditions_from_config(load_custom_config(custom))
    if not with_types:  # a batch condition the config cannot know: this batch carries no token types
        conditions -= TOKEN_TYPE_CONDITIONS
    assert set(trainer.logged("train")) == keys_written_under(conditions)
    derived = components_for(load_custom_config(custom))
    assert [c.name for c in trainer.stage1_pipeline().components] == derived
    assert sorted(type(trainer).stage1_components()) == sorted(derived)


def test_components_derived_from_the_catalog_match_the_sections() -> None:
    """What the catalog derives is what each section says (a hand-written reference, not a catalog read)."""
    from coordexp.components.needs import components_for
    from coordexp.config import load_custom_config

    for coord, tokens, monitor in CATALOG_CELLS:
        expected = ["runtime"]
        expected += ["coord_soft_ce_w1"] if coord != "absent" else []
        expected += ["token_metrics"] if tokens != "off" else []
        expected += ["instability_monitor"] if monitor else []
        assert components_for(load_custom_config(_variant(coord, tokens, monitor))) == expected


# -- issue 21: the box terms (bbox_geo, bbox_size_aux) in the one pass -------------------------------------
# typed out from shared/reference/upstream-stage1-additions.md §2.5 / §3.3
BOX_GEO = {
    "loss/geo/bbox_geo",
    "loss/geo/bbox_smoothl1",
    "loss/geo/bbox_ciou",
    "bbox_geo/groups_total",
    "bbox_geo/coord_slots_total",
    "bbox_geo/skipped_incomplete_rows",
    "bbox_geo/skipped_incomplete_coord_slots",
    "bbox_geo/groups_per_sample",
    "bbox_geo/loss_per_sample",
}
BOX_SIZE = {
    "loss/geo/bbox_size_aux",
    "loss/geo/bbox_log_wh",
    "loss/geo/bbox_oversize",
    "bbox_size_aux/groups_total",
    "bbox_size_aux/coord_slots_total",
    "bbox_size_aux/skipped_incomplete_rows",
    "bbox_size_aux/skipped_incomplete_coord_slots",
    "bbox_size_aux/mean_width",
    "bbox_size_aux/mean_height",
    "bbox_size_aux/mean_log_area",
    "bbox_size_aux/groups_per_sample",
    "bbox_size_aux/loss_per_sample",
}
GEO_SECTION = {"enabled": True, "smoothl1_weight": 0.5, "ciou_weight": 1.0}
SIZE_SECTION = {
    "enabled": True,
    "log_wh_weight": 0.05,
    "oversize_penalty_weight": 0.1,
    "oversize_area_frac_threshold": 0.2,
    "oversize_log_w_threshold": None,
    "oversize_log_h_threshold": None,
    "eps": 1e-6,
}


def _with_boxes(geo: bool, size: bool) -> dict[str, Any]:
    custom = custom_with(True)
    if geo:
        custom["bbox_geo"] = dict(GEO_SECTION)
    if size:
        custom["bbox_size_aux"] = dict(SIZE_SECTION)
    return custom


@BASES
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize(
    ("geo", "size"), [(True, True), (True, False), (False, True)], ids=["both", "geo", "size"]
)
def test_box_cells_emit_exactly_the_reference_keys(
    geo: bool, size: bool, with_types: bool, packed: bool, base: type[StandInTrainer], tmp_path: Path
) -> None:
    from coordexp.config import load_custom_config
    from coordexp.contracts.catalog import TOKEN_TYPE_CONDITIONS, conditions_from_config, keys_written_under

    custom = _with_boxes(geo, size)
    trainer, loss, model = run_step(
        custom, BatchSpec(packed=packed, with_types=with_types), tmp_path, base=base
    )
    logged = trainer.logged("train")
    expected = EXPECTED[(True, with_types)] | (BOX_GEO if geo else set()) | (BOX_SIZE if size else set())
    assert set(logged) == expected
    conditions = conditions_from_config(load_custom_config(custom))
    if not with_types:
        conditions -= TOKEN_TYPE_CONDITIONS
    assert set(logged) == keys_written_under(conditions)
    for key, values in logged.items():
        assert len(values) == 1 and math.isfinite(values[0]), key
        assert check_metric_key(key, values[0], dataset_labels=["lvis", "coco", "mixed"], mode="strict")
    prefix = "bbox_geo" if geo else "bbox_size_aux"
    # without the answer parser's box extras: label quartets, as the reference (the poly is a "box")
    assert logged[f"{prefix}/groups_total"] == [5.0]  # 1 + 3 (dog, cat and the poly quartet) + 1
    assert logged[f"{prefix}/skipped_incomplete_rows"] == [0.0]
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with_extras, _, _ = run_step(
        custom, BatchSpec(packed=packed, with_types=with_types, with_boxes=True), tmp_path, base=base
    )
    assert with_extras.logged()[f"{prefix}/groups_total"] == [4.0]  # the parser's: the poly is no box


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_box_terms_one_pass_seam_equals_two_pass_and_add_to_the_loss(packed: bool, tmp_path: Path) -> None:
    spec = BatchSpec(packed=packed, with_types=True)
    ref_trainer, ref_loss, ref_model = run_step(_with_boxes(True, True), spec, tmp_path)
    trainer, loss, model = run_step(_with_boxes(True, True), spec, tmp_path, base=SwiftLikeTrainer)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref_loss.backward()
    for (name, p), ref in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=1e-5, atol=1e-6, msg=name)
    logged, ref_logged = trainer.logged(), ref_trainer.logged()
    assert set(logged) == set(ref_logged)
    for key, values in logged.items():
        assert values == pytest.approx(ref_logged[key], rel=1e-5, abs=1e-6), key
    _, plain, _ = run_step(custom_with(True), spec, tmp_path, base=SwiftLikeTrainer)
    terms = logged["loss/geo/bbox_geo"][0] + logged["loss/geo/bbox_size_aux"][0]
    assert loss.item() == pytest.approx(plain.item() + terms, rel=1e-5)


TEXT_GATE = {"coord_diag/text_gate", "coord_softce_w1/text_gate", "coord_diag/text_coord_vocab_mass"}


@BASES
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
def test_text_gate_cells_emit_exactly_the_reference_keys(
    with_types: bool, packed: bool, base: type[StandInTrainer], tmp_path: Path
) -> None:
    from coordexp.config import load_custom_config
    from coordexp.contracts.catalog import TOKEN_TYPE_CONDITIONS, conditions_from_config, keys_written_under

    custom = _with_boxes(True, True)
    custom["coord_soft_ce_w1"]["text_gate_weight"] = 0.2
    trainer, loss, model = run_step(
        custom, BatchSpec(packed=packed, with_types=with_types), tmp_path, base=base
    )
    logged = trainer.logged("train")
    assert set(logged) == EXPECTED[(True, with_types)] | BOX_GEO | BOX_SIZE | TEXT_GATE
    conditions = conditions_from_config(load_custom_config(custom))
    if not with_types:
        conditions -= TOKEN_TYPE_CONDITIONS
    assert set(logged) == keys_written_under(conditions)
    assert logged["coord_softce_w1/text_gate"] == logged["coord_diag/text_gate"]
    assert 0.0 < logged["coord_diag/text_coord_vocab_mass"][0] < 1.0
    for key, values in logged.items():
        assert check_metric_key(key, values[0], dataset_labels=["lvis", "coco", "mixed"], mode="strict")
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
def test_text_gate_one_pass_seam_equals_two_pass(packed: bool, with_types: bool, tmp_path: Path) -> None:
    custom = custom_with(True)
    custom["coord_soft_ce_w1"]["text_gate_weight"] = 0.2
    spec = BatchSpec(packed=packed, with_types=with_types)
    ref_trainer, ref_loss, ref_model = run_step(custom, spec, tmp_path)
    trainer, loss, model = run_step(custom, spec, tmp_path, base=SwiftLikeTrainer)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref_loss.backward()
    for (name, p), ref in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=1e-5, atol=1e-6, msg=name)
    logged, ref_logged = trainer.logged(), ref_trainer.logged()
    assert set(logged) == set(ref_logged)
    for key, values in logged.items():
        assert values == pytest.approx(ref_logged[key], rel=1e-5, abs=1e-6), key
    _, plain, _ = run_step(custom_with(True), spec, tmp_path, base=SwiftLikeTrainer)
    assert loss.item() == pytest.approx(plain.item() + logged["coord_diag/text_gate"][0], rel=1e-5)


REPULSION = {
    "coord_diag/adjacent_repulsion",
    "coord_softce_w1/adjacent_repulsion",
    "coord_diag/adjacent_repulsion_pair_count",
    "coord_diag/adjacent_repulsion_applied_count",
    "coord_diag/adjacent_repulsion_copy_score_mean",
}
REPULSION_VALUES = {
    "coord_diag/adjacent_repulsion",
    "coord_softce_w1/adjacent_repulsion",
    "coord_diag/adjacent_repulsion_copy_score_mean",
}


@BASES
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize("mode", ["global", "same_desc"])
def test_repulsion_cells_emit_exactly_the_reference_keys(
    mode: str, with_types: bool, packed: bool, base: type[StandInTrainer], tmp_path: Path
) -> None:
    from coordexp.config import load_custom_config
    from coordexp.contracts.catalog import TOKEN_TYPE_CONDITIONS, conditions_from_config, keys_written_under

    custom = custom_with(True)
    custom["coord_soft_ce_w1"].update(adjacent_repulsion_weight=0.5, adjacent_repulsion_filter_mode=mode)
    spec = BatchSpec(packed=packed, with_types=with_types, with_boxes=True)
    trainer, loss, model = run_step(custom, spec, tmp_path, base=base)
    logged = trainer.logged("train")
    # one pair (dog, then small cat: another desc), applied only under global
    applied = mode == "global"
    assert set(logged) == EXPECTED[(True, with_types)] | (
        REPULSION if applied else REPULSION - REPULSION_VALUES
    )
    conditions = conditions_from_config(load_custom_config(custom))
    if not with_types:
        conditions -= TOKEN_TYPE_CONDITIONS
    if not applied:
        conditions -= {"repulsion_applied"}
    assert set(logged) == keys_written_under(conditions)
    assert logged["coord_diag/adjacent_repulsion_pair_count"] == [1.0]
    assert logged["coord_diag/adjacent_repulsion_applied_count"] == [1.0 if applied else 0.0]
    for key, values in logged.items():
        assert len(values) == 1 and math.isfinite(values[0]), key
        assert check_metric_key(key, values[0], dataset_labels=["lvis", "coco", "mixed"], mode="strict")
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_repulsion_without_the_box_extras_fails_fast(tmp_path: Path) -> None:
    from coordexp.components import CoordObjectiveError

    custom = custom_with(True)
    custom["coord_soft_ce_w1"]["adjacent_repulsion_weight"] = 0.5
    with pytest.raises(CoordObjectiveError, match="box_slots"):
        run_step(custom, BatchSpec(packed=False, with_types=True), tmp_path)


# -- issue 21: the gradient monitor (custom.grad_monitor) -----------------------------------------------
def _gradmon(terms: tuple[str, ...]) -> set[str]:
    """The monitor's keys for ``terms`` (typed out: norm and cosine per term, total, pair share)."""
    keys = {f"gradmon/{kind}/{term}" for kind in ("grad_norm", "cos_to_total") for term in terms}
    return keys | {"gradmon/total_grad_norm", "gradmon/neg_cosine_pair_frac"}


# FULL_CUSTOM's coord loss: soft_ce, w1 (defaults 1.0), ce 0.5, gate 1.0, plus the base CE
GRADMON_PLAIN = _gradmon(("base_ce", "soft_ce", "w1", "ce", "gate"))
GRADMON_ALL = GRADMON_PLAIN | _gradmon(("text_gate", "bbox_geo", "bbox_size_aux"))


def _with_monitor(all_terms: bool, interval: int = 1) -> dict[str, Any]:
    custom = _with_boxes(True, True) if all_terms else custom_with(True)
    if all_terms:
        custom["coord_soft_ce_w1"]["text_gate_weight"] = 0.2
    custom["grad_monitor"] = {"enabled": True, "interval": interval}
    return custom


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_types", [True, False], ids=["types", "no_types"])
@pytest.mark.parametrize("all_terms", [True, False], ids=["all_terms", "coord_terms"])
def test_grad_monitor_cells_emit_exactly_the_reference_keys(
    all_terms: bool, with_types: bool, packed: bool, tmp_path: Path
) -> None:
    from coordexp.config import load_custom_config
    from coordexp.contracts.catalog import TOKEN_TYPE_CONDITIONS, conditions_from_config, keys_written_under

    custom = _with_monitor(all_terms)
    trainer, loss, model = run_step(
        custom, BatchSpec(packed=packed, with_types=with_types), tmp_path, base=SwiftLikeTrainer
    )
    logged = trainer.logged("train")
    extra = (BOX_GEO | BOX_SIZE | TEXT_GATE | GRADMON_ALL) if all_terms else GRADMON_PLAIN
    assert set(logged) == EXPECTED[(True, with_types)] | extra
    conditions = conditions_from_config(load_custom_config(custom))
    if not with_types:
        conditions -= TOKEN_TYPE_CONDITIONS
    assert set(logged) == keys_written_under(conditions)
    for key, values in logged.items():
        assert len(values) == 1 and math.isfinite(values[0]), key
        assert check_metric_key(key, values[0], dataset_labels=["lvis", "coco", "mixed"], mode="strict")
    assert logged["gradmon/total_grad_norm"][0] > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_grad_monitor_off_steps_and_two_pass_write_no_gradmon_key(tmp_path: Path) -> None:
    spec = BatchSpec(packed=True, with_types=True)
    plain_trainer, plain_loss, plain_model = run_step(
        custom_with(True), spec, tmp_path, base=SwiftLikeTrainer
    )
    # interval 2 at global_step 0 monitors; the same step at global_step 1 does not
    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    cls = build_trainer_cls(SwiftLikeTrainer, _with_monitor(False, interval=2))
    trainer = cls(model, output_dir=str(tmp_path))
    trainer.state.global_step = 1
    loss = trainer.compute_loss(model, make_batch(spec))
    assert set(trainer.logged("train")) == set(plain_trainer.logged("train"))
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    loss.backward()
    plain_loss.backward()
    for p, ref in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=0)
    # the two-pass path (no compute_loss_func seam): the model's own CE is outside the pass
    with pytest.warns(RuntimeWarning, match="grad_monitor needs the one-pass seam"):
        two_pass, _, _ = run_step(_with_monitor(False), spec, tmp_path)
    assert not any(key.startswith("gradmon/") for key in two_pass.logged("train"))


def test_grad_monitor_on_changes_neither_loss_nor_gradient(tmp_path: Path) -> None:
    spec = BatchSpec(packed=False, with_types=True)
    _, plain_loss, plain_model = run_step(_with_boxes(True, True), spec, tmp_path, base=SwiftLikeTrainer)
    custom = _with_monitor(True)
    custom["coord_soft_ce_w1"]["text_gate_weight"] = 0.0
    trainer, loss, model = run_step(custom, spec, tmp_path, base=SwiftLikeTrainer)
    assert "gradmon/grad_norm/bbox_geo" in trainer.logged("train")
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    loss.backward()
    plain_loss.backward()
    for p, ref in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=0)


def test_grad_monitor_writes_nothing_in_eval(tmp_path: Path) -> None:
    """Eval computes no gradient: the monitor's keys are train-only (check-logs expects them so)."""
    trainer, _, _ = run_step(
        _with_monitor(False),
        BatchSpec(packed=False, with_types=True),
        tmp_path,
        train=False,
        base=SwiftLikeTrainer,
    )
    assert set(trainer.logged("eval")) == ALL_49
