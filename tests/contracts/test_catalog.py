"""The catalog holds exactly the reference keys, and the doc tables equal the catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path

from coordexp.contracts import keys_written_under
from coordexp.generated import metric_catalog as cat
from coordexp.generated import metric_keys

ROOT = Path(__file__).resolve().parents[2]

# The 49 keys of shared/reference/stage1-metric-keys.md, typed out independently of the schema.
REFERENCE_PACKAGE_KEYS = {
    "learning_rate",
    "accum/grad_steps",
    "accum/current_grad_steps",
    "pack/num_samples",
    "base_ce/loss",
    "base_ce/noncoord_tokens",
    "base_ce/noncoord_tokens_per_sample",
    "base_ce/loss_per_sample",
    "coord_diag/enabled",
    "coord_diag/loss",
    "coord_diag/soft_ce",
    "coord_diag/w1",
    "coord_diag/ce",
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
    "stage1/total_loss_per_sample_est",
    "coord_softce_w1/loss",
    "coord_softce_w1/soft_ce",
    "coord_softce_w1/w1",
    "coord_softce_w1/ce",
    "coord_softce_w1/gate",
    "token_acc_top5",
    "text_token_acc",
    "desc_token_frac",
    "format_token_frac",
    "coord_token_frac",
    "desc_token_acc",
    "format_token_acc",
    "coord_token_acc",
    "desc_token_acc_top5",
    "format_token_acc_top5",
    "coord_token_acc_top5",
    "coord_monitor/flip_coord_to_noncoord",
    "coord_monitor/flip_text_to_coord",
    "coord_monitor/flip_format_to_coord",
    "coord_monitor/flip_desc_to_coord",
    "coord_monitor/coord_vocab_mass_at_gt_coord",
    "coord_monitor/coord_vocab_mass_at_gt_text",
    "coord_monitor/coord_vocab_mass_at_gt_format",
    "coord_monitor/coord_vocab_mass_at_gt_desc",
}
# The Stage-1 objective keys of shared/reference/upstream-stage1-additions.md §7 (issue 21), typed out.
REFERENCE_ADDITION_KEYS = {
    "coord_softce_w1/text_gate",
    "coord_diag/text_gate",
    "coord_diag/text_coord_vocab_mass",
    "loss/geo/bbox_geo",
    "loss/geo/bbox_smoothl1",
    "loss/geo/bbox_ciou",
    "bbox_geo/groups_total",
    "bbox_geo/coord_slots_total",
    "bbox_geo/skipped_incomplete_rows",
    "bbox_geo/skipped_incomplete_coord_slots",
    "bbox_geo/groups_per_sample",
    "bbox_geo/loss_per_sample",
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
    "coord_softce_w1/adjacent_repulsion",
    "coord_diag/adjacent_repulsion",
    "coord_diag/adjacent_repulsion_pair_count",
    "coord_diag/adjacent_repulsion_applied_count",
    "coord_diag/adjacent_repulsion_copy_score_mean",
}
GRADMON_TERMS = (
    "base_ce",
    "soft_ce",
    "w1",
    "ce",
    "gate",
    "text_gate",
    "bbox_geo",
    "bbox_size_aux",
    "adjacent_repulsion",
)
# The gradient monitor (custom.grad_monitor): the reference's gradmon/* family, one norm and one cosine
# per term, the total norm and the conflicting-pair share.
REFERENCE_GRADMON_KEYS = {
    f"gradmon/{kind}/{term}" for kind in ("grad_norm", "cos_to_total") for term in GRADMON_TERMS
} | {"gradmon/total_grad_norm", "gradmon/neg_cosine_pair_frac"}
REFERENCE_FRAMEWORK_KEYS = {
    "loss",
    "grad_norm",
    "learning_rate",
    "epoch",
    "token_acc",
    "aux_loss",
    "global_step/max_steps",
    "percentage",
    "elapsed_time",
    "remaining_time",
    "memory(GiB)",
    "train_speed(iter/s)",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "total_flos",
    "train_loss",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
    "eval_loss",
    # seen in real ms-swift 4.6 logs (docs/ms-swift-probe.md)
    "train_speed(s/it)",
    "step",
}


def test_catalog_holds_exactly_the_49_package_keys_the_29_objective_keys_and_the_detection_keys() -> None:
    from coordexp.detection import detection_keys

    assert len(REFERENCE_PACKAGE_KEYS) == 49
    assert len(REFERENCE_ADDITION_KEYS) == 29
    detection = set(detection_keys("both", (0.3, 0.5, 0.75)))  # every threshold the config allows
    assert set(cat.EVAL_ONLY_KEYS) == detection
    assert len(REFERENCE_GRADMON_KEYS) == 20
    expected = REFERENCE_PACKAGE_KEYS | REFERENCE_ADDITION_KEYS | REFERENCE_GRADMON_KEYS | detection
    assert set(cat.COORDEXP_KEYS) == expected


def test_framework_keys_are_listed_and_owned_by_the_framework() -> None:
    # learning_rate is written by both; the catalog records it once, as ours.
    assert set(cat.FRAMEWORK_KEYS) == REFERENCE_FRAMEWORK_KEYS - {"learning_rate"}


def test_one_constant_per_key() -> None:
    values = {getattr(metric_keys, name) for name in metric_keys.__all__}
    assert values == set(cat.ALL_KEYS)
    assert len(metric_keys.__all__) == len(cat.ALL_KEYS)


def test_aliases_are_deprecated_and_point_at_coord_diag() -> None:
    assert dict(cat.DEPRECATED_ALIASES) == {
        f"coord_softce_w1/{t}": f"coord_diag/{t}"
        for t in ("loss", "soft_ce", "w1", "ce", "gate", "text_gate", "adjacent_repulsion")
    }
    for alias in cat.DEPRECATED_ALIASES:
        assert cat.METRIC_SPECS[alias].stability == "deprecated"


def test_fractions_are_bounded() -> None:
    for key in (
        "text_token_acc",
        "coord_diag/acc_top5",
        "desc_token_frac",
        "coord_monitor/flip_text_to_coord",
    ):
        spec = cat.METRIC_SPECS[key]
        assert (spec.minimum, spec.maximum) == (0, 1)
    assert cat.METRIC_SPECS["coord_diag/coord_tokens"].minimum == 0


BATCH = {"runtime", "coord_vocab", "supervised", "coord_targets", "noncoord_targets", "repulsion_applied"}
TYPES = {"token_types", "desc_targets", "format_targets"}
TOKEN = {"token_metrics", "token_top5", "coord_monitor_mass"}
COORD_ON = {"coord_diag", "coord_loss", "coord_gate"}
COORD_OFF = {"coord_diag", "coord_gate"}


def test_feature_matrix_sizes_follow_from_the_catalog() -> None:
    assert len(keys_written_under(BATCH | TYPES | TOKEN | COORD_ON)) == 49
    assert len(keys_written_under(BATCH | TYPES | TOKEN | COORD_OFF)) == 37
    assert len(keys_written_under(BATCH | TOKEN | COORD_ON)) == 36
    assert len(keys_written_under(BATCH | TOKEN | COORD_OFF)) == 24
    # issue 21's terms: 3 text-gate keys, 5 repulsion keys, 9 bbox_geo keys, 12 bbox_size_aux keys
    terms = {"text_gate", "adjacent_repulsion", "bbox_geo", "bbox_size_aux"}
    assert len(keys_written_under(BATCH | TYPES | TOKEN | COORD_ON | terms)) == 49 + 29
    assert len(keys_written_under(BATCH | TOKEN | COORD_OFF | {"bbox_geo", "bbox_size_aux"})) == 24 + 21


def _doc_table_keys(name: str) -> list[str]:
    text = (ROOT / "docs" / "TRAINING_METRICS_AND_LOSSES.md").read_text()
    block = re.search(rf"<!-- BEGIN GENERATED: {name} .*?-->(.*?)<!-- END GENERATED: {name} -->", text, re.S)
    assert block, name
    return re.findall(r"^\| `([^`]+)` \|", block.group(1), re.M)


def test_doc_tables_equal_the_catalog() -> None:
    assert sorted(_doc_table_keys("metric-keys")) == sorted(cat.COORDEXP_KEYS)
    assert sorted(_doc_table_keys("framework-keys")) == sorted(cat.FRAMEWORK_KEYS)
    from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS

    assert _doc_table_keys("batch-extras") == list(BATCH_EXTRAS_KEYS)


def test_no_metric_key_spelled_by_hand_outside_generated() -> None:
    pattern = re.compile(
        r"[\"'](coord_diag|base_ce|coord_monitor|coord_softce_w1|accum|pack|stage1)/[a-z0-9_]+[\"']"
    )
    offenders = []
    for folder in ("coordexp", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            if "generated" in path.parts:
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_logged_record_validates_against_the_metrics_schema() -> None:
    from jsonschema import Draft202012Validator

    metrics_schema = json.loads((ROOT / "schemas" / "metrics.schema.json").read_text(encoding="utf-8"))
    record = {"loss": 1.2, "coord_diag/loss": 0.3, "text_token_acc": 0.5, "global_step/max_steps": "1/10"}
    Draft202012Validator(metrics_schema).validate(record)
    errors = list(Draft202012Validator(metrics_schema).iter_errors({"lvis/token_acc": 0.5}))
    assert errors


def test_token_acc_owner_depends_on_materialised_logits() -> None:
    """ms-swift writes ``token_acc`` from the logits; without them coordexp's pass writes it. The
    catalog says so (``owner_when``) and a config's conditions decide which applies."""
    from coordexp.config import Stage1CustomConfig
    from coordexp.contracts.catalog import conditions_from_config, owner_under

    assert cat.METRIC_SPECS["token_acc"].owner == "framework"
    assert cat.METRIC_SPECS["token_acc"].owner_when == (("logits_unmaterialised", "coordexp"),)
    on = Stage1CustomConfig.model_validate({"stage1_pass": {"materialize_logits": True}})
    off = Stage1CustomConfig.model_validate({"stage1_pass": {"materialize_logits": False}})
    assert "logits_unmaterialised" not in conditions_from_config(on)
    assert "logits_unmaterialised" in conditions_from_config(off)
    assert owner_under("token_acc", conditions_from_config(on)) == "framework"
    assert owner_under("token_acc", conditions_from_config(off)) == "coordexp"
    assert owner_under("loss", conditions_from_config(off)) == "framework"
    assert owner_under("not/a_key", ()) is None
    # Only token_acc changes owner with the mode.
    assert [k for k, s in cat.METRIC_SPECS.items() if s.owner_when] == ["token_acc"]
