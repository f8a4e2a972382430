"""What a wheel ships: every package folder, and a declared requirement for every import.

A hand-kept package list once left ``coordexp.launch`` out of the wheel, and the log commands
imported packages that only the ``dev`` extra installed; an editable install hides both. These
checks read the source tree and the installed metadata (no build); ``.ci/run`` also builds the
wheel and runs the main job from a clean environment outside the checkout.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("coordexp_setup", ROOT / "setup.py")
assert _spec is not None and _spec.loader is not None
setup_py = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(setup_py)
GENERATED_DIR, GENERATED_PACKAGE = setup_py.GENERATED_DIR, setup_py.GENERATED_PACKAGE
discover_packages = setup_py.discover_packages


def _package_folders() -> set[str]:
    """Every folder holding an ``__init__.py``, named as it is imported once installed."""
    found: set[str] = set()
    for init in ROOT.glob("coordexp/**/__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in ROOT.glob(f"{GENERATED_DIR}/**/__init__.py"):
        found.add(".".join((GENERATED_PACKAGE, *init.parent.relative_to(ROOT / GENERATED_DIR).parts)))
    return found


def test_every_package_folder_is_shipped() -> None:
    assert set(discover_packages()) == _package_folders()
    assert "coordexp.launch" in discover_packages()


def _top_level_imports() -> set[str]:
    names: set[str] = set()
    for path in ROOT.glob("coordexp/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("coordexp", "__future__")}


def _declared_runtime_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in project["dependencies"]}


def test_every_imported_package_is_a_declared_runtime_requirement() -> None:
    """Each third-party module the package imports belongs to a distribution listed in
    ``[project] dependencies`` (not only in an extra, not only pulled in by another package)."""
    providers = md.packages_distributions()
    declared = {name.replace("_", "-") for name in _declared_runtime_requirements()}
    missing = {}
    for module in sorted(_top_level_imports()):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in [project] dependencies: {missing}"
