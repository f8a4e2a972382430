"""Schemas are meta-valid; regen is deterministic and its --check catches drift and breakage."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILES = sorted((ROOT / "schemas").glob("*.schema.json"))


def _load_regen():
    spec = importlib.util.spec_from_file_location("regen_under_test", ROOT / "tools" / "regen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


regen = _load_regen()


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_schema_is_meta_valid(path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(data)


def test_four_schemas_exist() -> None:
    assert {p.name for p in SCHEMA_FILES} == set(regen.SCHEMA_FILES)


def _copy_repo(tmp_path: Path) -> Path:
    """A scratch copy of what regen reads and writes, so tests can break it freely."""
    dst = tmp_path / "repo"
    for name in ("schemas", "generated", "tools", "docs"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def _regen(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "tools" / "regen.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=repo,
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_repo(tmp_path_factory.mktemp("regen"))


def test_check_is_green_on_main() -> None:
    proc = _regen(ROOT, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_regen_is_idempotent(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    before = {p: p.read_bytes() for p in (repo / "generated").rglob("*.py")}
    proc = _regen(repo)
    assert proc.returncode == 0, proc.stderr
    after = {p: p.read_bytes() for p in (repo / "generated").rglob("*.py")}
    assert before == after
    proc = _regen(repo)
    assert "wrote" not in proc.stdout


def test_check_fails_after_hand_edit_of_generated_file(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    target = repo / "generated" / "metric_keys.py"
    target.write_text(target.read_text().replace('"coord_diag/loss"', '"coord_diag/loss2"'))
    proc = _regen(repo, "--check")
    assert proc.returncode == 1
    assert "generated/metric_keys.py" in proc.stdout
    assert '-COORD_DIAG_LOSS: Final = "coord_diag/loss2"' in proc.stdout


def test_check_fails_on_stray_file_in_generated(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    (repo / "generated" / "handmade.py").write_text("X = 1\n")
    proc = _regen(repo, "--check")
    assert proc.returncode == 1
    assert "handmade.py" in proc.stdout


def test_check_fails_after_unregenerated_schema_edit(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    path = repo / "schemas" / "metrics.schema.json"
    data = json.loads(path.read_text())
    data["properties"]["coord_diag/new_thing"] = {
        **data["properties"]["coord_diag/p_gt_mean"],
        "description": "A new diagnostic.",
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    proc = _regen(repo, "--check")
    assert proc.returncode == 1
    assert "COORD_DIAG_NEW_THING" in proc.stdout
    assert "coord_diag/new_thing" in proc.stdout  # the doc table is stale too
    # One schema edit and a regen make it available as a constant and a doc row.
    assert _regen(repo).returncode == 0
    assert _regen(repo, "--check").returncode == 0
    assert (
        'COORD_DIAG_NEW_THING: Final = "coord_diag/new_thing"'
        in (repo / "generated/metric_keys.py").read_text()
    )
    assert "`coord_diag/new_thing`" in (repo / "docs/TRAINING_METRICS_AND_LOSSES.md").read_text()


def test_doc_prose_edit_is_not_drift_but_table_edit_is(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    doc = repo / "docs" / "TRAINING_METRICS_AND_LOSSES.md"
    doc.write_text(doc.read_text().replace("## The objective", "## The objective (edited prose)"))
    assert _regen(repo, "--check").returncode == 0
    doc.write_text(doc.read_text().replace("| `coord_diag/loss` |", "| `coord_diag/LOSS` |"))
    assert _regen(repo, "--check").returncode == 1


def test_meta_invalid_schema_fails_with_clear_message(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    path = repo / "schemas" / "batch_extras.schema.json"
    data = json.loads(path.read_text())
    data["properties"]["token_types"]["type"] = "tensor"  # not a JSON Schema type
    path.write_text(json.dumps(data))
    proc = _regen(repo, "--check")
    assert proc.returncode == 2
    assert "batch_extras.schema.json" in proc.stderr
    assert "not a valid draft 2020-12 schema" in proc.stderr


def test_catalog_rule_violation_names_the_key(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    path = repo / "schemas" / "metrics.schema.json"
    data = json.loads(path.read_text())
    data["properties"]["coord_diag/w1"]["x-coordexp"]["requires"].append("no_such_condition")
    path.write_text(json.dumps(data))
    proc = _regen(repo, "--check")
    assert proc.returncode == 2
    assert "'coord_diag/w1'" in proc.stderr and "no_such_condition" in proc.stderr


def test_compatibility_refuses_silent_removal(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    path = repo / "schemas" / "metrics.schema.json"
    data = json.loads(path.read_text())
    del data["properties"]["coord_monitor/flip_text_to_coord"]
    path.write_text(json.dumps(data, indent=2) + "\n")
    assert _regen(repo).returncode == 1  # regenerates but reports the break
    proc = _regen(repo, "--check")
    assert proc.returncode == 1
    assert "coord_monitor/flip_text_to_coord" in proc.stderr
    assert "without a deprecation entry" in proc.stderr


def test_compatibility_refuses_silent_rename(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    path = repo / "schemas" / "metrics.schema.json"
    data = json.loads(path.read_text())
    props = data["properties"]
    data["properties"] = {("text_acc" if k == "text_token_acc" else k): v for k, v in props.items()}
    path.write_text(json.dumps(data, indent=2) + "\n")
    _regen(repo)
    proc = _regen(repo, "--check")
    assert proc.returncode == 1 and "'text_token_acc' was removed or renamed" in proc.stderr


def test_compatibility_accepts_deprecated_then_removed(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    path = repo / "schemas" / "metrics.schema.json"
    data = json.loads(path.read_text())
    # coord_softce_w1/ce is deprecated in the baseline: it may leave with a removal note.
    del data["properties"]["coord_softce_w1/ce"]
    data["x-coordexp-removed"] = {
        "coord_softce_w1/ce": {"renamed_to": "coord_diag/ce", "note": "alias dropped"}
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    _regen(repo)
    proc = _regen(repo, "--check")
    assert proc.returncode == 0, proc.stderr


def test_generated_package_is_importable_only_as_coordexp_generated() -> None:
    import coordexp.generated.metric_keys as keys

    assert keys.COORD_DIAG_LOSS == "coord_diag/loss"
    assert Path(keys.__file__).resolve().parent == (ROOT / "generated").resolve()
    src = [*(ROOT / "coordexp").rglob("*.py"), *(ROOT / "tools").rglob("*.py")]  # regen.py, codegen/
    for path in src:
        text = path.read_text()
        assert "from generated" not in text and "import generated" not in text, path


def _extras() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "schemas" / "batch_extras.schema.json").read_text())
    return data


def _tt(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``x-coordexp`` annotation of the ``token_types`` extra."""
    ext: dict[str, Any] = schema["properties"]["token_types"]["x-coordexp"]
    return ext


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: _tt(s).pop("producer"), "x-coordexp.producer is required"),
        (lambda s: _tt(s)["value"].update(kind="blob"), "x-coordexp.value.kind must be one of"),
        (lambda s: _tt(s)["value"].pop("dtype"), "a tensor extra needs its dtype"),
        (lambda s: _tt(s).pop("feature"), "a feature-conditional extra must name its feature"),
        (lambda s: _tt(s).update(producr="X"), "'producr' was unexpected"),
        (lambda s: _tt(s).update(shape_like="nope"), "x-coordexp.shape_like 'nope'"),
        (lambda s: _tt(s)["codes"]["values"]["DESC"].update(value=-1), "codes.values repeat a value"),
        (lambda s: s["properties"]["token_types"].pop("x-coordexp"), "needs an x-coordexp annotation object"),
        (lambda s: s.pop("x-coordexp-labels"), "x-coordexp-labels is required"),
        (lambda s: s.update(additionalProperties=True), "additionalProperties must be false"),
    ],
)
def test_bad_extra_annotations_are_refused(mutate: Callable[[dict[str, Any]], Any], message: str) -> None:
    schema = _extras()
    mutate(schema)
    path = ROOT / "schemas" / "batch_extras.schema.json"
    with pytest.raises(regen.SchemaError, match=re.escape(message)) as info:
        regen.check_extras(schema, path)
    assert str(info.value).startswith(f"{path}: ")


def test_deprecation_is_stated_consistently() -> None:
    schema = json.loads((ROOT / "schemas" / "metrics.schema.json").read_text())
    schema["properties"]["token_acc_top5"]["deprecated"] = True
    with pytest.raises(regen.SchemaError, match=r"property 'token_acc_top5': .*needs x-coordexp\.stability"):
        regen.check_catalog(schema, ROOT / "schemas" / "metrics.schema.json")


@pytest.mark.parametrize(
    ("owner_when", "message"),
    [
        (
            {"no_such_condition": "coordexp"},
            "x-coordexp.owner_when names unknown condition 'no_such_condition'",
        ),
        ({"logits_unmaterialised": "framework"}, "owner_when['logits_unmaterialised'] repeats the owner"),
        (
            {"logits_unmaterialised": "nobody"},
            "owner_when.logits_unmaterialised must be one of ('coordexp', 'framework')",
        ),
    ],
)
def test_bad_owner_when_is_refused(owner_when: dict[str, str], message: str) -> None:
    schema = json.loads((ROOT / "schemas" / "metrics.schema.json").read_text())
    schema["properties"]["token_acc"]["x-coordexp"]["owner_when"] = owner_when
    with pytest.raises(regen.SchemaError, match=re.escape(message)):
        regen.check_catalog(schema, ROOT / "schemas" / "metrics.schema.json")
