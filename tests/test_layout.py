"""Folder names say what they hold: old import paths are thin facades, and the package itself never
imports from them (so a facade can be deleted one day without touching ``coordexp/``)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "coordexp"

# old path -> the module that now holds its names
FACADES = {
    "coordexp.metrics.dataset_metrics": "coordexp.swift_seam",
    "coordexp.data_collators.dataset_metrics": "coordexp.data_collators.collator",
    "coordexp.trainers.batch_extras": "coordexp.contracts.stash",
    "coordexp.config.schema": "coordexp.config.loading",
}


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _is_facade(path: Path) -> bool:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts) in FACADES


def test_nothing_in_the_package_imports_a_facade() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _is_facade(path):
            continue
        hits = _imported_modules(ast.parse(path.read_text(encoding="utf-8"))) & FACADES.keys()
        offenders += [f"{path.relative_to(PACKAGE.parent)} imports {name}" for name in sorted(hits)]
    assert not offenders, offenders


@pytest.mark.parametrize("facade", sorted(FACADES))
def test_facade_only_re_exports(facade: str) -> None:
    module = importlib.import_module(facade)
    tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        targets = [getattr(t, "id", None) for t in node.targets] if isinstance(node, ast.Assign) else []
        is_all = targets == ["__all__"]
        assert is_docstring or is_all or isinstance(node, ast.Import | ast.ImportFrom), ast.dump(node)[:80]
    for name in module.__all__:
        value = getattr(module, name)
        home = getattr(value, "__module__", None)
        # each re-exported class/function lives outside the facade (constants carry no __module__)
        assert home != facade, name


def test_facades_name_the_same_objects_as_the_new_homes() -> None:
    from coordexp.data_collators import collator
    from coordexp.data_collators import dataset_metrics as old_collator
    from coordexp.metrics import dataset_metrics as old_trainer
    from coordexp.swift_seam import assembly, mixins

    assert old_trainer.build_trainer_cls is assembly.build_trainer_cls
    assert old_trainer.DatasetMetricsCollatorMixin is mixins.DatasetMetricsCollatorMixin
    assert old_collator.build_dataset_metrics_collator is collator.build_dataset_metrics_collator
    assert old_collator.DatasetMetricsCollator is collator.DatasetMetricsCollator
