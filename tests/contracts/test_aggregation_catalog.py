"""The catalog's ``aggregation`` annotations: complete, naming real statistics, and guarded by the
compatibility check (a changed aggregation is breaking unless declared)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from coordexp.functional import STAT_KEYS, CoordLossConfig
from coordexp.functional.bbox_geo import BBoxGeoWeights
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights
from coordexp.generated.metric_catalog import METRIC_SPECS
from tests.contracts.test_schemas_and_regen import ROOT, regen

CATALOG = ROOT / "schemas" / "metrics.schema.json"
WEIGHTS = {name for name in CoordLossConfig.model_fields if name.endswith("_weight")} | {
    f.name
    for cls in (BBoxGeoWeights, BBoxSizeAuxWeights)
    for f in dataclasses.fields(cls)
    if f.name.endswith("_weight")
}
# statistics the pipeline adds to the functional layer's (the batch's original sample count)
PIPELINE_STATS = {"pack_samples"}


def _catalog() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CATALOG.read_text(encoding="utf-8"))
    return data


def test_every_ratio_names_statistics_of_the_pass() -> None:
    for key, spec in METRIC_SPECS.items():
        if spec.aggregation != "ratio":
            continue
        assert spec.numerator and spec.denominator, key
        for expression in (spec.numerator, spec.denominator):
            for term in expression.split(" + "):
                weight, _, stat = term.rpartition("·")
                assert stat in set(STAT_KEYS) | PIPELINE_STATS, (key, stat)
                assert not weight or weight in WEIGHTS, (key, weight)


def test_deprecated_aliases_aggregate_like_their_targets() -> None:
    for key, spec in METRIC_SPECS.items():
        if spec.renamed_to is not None:
            target = METRIC_SPECS[spec.renamed_to]
            assert (spec.aggregation, spec.numerator, spec.denominator) == (
                target.aggregation,
                target.numerator,
                target.denominator,
            ), key


def test_a_changed_aggregation_is_breaking_unless_declared() -> None:
    schema = _catalog()
    baseline = regen.catalog_snapshot(schema)
    assert regen.check_compatibility(schema, baseline) == []
    changed = copy.deepcopy(schema)
    ext = changed["properties"]["text_token_acc"]["x-coordexp"]
    ext["aggregation"] = {"kind": "mean"}
    errors = regen.check_compatibility(changed, baseline)
    assert len(errors) == 1 and "'text_token_acc': aggregation changed from 'ratio' to 'mean'" in errors[0]
    ext["aggregation"] = {"kind": "mean", "changed_from": "ratio", "note": "a gauge now"}
    regen.check_catalog(changed, CATALOG)
    assert regen.check_compatibility(changed, baseline) == []
    # a baseline from before the annotation has nothing to compare with
    old = {
        "keys": {k: {f: v for f, v in e.items() if f != "aggregation"} for k, e in baseline["keys"].items()}
    }
    assert regen.check_compatibility(_catalog(), old) == []


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        (None, "aggregation is required"),
        ({"kind": "median"}, "aggregation.kind must be one of"),
        ({"kind": "ratio", "numerator": "n_top1"}, "needs its denominator"),
        ({"kind": "sum", "numerator": "n_top1"}, "only a ratio aggregation has a numerator"),
        ({"kind": "sum", "changed_from": "mean"}, "with a note"),
    ],
)
def test_bad_aggregation_annotations_are_refused(aggregation: Any, message: str, tmp_path: Path) -> None:
    schema = _catalog()
    ext = schema["properties"]["token_acc_top5"]["x-coordexp"]
    if aggregation is None:
        del ext["aggregation"]
    else:
        ext["aggregation"] = aggregation
    with pytest.raises(regen.SchemaError, match=message):
        regen.check_catalog(schema, CATALOG)
