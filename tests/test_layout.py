"""Folder names say what they hold: no two folders share a stem, no module outside ``generated/``
passes 400 lines, and old import paths are thin facades that neither the package nor the tests and
benchmarks import, except the tests that pin them (so a facade can be deleted one day without
touching anything else)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "coordexp"
MAX_MODULE_LINES = 400
# The only files that may import a facade: the tests that pin the old paths.
PINNING_TESTS = frozenset({"tests/test_layout.py", "tests/test_public_api.py"})

# old path -> the module that now holds its names
FACADES = {
    "coordexp.metrics.dataset_metrics": "coordexp.swift_seam",
    "coordexp.data_collators.dataset_metrics": "coordexp.rows.collator",
    "coordexp.trainers.batch_extras": "coordexp.contracts.stash",
    "coordexp.data_collators.token_types": "coordexp.rows.token_types",
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


def test_nothing_outside_the_pinning_tests_imports_a_facade() -> None:
    offenders = []
    for folder in ("tests", "benchmarks", "examples", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in PINNING_TESTS:
                continue
            hits = _imported_modules(ast.parse(path.read_text(encoding="utf-8"))) & FACADES.keys()
            offenders += [f"{rel} imports {name} (import its home, {FACADES[name]})" for name in sorted(hits)]
    assert not offenders, offenders


def _word_stem(word: str) -> str:
    for suffix in ("ing", "ers", "er", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _stems(folder: str) -> set[str]:
    return {_word_stem(word) for word in folder.lower().split("_")}


def _folders() -> list[str]:
    own = [p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("__init__.py")]
    return sorted({name for name in own if name != "."} | {"generated"})  # generated/: coordexp.generated


def test_no_two_folders_share_a_stem() -> None:
    folders = _folders()
    clashes = [
        (a, b, sorted(_stems(a.rsplit("/", 1)[-1]) & _stems(b.rsplit("/", 1)[-1])))
        for i, a in enumerate(folders)
        for b in folders[i + 1 :]
        if _stems(a.rsplit("/", 1)[-1]) & _stems(b.rsplit("/", 1)[-1])
    ]
    assert not clashes, clashes


def test_the_stem_rule_finds_the_old_collisions() -> None:
    assert _stems("trainer") & _stems("trainers") & _stems("training")
    assert _stems("metrics") & _stems("metric_keys")
    assert not _stems("run_folder") & _stems("swift_seam")


def test_no_module_outside_generated_is_above_the_limit() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, long


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
    from coordexp.data_collators import dataset_metrics as old_collator
    from coordexp.data_collators import token_types as old_token_types
    from coordexp.metrics import dataset_metrics as old_trainer
    from coordexp.rows import collator, token_types
    from coordexp.swift_seam import assembly, mixins

    assert old_trainer.build_trainer_cls is assembly.build_trainer_cls
    assert old_trainer.DatasetMetricsCollatorMixin is mixins.DatasetMetricsCollatorMixin
    assert old_collator.build_dataset_metrics_collator is collator.build_dataset_metrics_collator
    assert old_collator.DatasetMetricsCollator is collator.DatasetMetricsCollator
    assert old_token_types.compute_token_types is token_types.compute_token_types
