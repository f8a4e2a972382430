"""A new metric key, a new config field and a new token type each take one schema edit and a regen.

Each test copies the package, edits one schema file in the copy, runs the copy's ``tools/regen.py``,
and then imports the copy's package in a fresh interpreter: the new fact must be there, typed and
validated, in the generated code, the runtime guards and the docs, with no other file touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _copy_package(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("coordexp", "generated", "schemas", "tools", "docs"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    # What the installed package maps (``coordexp.generated`` -> ``generated/``), as a plain folder.
    (repo / "coordexp" / "generated").symlink_to(repo / "generated", target_is_directory=True)
    return repo


def _edit(repo: Path, schema: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = repo / "schemas" / schema
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _regen_then_run(repo: Path, code: str) -> None:
    for args in ((), ("--check",)):
        done = subprocess.run(
            [sys.executable, "tools/regen.py", *args], cwd=repo, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr + done.stdout
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _changed_files(repo: Path) -> set[str]:
    """Files of the copy that differ from the checkout (the schema edit plus what regen wrote)."""
    changed = set()
    for path in repo.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and not path.is_symlink():
            rel = path.relative_to(repo)
            original = ROOT / rel
            if not original.is_file() or original.read_bytes() != path.read_bytes():
                changed.add(str(rel))
    return changed


def test_a_new_metric_key(tmp_path: Path) -> None:
    repo = _copy_package(tmp_path)

    def add_key(schema: dict[str, Any]) -> None:
        entry = json.loads(json.dumps(schema["properties"]["coord_diag/coord_tokens"]))
        entry["description"] = "Number of GT coord positions of bins 0..99 in the batch."
        schema["properties"]["coord_diag/low_bin_tokens"] = entry

    _edit(repo, "metrics.schema.json", add_key)
    _regen_then_run(
        repo,
        """
        from coordexp.cli.check_logs import check_record
        from coordexp.run_folder.reader import LogRecord
        from coordexp.contracts import check_metric_key, keys_written_under
        from coordexp.generated import metric_keys as K
        from coordexp.generated.metric_catalog import METRIC_SPECS

        assert K.COORD_DIAG_LOW_BIN_TOKENS == "coord_diag/low_bin_tokens"
        assert METRIC_SPECS[K.COORD_DIAG_LOW_BIN_TOKENS].aggregation == "sum"
        assert K.COORD_DIAG_LOW_BIN_TOKENS in keys_written_under({"coord_diag", "coord_targets"})
        assert check_metric_key(K.COORD_DIAG_LOW_BIN_TOKENS, 3.0, mode="strict")
        record = LogRecord("logging.jsonl", 1, 1, "train", {K.COORD_DIAG_LOW_BIN_TOKENS: 3.0})
        assert check_record(record) == []
        """,
    )
    assert "coord_diag/low_bin_tokens" in (repo / "docs" / "TRAINING_METRICS_AND_LOSSES.md").read_text()
    assert {p for p in _changed_files(repo) if not p.startswith(("generated/", "docs/"))} == {
        "schemas/metrics.schema.json"
    }


def test_a_new_config_field(tmp_path: Path) -> None:
    repo = _copy_package(tmp_path)

    def add_field(schema: dict[str, Any]) -> None:
        section = schema["$defs"]["TokenTypeMetricsConfig"]["properties"]
        section["log_per_label_counts"] = {
            "type": "boolean",
            "default": False,
            "description": "Also count supervised tokens per dataset label (a new option).",
        }

    _edit(repo, "config.schema.json", add_field)
    _regen_then_run(
        repo,
        """
        from coordexp.config import ConfigError, Stage1CustomConfig

        default = Stage1CustomConfig.model_validate({"token_type_metrics": {"enabled": True}})
        assert default.token_type_metrics.log_per_label_counts is False
        on = Stage1CustomConfig.model_validate({"token_type_metrics": {"log_per_label_counts": True}})
        assert on.token_type_metrics.log_per_label_counts is True
        try:
            Stage1CustomConfig.model_validate({"token_type_metrics": {"log_per_label_counts": "maybe"}})
        except (ConfigError, ValueError) as exc:
            assert "log_per_label_counts" in str(exc), exc
        else:
            raise AssertionError("a non-boolean value was accepted")
        """,
    )
    assert "log_per_label_counts" in (repo / "docs" / "TRAINING_METRICS_AND_LOSSES.md").read_text()
    assert {p for p in _changed_files(repo) if not p.startswith(("generated/", "docs/"))} == {
        "schemas/config.schema.json"
    }


def test_a_new_token_type(tmp_path: Path) -> None:
    repo = _copy_package(tmp_path)

    def add_type(schema: dict[str, Any]) -> None:
        codes = schema["properties"]["token_types"]["x-coordexp"]["codes"]["values"]
        codes["NUMBER"] = {"value": 4, "description": "Token type of a plain number outside a geometry."}

    _edit(repo, "batch_extras.schema.json", add_type)
    _regen_then_run(
        repo,
        """
        import torch

        from coordexp.contracts import ContractViolation, check_batch_extras
        from coordexp.coord_tokens.payload import TokenType
        from coordexp.generated.batch_extras import EXTRA_SPECS, TOKEN_TYPES_KEY

        assert int(TokenType.NUMBER) == 4 and TokenType(4).name == "NUMBER"
        assert 4 in EXTRA_SPECS[TOKEN_TYPES_KEY].allowed_values
        batch = {"labels": torch.tensor([[5, 6, 7]]), TOKEN_TYPES_KEY: torch.tensor([[1, 4, 2]])}
        assert check_batch_extras(batch, mode="strict") == []
        batch[TOKEN_TYPES_KEY] = torch.tensor([[1, 5, 2]])  # 5 is still no type
        try:
            check_batch_extras(batch, mode="strict")
        except ContractViolation as exc:
            assert exc.rule == "values" and "[-1, 1, 2, 3, 4]" in str(exc), exc
        else:
            raise AssertionError("an undeclared code was accepted")
        """,
    )
    assert "NUMBER=4" in (repo / "docs" / "TRAINING_METRICS_AND_LOSSES.md").read_text()
    assert {p for p in _changed_files(repo) if not p.startswith(("generated/", "docs/"))} == {
        "schemas/batch_extras.schema.json"
    }


@pytest.fixture(autouse=True)
def _needs_symlinks(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    try:
        probe.symlink_to(tmp_path)
    except OSError:
        pytest.fail("this test needs symlinks in the temporary folder")
    probe.unlink()
